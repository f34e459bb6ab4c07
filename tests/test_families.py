"""The latent-family registry: every family builds from its YAML, the sweep reads names, coefficients, run
names and values from the registry, an unknown family stops naming the key, and a family added as one new
module reaches the config, the model and the sweep planner with no other edit."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lavid.core.config import ConfigError, from_dict, load_config
from lavid.experiments.ablation import (
    COEFFICIENT,
    FAMILIES,
    PAPER_VALUES,
    Budget,
    RunSpec,
    format_value,
    parse_values,
    load_budget,
    plan_runs,
)
from lavid.models import latents
from lavid.models.latents import FamilyConfig, LatentConfig, compose_config, get_family, make_family
from lavid.training.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

TOY_MODULE = '''
"""A toy family for the registry tests: z = gain * raw, no regularizer."""

from __future__ import annotations

from dataclasses import dataclass

from lavid.core.config import check
from lavid.models.latents.base import LatentFamily
from lavid.models.latents.registry import FamilyConfig, FamilySpec, register


@dataclass
class ToyConfig(FamilyConfig):
    toy_gain: float = 1.0

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.toy_gain > 0, f"{key}toy_gain", "must be > 0")


class Toy(LatentFamily):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.dim = self.raw_dim = config.dim
        self.gain = config.toy_gain

    def forward(self, raw, generator=None):
        return self.gain * raw, raw.new_zeros(()), {}


register(FamilySpec(name="toy", cls=Toy, config=ToyConfig, coefficient="toy_gain", short="gain", label="toy family",
                    paper_values=(0.5, 2.0), order=50))
'''

NO_BUDGET = Budget(steps=1, mae_steps=0, decoder_steps=1, eval_clips=1, probe_clips=1, values={})


@pytest.mark.parametrize("family", FAMILIES)
def test_every_registered_family_builds_from_its_yaml(family):
    path = ROOT / "configs" / f"{family}.yaml"
    assert path.exists(), f"family {family!r} has no {path.relative_to(ROOT)}"
    latent = load_config(TrainConfig, path).model.latent
    assert latent.family == family
    module = make_family(latent)
    assert isinstance(module, get_family(family).cls)
    z, loss, stats = module(torch.randn(2, 3, module.raw_dim))
    assert z.shape == (2, 3, latent.dim) and loss.dim() == 0 and torch.isfinite(loss)
    assert all(value.dim() == 0 for value in stats.values())


def test_the_registry_holds_the_families_in_their_order_and_the_sweep_reads_it():
    assert FAMILIES == ("noisy", "sparse", "discrete", "fsq", "none", "deterministic")
    assert COEFFICIENT == {"noisy": "beta", "sparse": "l1", "discrete": "codebook_size", "fsq": "fsq_levels"}
    assert PAPER_VALUES == {  # the reference paper's sweep, as before the registry
        "noisy": [5e-3, 1e-3, 5e-4, 1e-4, 5e-5, 1e-5, 5e-6, 1e-6],
        "sparse": [0.4, 0.1, 0.08, 0.06, 0.05, 0.04, 0.02, 0.01],
        "discrete": [16, 1024, 4096, 32768],
        "fsq": [[8, 5], [8, 5, 5, 5], [8, 8, 8, 5, 5], [8, 8, 8, 6, 5, 5]],
    }
    assert [spec.label for spec in latents.families()][:2] == ["noisy (VAE)", "sparse (energy)"]
    # the flat keys of model.latent: the shared fields, then every family's own, in the registry's order
    assert [f.name for f in dataclasses.fields(LatentConfig)] == [
        "family", "dim", "beta", "kl_warmup", "free_bits", "l1", "l2", "variance", "covariance", "mean",
        "sgld_steps", "sgld_step_size", "energy_warmup", "energy_scale", "codebook_size", "commitment", "reset_every", "fsq_levels"]


@pytest.mark.parametrize("family", [name for name in FAMILIES if get_family(name).coefficient])
def test_coefficients_parse_and_round_trip_through_run_names_and_overrides(family):
    spec = get_family(family)
    values = spec.default_values()
    assert parse_values(family, ",".join(format_value(v) for v in values)) == values
    for run in plan_runs(NO_BUDGET, [family]):  # no values in the budget: the registry's defaults
        assert run.name == spec.run_name(run.value) and run.name.startswith(f"{family}-{spec.short}_")
        latent = load_config(TrainConfig, None, run.overrides()).model.latent
        assert latent.family == family and getattr(latent, spec.coefficient) == run.value
    with pytest.raises(ValueError, match=family):
        parse_values(family, "1,x")


def test_run_names_and_the_smoke_budget_plan():
    assert RunSpec("noisy", "beta", 1e-3).name == "noisy-beta_0.001"
    assert RunSpec("sparse", "l1", 0.4).name == "sparse-l1_0.4"
    assert RunSpec("discrete", "codebook_size", 16).name == "discrete-K_16"
    assert RunSpec("fsq", "fsq_levels", [8, 5]).name == "fsq-L_8x5"
    assert RunSpec("none").name == "none" and RunSpec("deterministic").name == "deterministic"
    names = [run.name for run in plan_runs(load_budget("smoke"), list(FAMILIES))]
    assert names == ["noisy-beta_0.001", "noisy-beta_1e-05", "sparse-l1_0.4", "sparse-l1_0.04", "discrete-K_16",
                     "discrete-K_1024", "fsq-L_8x5", "fsq-L_8x5x5x5", "none", "deterministic"]
    assert get_family("discrete").capacity(LatentConfig(codebook_size=16)) == "K=16"
    assert get_family("none").capacity(LatentConfig()) == "–"


def test_an_unknown_family_stops_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.latent\.family: unknown latent family 'vae'.*noisy"):
        load_config(TrainConfig, None, ["model.latent.family=vae"])
    (tmp_path / "bad.yaml").write_text("model:\n  latent:\n    family: gumbel\n")
    with pytest.raises(ConfigError, match=r"model\.latent\.family"):
        load_config(TrainConfig, tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="unknown families"):
        plan_runs(NO_BUDGET, ["gumbel"])
    with pytest.raises(ValueError, match="no coefficient to sweep"):
        parse_values("none", "1")
    with pytest.raises(ValueError, match="unknown latent family 'gumbel'"):
        get_family("gumbel")


def test_each_family_validates_its_own_fields():
    for override, key in (("model.latent.beta=-1", "model.latent.beta"),
                          ("model.latent.codebook_size=1", "model.latent.codebook_size"),
                          ("model.latent.fsq_levels=[8,1]", "model.latent.fsq_levels"),
                          ("model.latent.l2=-1", "model.latent.l2"), ("model.latent.dim=0", "model.latent.dim")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(TrainConfig, None, [override])


@pytest.fixture
def toy_family(tmp_path):
    """The toy family's module, imported from a file outside the package and registered; removed after."""
    path = tmp_path / "toy_family.py"
    path.write_text(TOY_MODULE)
    spec = importlib.util.spec_from_file_location("toy_family_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        latents.unregister("toy")
        sys.modules.pop(spec.name, None)


def test_a_registered_family_reaches_the_planner_and_a_composed_config(toy_family):
    assert "toy" in latents.names() and latents.names().index("toy") == 4  # by its order: after fsq
    runs = plan_runs(NO_BUDGET, ["toy", "none"])
    assert [run.name for run in runs] == ["toy-gain_0.5", "toy-gain_2", "none"]
    assert runs[0].overrides() == ["model.latent.family=toy", "model.latent.toy_gain=0.5"]
    assert parse_values("toy", "1,3") == [1.0, 3.0]
    composed = compose_config()
    config = from_dict(composed, {"family": "toy", "toy_gain": 3.0, "beta": 1e-3}, "model.latent")
    assert isinstance(config, toy_family.ToyConfig) and config.beta == 1e-3
    assert make_family(config)(torch.ones(1, config.dim))[0].sum() == 3.0 * config.dim
    with pytest.raises(ConfigError, match=r"model\.latent\.toy_gain"):
        from_dict(composed, {"toy_gain": 0.0}, "model.latent")
    with pytest.raises(ValueError, match="registered twice"):
        latents.register(get_family("toy"))


def test_two_families_may_not_declare_the_same_field():
    @dataclasses.dataclass
    class Clash(FamilyConfig):
        beta: float = 1.0

    latents.register(latents.FamilySpec(name="clash", cls=latents.Unconstrained, config=Clash))
    try:
        with pytest.raises(TypeError, match="'noisy' and 'clash' both declare the config field 'beta'"):
            compose_config()
    finally:
        latents.unregister("clash")


def test_adding_a_family_is_one_new_module_and_one_yaml(tmp_path):
    """A copy of the package with one module added: the config, the model and the sweep take the family."""
    shutil.copytree(ROOT / "lavid", tmp_path / "lavid", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "lavid" / "models" / "latents" / "toy.py").write_text(TOY_MODULE)
    (tmp_path / "toy.yaml").write_text(f"base: {ROOT / 'configs' / 'tiny.yaml'}\n"
                                       "model:\n  latent:\n    family: toy\n    toy_gain: 2.0\n")
    code = textwrap.dedent(f"""
        import torch, lavid
        from lavid.core.config import ConfigError, load_config
        from lavid.experiments.ablation import FAMILIES, Budget, plan_runs
        from lavid.models.world_model import LatentActionWorldModel
        from lavid.training.train_config import TrainConfig
        assert lavid.__file__.startswith({str(tmp_path)!r}), lavid.__file__
        assert FAMILIES == ("noisy", "sparse", "discrete", "fsq", "toy", "none", "deterministic"), FAMILIES
        config = load_config(TrainConfig, {str(tmp_path / "toy.yaml")!r}, ["model.latent.toy_gain=3"])
        assert config.model.latent.family == "toy" and config.model.latent.toy_gain == 3.0
        try:
            load_config(TrainConfig, None, ["model.latent.toy_gain=-1"])
            raise SystemExit("a negative gain passed")
        except ConfigError as error:
            assert "model.latent.toy_gain" in str(error), error
        budget = Budget(steps=1, mae_steps=0, decoder_steps=1, eval_clips=1, probe_clips=1, values={{}})
        assert [run.name for run in plan_runs(budget, ["toy"])] == ["toy-gain_0.5", "toy-gain_2"]
        model = LatentActionWorldModel(config.model)
        assert type(model.family).__name__ == "Toy" and model.family.gain == 3.0
        clips = torch.randint(0, 256, (2, config.data.frames, 3, 64, 64), dtype=torch.uint8)
        assert torch.isfinite(model(clips)["loss"])
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
