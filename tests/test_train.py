"""lavid/train.py: config errors, outputs, exact resume after a kill, 2 processes, feature cache."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lavid.core.config import ConfigError, load_config
from lavid.data.clips import ClipDataset, DatasetFormatError
from lavid.data.training_data import build_training_data
from lavid.training.train_config import TrainConfig, resolve_action_dim

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "lavid" / "train.py"
ENCODE = ROOT / "data_prep" / "encode.py"

TINY = [
    "data.frames=4", "data.num_workers=0", "data.holdout_fraction=0.3", "optim.batch_size=4", "optim.lr=1e-3",
    "model.encoder.img_size=32", "model.encoder.embed_dim=32", "model.encoder.depth=1", "model.encoder.num_heads=2",
    "model.idm.dim=32", "model.idm.depth=1", "model.idm.num_heads=2", "model.predictor.dim=32",
    "model.predictor.depth=1", "model.predictor.num_heads=2", "model.latent.dim=8", "rollout_horizon=2",
    "progress=false", "log_every=1",
]


def run(*args, launcher=None, check=True, timeout=600):
    command = [*(launcher or [sys.executable]), str(TRAIN), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-2000:] + result.stderr[-4000:])
    return result


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def losses(out: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(out) if "loss" in m}


@pytest.mark.parametrize("override,named", [
    ("model.predictor.width=3", "model.predictor.width"),
    ("optim.lr=-1", "optim.lr"),
    ("steps=0", "steps"),
    ("model.latent.family=gaussian", "model.latent.family"),
    ("model.encoder.tubelet=2", "data.frames"),  # 4 frames = 2 steps: rollout_horizon 2 impossible
    ("data.frames=abc", "data.frames"),
    ("model.latent.free_bits=-0.5", "model.latent.free_bits"),
    ("model.latent.kl_warmup=1.5", "model.latent.kl_warmup"),
    ("model.predictor.attention=flash", "model.predictor.attention"),
    ("model.predictor.attention=flex", "model.predictor.attention"),  # no CPU backward: CUDA only
])
def test_bad_config_stops_before_work_naming_the_key(tmp_path, override, named):
    out = tmp_path / "run"
    result = run(*TINY, f"out_dir={out}", "data.frames=5" if named == "data.frames" and "tubelet" in override
                 else "steps=1", override, check=False)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_run_writes_metrics_checkpoints_pictures_and_config(sim_data, tmp_path):
    out = tmp_path / "run"
    result = run(*TINY, f"data={sim_data}", f"out_dir={out}", "steps=6", "eval_every=3", "checkpoint_every=3",
                 "model.latent.family=noisy")
    assert "done: 6 steps" in result.stdout and str(out) in result.stdout
    logged = metrics(out)
    train_rows = [m for m in logged if "loss" in m]
    assert [m["step"] for m in train_rows] == [1, 2, 3, 4, 5, 6]
    # the default encoder is trained end to end, so its SIGReg term is logged with the loss
    assert {"prediction_loss", "latent_loss", "latent/kl", "sigreg", "lr", "clips_per_s"} <= set(train_rows[0])
    # the data stores simulator states: the trained encoder's state probe is logged, written and printed
    probes = [m for m in logged if "probe/state/cartpole-swingup" in m]
    assert len(probes) == 1 and probes[0]["step"] == 6 and "probe/change/cartpole-swingup" in probes[0]
    assert "| cartpole-swingup |" in (out / "state_probe.md").read_text()
    assert "state probe, held-out R²" in result.stdout
    # ... and, the clips having actions, the latent's action probe (z -> true action, change -> action)
    actions = [m for m in logged if "probe/action_z/cartpole-swingup" in m]
    assert len(actions) == 1 and "probe/action_change/mean" in actions[0]
    assert "| cartpole-swingup |" in (out / "action_probe.md").read_text()
    assert "action probe, held-out R² of the true action from z" in result.stdout
    evals = [m for m in logged if "eval/one_step" in m]
    assert [m["step"] for m in evals] == [3, 6] and "eval/rollout_h2" in evals[0]
    assert (out / "checkpoints" / "step_00000006" / "model.safetensors").exists()
    assert (out / "checkpoints" / "latest").read_text() == "step_00000006"
    assert (out / "rollouts" / "step_00000006.png").exists() and (out / "rollouts" / "step_00000006.gif").exists()
    assert "family: noisy" in (out / "config.yaml").read_text()
    again = run(*TINY, f"data.data={sim_data}", f"out_dir={out}", "steps=6", check=False)
    assert again.returncode == 2 and "resume=true" in again.stderr  # an existing run is never overwritten
    missing = run(*TINY, f"data.data={sim_data}", f"out_dir={tmp_path / 'none'}", "resume=true", check=False)
    assert missing.returncode == 2 and "no complete checkpoint" in missing.stderr


def test_resume_after_kill_continues_the_same_curve(sim_data, tmp_path):
    args = [*TINY, f"data.data={sim_data}", "steps=16", "eval_every=0", "checkpoint_every=4"]
    reference = tmp_path / "reference"
    run(*args, f"out_dir={reference}")

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(TRAIN), *args, f"out_dir={out}"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "latest").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = (out / "checkpoints" / "latest").read_text()
    assert killed_at != "step_00000016", "the run finished before it could be killed"
    run(*args, f"out_dir={out}", "resume=true")
    expected, resumed = losses(reference), losses(out)
    assert sorted(resumed) == list(range(1, 17))
    for step in range(1, 17):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step



def test_weights_checkpoint_finds_the_newest_complete_checkpoint_with_weights(tmp_path):
    from lavid.core.run_folders import LATEST, STATE_FILE, WEIGHTS, weights_checkpoint

    root = tmp_path / "run" / "checkpoints"
    for name, files in [("step_00000004", (STATE_FILE, WEIGHTS)), ("step_00000008", (STATE_FILE, WEIGHTS)),
                        ("step_00000012", (WEIGHTS,))]:  # step 12 was killed before its state was written
        (root / name).mkdir(parents=True)
        for file in files:
            (root / name / file).write_text("{}")
    assert weights_checkpoint(tmp_path / "run") == root / "step_00000008"
    assert weights_checkpoint(root / "step_00000004") == root / "step_00000004"  # a step folder names itself
    (root / LATEST).write_text("step_00000004")
    assert weights_checkpoint(tmp_path / "run") == root / "step_00000004"  # the pointer wins when complete
    (root / "step_00000004" / WEIGHTS).unlink()
    (root / LATEST).unlink()
    (root / "step_00000008" / WEIGHTS).unlink()
    assert weights_checkpoint(tmp_path / "run") is None  # the newest complete one has no weights
    assert weights_checkpoint(tmp_path / "elsewhere") is None
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(sim_data, tmp_path):
    # a ViT encoder: the default conv encoder's BatchNorm keeps per-process statistics on CPU (no SyncBatchNorm)
    common = [*TINY, f"data.data={sim_data}", "steps=3", "eval_every=0", "checkpoint_every=0",
              "model.latent.family=none", "model.encoder.arch=vit", "model.encoder.mode=ema", "model.loss=l1"]
    single = tmp_path / "one"
    run(*common, "optim.batch_size=4", f"out_dir={single}")
    double = tmp_path / "two"
    # accelerate 1.15 sends --cpu to its single-process launcher; --multi_gpu starts torchrun, and the
    # trainer joins the processes into a gloo group when there is no GPU.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                str(29500 + os.getpid() % 1000)]
    result = run(*common, "optim.batch_size=2", f"out_dir={double}", launcher=launcher)
    one, two = losses(single), losses(double)
    assert sorted(two) == [1, 2, 3]
    assert (double / "config.yaml").exists() and "done: 3 steps on 2 process(es)" in result.stdout
    for step in (1, 2, 3):
        assert two[step] == pytest.approx(one[step], rel=1e-4), (one, two)
    # the default end-to-end conv encoder in two processes: SIGReg is taken over the gathered global batch
    conv = tmp_path / "conv"
    result = run(*TINY, f"data.data={sim_data}", "steps=2", "eval_every=0", "checkpoint_every=0",
                 "optim.batch_size=2", f"out_dir={conv}", launcher=launcher)
    assert "done: 2 steps on 2 process(es)" in result.stdout and "BatchNorm statistics are per process" in result.stderr
    assert all(m["sigreg"] > 0 for m in metrics(conv) if "loss" in m)


def test_feature_cache_gives_the_same_loss_as_frames(sim_data, tmp_path):
    common = [*TINY, f"data.data={sim_data}", "model.encoder.mode=frozen", "steps=3", "eval_every=0",
              "checkpoint_every=0"]
    cache = tmp_path / "features"
    subprocess.run([sys.executable, str(ENCODE), "--out", str(cache), "--no-progress", *common], check=True,
                   capture_output=True, timeout=300, cwd=ROOT)
    bad = subprocess.run([sys.executable, str(ENCODE), "--out", str(tmp_path / "bad"), "--device", "cuda:99", *common],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "--device cuda:99" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()  # stopped before any work
    frames_run, features_run = tmp_path / "frames", tmp_path / "feats"
    run(*common, f"out_dir={frames_run}")
    run(*common, f"out_dir={features_run}", f"data.features={cache}")
    a, b = losses(frames_run), losses(features_run)
    for step in (1, 2, 3):
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-6)
    other = run(*common, f"out_dir={tmp_path / 'other'}", f"data.features={cache}", "seed=5", check=False)
    assert other.returncode == 2 and "other encoder weights" in other.stderr
    ema = run(*common, f"out_dir={tmp_path / 'ema'}", f"data.features={cache}", "model.encoder.mode=ema",
              check=False)
    assert ema.returncode == 2 and "data.features" in ema.stderr


def test_a_predictor_trains_on_the_frozen_encoder_of_another_run(sim_data, tmp_path):
    """``model.encoder.mode=frozen`` + ``checkpoint=RUN`` (layout lavid): the new run's encoder is the source
    run's, BatchNorm statistics included, and stays so through training; a size that differs stops first."""
    from lavid.training.runs import load_run

    conv = [*TINY, f"data.data={sim_data}", "model.encoder.arch=conv", "model.encoder.conv_channels=8",
            "model.encoder.conv_hidden=32", "steps=3", "eval_every=0", "checkpoint_every=3"]
    source, frozen = tmp_path / "source", tmp_path / "frozen"
    run(*conv, "model.encoder.mode=e2e", f"out_dir={source}")
    run(*conv, "model.encoder.mode=frozen", f"model.encoder.checkpoint={source}", f"out_dir={frozen}")
    a, b = load_run(source).model, load_run(frozen).model
    for name, tensor in a.encoder.state_dict().items():
        assert torch.equal(b.encoder.state_dict()[name], tensor), name
    assert sorted(losses(frozen)) == [1, 2, 3]
    other = run(*conv, "model.encoder.mode=frozen", "model.encoder.embed_dim=16", f"model.encoder.checkpoint={source}",
                f"out_dir={tmp_path / 'other'}", check=False)
    assert other.returncode != 0 and "does not fit the encoder config" in other.stderr, other.stderr[-2000:]
    assert "Traceback" not in other.stderr and not (tmp_path / "other" / "checkpoints").exists()


