"""The package layout is the data flow: a stage imports only itself and the stages below it, and no cycles.

    core < data < models < training < metrics, planning, offline_rl < experiments

``metrics``, ``planning`` and ``offline_rl`` all sit on ``training`` and are siblings: none imports another
(a planner must run without the analysis code; the analyses of a world model need no planner; offline RL
shares no code with planning). ``experiments`` (the resumable job runner, the results writer and the
sweeps that drive the others) sits above all three. ``lavid/train.py`` is the entry point above every stage and may import any of them. Every import counts,
also one inside a function or under ``TYPE_CHECKING``: a lazy import breaks the layering just the same,
only later.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lavid"

RANK = {"core": 0, "data": 1, "models": 2, "training": 3, "metrics": 4, "planning": 4, "offline_rl": 4,
        "experiments": 5}
"""Stage -> height in the data flow; a module may import its own stage or a lower one."""

ENTRY_POINTS = {"lavid", "lavid.train", "lavid.train_controller"}
"""Above the stages: the package root (version only) and the two training drivers (world model, controller)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lavid modules ``name`` imports anywhere in its file (``from pkg import submodule`` names the submodule,
    and a package's lazy ``_EXPORTS`` count as imports of their modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "lavid")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lavid":
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            # a stage package's lazy exports: {module: names} imported on first use
            found.update(k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
    return found - {name}


def stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def test_every_module_belongs_to_a_stage():
    loose = [name for name in modules() if name not in ENTRY_POINTS and stage(name) is None]
    assert not loose, f"modules outside the stage folders {sorted(RANK)}: {loose}"


def test_imports_flow_down_the_data_flow():
    upward = []
    for name, targets in graph().items():
        if name in ENTRY_POINTS:
            continue
        own = stage(name)
        for target in sorted(targets):
            other = stage(target)
            if target == "lavid" or other == own:
                continue
            if other is None or RANK[other] >= RANK[own]:
                upward.append(f"{name} ({own}) imports {target} ({other or 'an entry point'})")
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target in edges and target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "lavid" / "data" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from lavid.training.trainer import train\n    from ..models import encoder\n"
                      "_EXPORTS = {'lavid.metrics.probe': ('x',)}\n")
    known = {"lavid.training.trainer", "lavid.models.encoder", "lavid.metrics.probe"}
    assert imports("lavid.data.x", source, known) == known


def test_stage_packages_are_documented_and_light():
    for name in RANK:
        init = PACKAGE / name / "__init__.py"
        assert init.exists(), f"lavid/{name}/ is not a package"
        assert ast.get_docstring(ast.parse(init.read_text())), f"lavid/{name}/__init__.py has no docstring"
    # importing the stage packages alone must not pull in torch or dm_control (their exports are lazy)
    code = ("import sys, lavid.core, lavid.data, lavid.models, lavid.training, lavid.metrics, lavid.planning, lavid.offline_rl, "
            "lavid.experiments; "
            "print(sorted(m for m in ('torch', 'dm_control', 'datasets') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_stage_exports_resolve():
    import importlib

    for name in RANK:
        package = importlib.import_module(f"lavid.{name}")
        for export in getattr(package, "__all__", ()):
            assert getattr(package, export) is not None, f"lavid.{name}.{export}"
