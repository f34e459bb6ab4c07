"""The console entry points (``lavid-train``, ``lavid-plan``, ...) and the scripts behind them.

Every ``[project.scripts]`` target in pyproject.toml imports and is a ``main`` that parses ``sys.argv`` when
called with no arguments; every command-line script of evals/ and data_prep/ (and the two training drivers)
has one; no Python file of the repository touches ``sys.path`` (the package is installed, editable, by
setup.sh); and an installed entry point runs from outside the checkout.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_DIRS = ("lavid", "evals", "data_prep", "benchmarks", "tests")
"""The repository's Python: the package, its command-line scripts, the benchmarks and the tests."""
SCRIPT_DIRS = ("evals", "data_prep")
"""Folders whose every command-line script gets an entry point (the benchmarks are run by path)."""


def scripts() -> dict[str, str]:
    """Entry-point name -> ``module:function``, from pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as file:
        project = tomllib.load(file)
    return project["project"]["scripts"]


def python_files() -> list[Path]:
    files = sorted(ROOT.glob("*.py"))
    for folder in PYTHON_DIRS:
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if not any(part.startswith(".") for part in p.parts))
    return files


def path_manipulations(source: str, filename: str = "<source>") -> list[int]:
    """Lines of ``source`` that reach for ``sys.path`` (``sys.path.insert``, ``sys.path[0] = ...``, ``from sys
    import path``) or add a site directory."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in {("sys", "path"), ("site", "addsitedir")}:
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module in {"sys", "site"}:
            if any(alias.name in {"path", "addsitedir"} for alias in node.names):
                lines.append(node.lineno)
    return sorted(lines)


def is_script(path: Path) -> bool:
    """Has an ``if __name__ == "__main__":`` block."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [getattr(n, "id", None) for n in (node.test.left, *node.test.comparators)]
            values = [getattr(n, "value", None) for n in (node.test.left, *node.test.comparators)]
            if "__name__" in names and "__main__" in values:
                return True
    return False


def test_every_entry_point_target_imports_and_takes_no_arguments():
    entries = scripts()
    assert entries, "pyproject.toml has no [project.scripts]"
    for name, target in entries.items():
        assert name.startswith("lavid-"), f"entry point {name} is not named lavid-*"
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        function = getattr(module, attribute, None)
        assert callable(function), f"{name} = {target}: no callable {attribute} in {module_name}"
        inspect.signature(function).bind()  # the console wrapper calls it with no arguments: it parses sys.argv


def test_every_command_line_script_has_an_entry_point():
    targets = {target.partition(":")[0] for target in scripts().values()}
    found = {"lavid.train", "lavid.train_controller"}
    for folder in SCRIPT_DIRS:
        assert (ROOT / folder / "__init__.py").exists(), f"{folder}/ is not a package: its mains cannot be entry points"
        found |= {f"{folder}.{p.stem}" for p in sorted((ROOT / folder).glob("*.py")) if is_script(p)}
    missing = sorted(found - targets)
    assert not missing, f"scripts without a [project.scripts] entry point: {missing}"


def test_the_script_packages_are_installed_with_lavid():
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as file:
        include = tomllib.load(file)["tool"]["setuptools"]["packages"]["find"]["include"]
    for folder in ("evals", "data_prep", "benchmarks"):
        assert folder in include, f"{folder} is not in [tool.setuptools.packages.find] include"
        init = ROOT / folder / "__init__.py"
        assert init.exists() and ast.get_docstring(ast.parse(init.read_text())), f"{folder}/__init__.py has no docstring"


def test_the_path_check_sees_every_form():
    source = ("import sys, site\nfrom sys import path\nsys.path.insert(0, 'x')\nsys.path[0] = 'x'\n"
              "site.addsitedir('x')\nprint(sys.argv, sys.modules)\n")
    assert path_manipulations(source) == [2, 3, 4, 5]


def test_no_file_touches_sys_path():
    files = python_files()
    assert any(p.name == "train.py" and p.parent.name == "lavid" for p in files)
    found = []
    for path in files:
        for line in path_manipulations(path.read_text(), str(path)):
            found.append(f"{path.relative_to(ROOT)}:{line}")
    assert not found, "sys.path manipulation (the package is installed: pip install -e .):\n" + "\n".join(found)


def test_an_installed_entry_point_runs_outside_the_checkout(tmp_path):
    command = shutil.which("lavid-plan", path=str(Path(sys.executable).parent))
    assert command, (f"no lavid-plan next to {sys.executable}: reinstall the package "
                     "(pip install --no-deps --no-build-isolation -e .)")
    result = subprocess.run([command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lavid-plan"), result.stdout


def test_the_scripts_still_run_by_path(tmp_path):
    """``python lavid/train.py`` (what ``accelerate launch lavid/train.py`` runs) and ``python evals/NAME.py`` work
    without any path set-up of their own."""
    for script in ("lavid/train.py", "evals/leakage.py"):
        result = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert result.stdout.startswith(f"usage: {Path(script).name}"), result.stdout