# ------------------------------------------------------------------ frame stride, action conditioning


def test_frame_stride_keeps_every_rth_frame_and_concatenates_the_actions(sim_data):
    columns = ["action", "reward", "state"]
    stored, strided = ClipDataset(sim_data, columns=columns), ClipDataset(sim_data, columns=columns, max_frames=2,
                                                                           frame_stride=2)
    for index in (0, 5):
        a, b = stored[index], strided[index]  # 4 stored frames -> kept frames 0 and 2
        assert torch.equal(b["frames"], a["frames"][[0, 2]])
        assert torch.equal(b["action"][0], torch.cat([a["action"][0], a["action"][1]]))
        assert torch.equal(b["action"][1], torch.cat([a["action"][2], a["action"][3]]))
        assert torch.allclose(b["reward"], a["reward"][[0, 2]] + a["reward"][[1, 3]])
        assert torch.equal(b["state"], a["state"][[0, 2]])
    padded = ClipDataset(sim_data, columns=["action"], max_frames=2, frame_stride=2, pad_actions=3)[5]["action"]
    assert padded.shape == (2, 6) and torch.equal(padded[:, [0, 3]], strided[5]["action"])  # cartpole: 1 entry
    assert padded[:, [1, 2, 4, 5]].abs().sum() == 0

    config = load_config(TrainConfig, None, [*TINY, f"data={sim_data}", "data.frames=2", "data.frame_stride=2",
                                             "rollout_horizon=1"])
    data = build_training_data(config.data, tubelet=1, pad_actions=1)
    item = data.train[0]
    assert item["frames"].shape == (2, 3, 32, 32) and item["actions"].shape == (2, 2)
    assert item["actions"].dtype == torch.float32
    assert "actions" not in build_training_data(config.data, tubelet=1).train[0]  # the latent path reads frames only
    long = load_config(TrainConfig, None, [*TINY, f"data={sim_data}", "data.frames=4", "data.frame_stride=2"])
    with pytest.raises(DatasetFormatError, match="data.frame_stride"):
        build_training_data(long.data, tubelet=1)


