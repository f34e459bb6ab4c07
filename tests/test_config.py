"""Config loading: YAML ``base:`` inheritance, overrides, shorthand, errors naming the key, round trip."""

import pytest
import yaml

from lavid.core.config import ConfigError, load_config, to_dict
from lavid.training.train_config import TrainConfig


def test_base_file_overrides_and_round_trip(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("steps: 7\nmodel:\n  latent:\n    family: fsq\n    fsq_levels: [8, 5]\n"
                                        "  encoder:\n    model_kwargs: {a: 1}\n")
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nout_dir: runs/child\n"
                                                 "model:\n  encoder:\n    model_kwargs: {b: 2}\n")
    config = load_config(TrainConfig, tmp_path / "sub" / "child.yaml",
                         ["data=/d/one:2,/d/two", "model.latent.beta=1e-3", "model.encoder.checkpoint_key=ema",
                          "optim.betas=[0.8,0.9]", "mixed_precision=bf16"])
    assert config.steps == 7 and config.out_dir == "runs/child" and config.model.latent.family == "fsq"
    assert config.model.latent.fsq_levels == [8, 5] and config.model.encoder.model_kwargs == {"a": 1, "b": 2}
    assert config.data.data == "/d/one:2,/d/two" and config.model.latent.beta == pytest.approx(1e-3)
    assert config.model.encoder.checkpoint_key == "ema" and config.data.features is None
    assert config.optim.betas == [0.8, 0.9] and config.mixed_precision == "bf16"

    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    assert load_config(TrainConfig, saved) == config


@pytest.mark.parametrize("override,message", [
    ("model.latent.bta=1", "unknown config key 'model.latent.bta'"),
    ("steps=abc", "steps"),
    ("optim.lr=-1", "optim.lr"),
    ("mixed_precision=fp8", "mixed_precision"),
    ("model.encoder=3", "model.encoder"),
    ("model.latent.fsq_levels=[8,x]", "model.latent.fsq_levels"),
    ("steps", "key=value"),
    ("data.frames=[1", "data.frames: cannot parse"),
])
def test_override_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_config(TrainConfig, None, [override])


def test_yaml_errors_name_the_key_or_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  predictor:\n    width: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.predictor\.width'"):
        load_config(TrainConfig, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(TrainConfig, tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "missing.yaml")


def test_a_text_field_keeps_words_and_digits_yaml_would_read_as_bools_or_numbers():
    config = load_config(TrainConfig, None, ["mixed_precision=no", "out_dir=2024", "model.encoder.checkpoint_key=on"])
    assert config.mixed_precision == "no" and config.out_dir == "2024" and config.model.encoder.checkpoint_key == "on"
    assert load_config(TrainConfig, None, ["progress=no"]).progress is False  # a bool field still reads YAML's bools
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_config(TrainConfig, None, ["mixed_precision=yes"])  # a word, but not one of the choices
    with pytest.raises(ConfigError, match="steps"):
        load_config(TrainConfig, None, ["steps=no"])