def test_condition_and_stride_config_errors_name_the_key(tmp_path, sim_data):
    from conftest import write_video

    from lavid.data.video_index import VideoIndexConfig, build_video_dataset

    for override, key in (("data.frame_stride=0", "data.frame_stride"), ("model.condition=bogus", "model.condition"),
                          ("model.action_dim=-2", "model.action_dim")):
        with pytest.raises(ConfigError, match=key):
            load_config(TrainConfig, None, [*TINY, override])
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", num_frames=20, width=64, height=48)
    videos = tmp_path / "index"
    build_video_dataset(tmp_path / "videos", videos, VideoIndexConfig(clip_len=4, size=32), progress=False)
    config = load_config(TrainConfig, None, [*TINY, f"data={sim_data},{videos}", "model.condition=action"])
    with pytest.raises(DatasetFormatError, match=f"model.condition=action.*{videos}"):
        resolve_action_dim(config)
    action = [*TINY, f"data={sim_data}", "model.condition=action"]
    assert resolve_action_dim(load_config(TrainConfig, None, action)).model.action_dim == 1  # auto: cartpole's 1
    assert resolve_action_dim(load_config(TrainConfig, None, [*action, "model.action_dim=3"])).model.action_dim == 3


def test_action_probe_skips_video_data_without_loading_clips(tmp_path, monkeypatch):
    """Videos have no actions: the probe after training returns nothing before it loads thousands of clips."""
    from conftest import write_video

    import lavid.data.eval_data as eval_data
    from lavid.data.video_index import VideoIndexConfig, build_video_dataset
    from lavid.metrics.latent_evals import action_probe
    from lavid.models.world_model import LatentActionWorldModel

    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", num_frames=20, width=64, height=48)
    build_video_dataset(tmp_path / "videos", tmp_path / "index", VideoIndexConfig(clip_len=4, size=32), progress=False)
    config = load_config(TrainConfig, None, [*TINY, f"data={tmp_path / 'index'}"])
    monkeypatch.setattr(eval_data, "load_split", lambda *a, **k: pytest.fail("loaded the clips of a video dataset"))
    assert action_probe(LatentActionWorldModel(config.model), config.data) == {}


def test_action_conditioned_run_reports_ratio_and_gain_and_reloads(sim_data, tmp_path):
    from lavid.training.runs import load_run

    out = tmp_path / "run"
    result = run(*TINY, f"data={sim_data}", f"out_dir={out}", "model.condition=action", "data.frames=2",
                 "data.frame_stride=2", "rollout_horizon=1", "steps=5", "eval_every=5", "checkpoint_every=5")
    evals = [m for m in metrics(out) if "eval/one_step" in m]
    assert [m["step"] for m in evals] == [5]
    assert {"eval/ratio", "eval/latent_gain", "eval/shuffled", "eval/one_step_mse", "eval/copy_mse"} <= set(evals[0])
    assert evals[0]["eval/ratio"] == pytest.approx(evals[0]["eval/one_step"] / evals[0]["eval/copy"])
    assert "latent/spread" not in evals[0]
    verdict = [line for line in result.stdout.splitlines() if "action gain" in line]
    assert verdict and ("the condition is used" in verdict[0] or "not used yet" in verdict[0])
    saved = (out / "config.yaml").read_text()
    assert "condition: action" in saved and "action_dim: 1" in saved  # auto resolved, written for load_run
    loaded = load_run(out)
    assert loaded.model.action_conditioned and loaded.model.cond_dim == 2  # tubelet 1 x stride 2 x 1 entry


def test_feature_cache_stores_strided_actions_and_refuses_another_stride(sim_data, tmp_path):
    from lavid.training.feature_cache import build_feature_cache

    config = load_config(TrainConfig, None, [*TINY, f"data={sim_data}", "model.encoder.mode=frozen", "data.frames=2",
                                             "data.frame_stride=2", "rollout_horizon=1", "model.condition=action"])
    cache = tmp_path / "features"
    meta = build_feature_cache(config, str(cache), progress=False)
    assert meta["frame_stride"] == 2 and meta["action_dim"] == 1 and meta["without_actions"] == []
    data = build_training_data(dataclasses.replace(config.data, features=str(cache)), tubelet=1, pad_actions=2)
    item = data.train[0]
    clip_index = data.train.dataset.table[item["index"]]["clip"]
    clip = ClipDataset(sim_data, columns=["action"], max_frames=2, frame_stride=2, pad_actions=2)[clip_index]
    assert item["features"].shape[0] == 2 and torch.equal(item["actions"], clip["action"])
    with pytest.raises(DatasetFormatError, match="data.frame_stride"):
        build_training_data(dataclasses.replace(config.data, features=str(cache), frame_stride=1), tubelet=1)


def test_the_trainer_drives_the_kl_warmup(sim_data, tmp_path):
    out = tmp_path / "warm"
    result = run(*TINY, f"data={sim_data}", f"out_dir={out}", "steps=4", "eval_every=4", "probe_episodes=0",
                 "model.latent.family=noisy", "model.latent.beta=0.01", "model.latent.kl_warmup=1.0")
    weights = [m["latent/kl_weight"] for m in metrics(out) if "latent/kl_weight" in m]
    assert weights == pytest.approx([0.0, 0.0025, 0.005, 0.0075])  # β · step / (warm-up · steps), before each step
    kl = [m["latent/kl"] for m in metrics(out) if "latent/kl" in m][-1]
    assert f"KL {kl:.2f} nats per transition" in result.stdout  # the closing line says how much z carries


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_the_trainer_counts_the_cores_it_may_run_on_not_the_machines():
    from lavid.core.threads import usable_cores

    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # as under `taskset -c N`
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert usable_cores() == len(allowed)


def test_trackers_get_every_logged_value_through_accelerate_and_bad_trackers_are_config_errors(sim_data, tmp_path):
    from accelerate import utils
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lavid.training.train_config import TRACKERS

    out = tmp_path / "run"
    run(*TINY, f"data={sim_data}", f"out_dir={out}", "steps=3", "eval_every=3", "checkpoint_every=0",
        "probe_episodes=0")
    events = sorted((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "the default tracker (TensorBoard) wrote no event file under out_dir/tensorboard"
    accumulator = EventAccumulator(str(events[0].parent)).Reload()
    logged = metrics(out)
    assert [e.step for e in accumulator.Scalars("loss")] == [m["step"] for m in logged if "loss" in m] == [1, 2, 3]
    assert [e.value for e in accumulator.Scalars("loss")] == pytest.approx([m["loss"] for m in logged if "loss" in m])
    assert "eval/ratio" in accumulator.Tags()["scalars"]

    none = tmp_path / "none"
    run(*TINY, f"data={sim_data}", f"out_dir={none}", "steps=1", "probe_episodes=0", "trackers=[]")
    assert (none / "metrics.jsonl").exists() and not (none / "tensorboard").exists()

    unknown = run(*TINY, f"out_dir={tmp_path / 'x'}", "trackers=[tensorbored]", check=False)
    assert unknown.returncode == 2 and "trackers" in unknown.stderr and "tensorbored" in unknown.stderr
    missing = [name for name in TRACKERS if not getattr(utils, f"is_{name}_available")()]
    if missing:  # a tracker whose package is not installed stops the run before any work, naming the key
        result = run(*TINY, f"out_dir={tmp_path / 'y'}", f"trackers=[tensorboard,{missing[0]}]", check=False)
        assert result.returncode == 2 and "trackers" in result.stderr and "not installed" in result.stderr
        assert not (tmp_path / "y").exists()
