"""lavid/train.py: config errors, outputs, exact resume after a kill, 2 processes, feature cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    result = run(*TINY, f"data={sim_data}", f"out_dir={out}", "steps=6", "eval_every=3", "checkpoint_every=3")
    assert "done: 6 steps" in result.stdout and str(out) in result.stdout
    logged = metrics(out)
    train_rows = [m for m in logged if "loss" in m]
    assert [m["step"] for m in train_rows] == [1, 2, 3, 4, 5, 6]
    assert {"prediction_loss", "latent_loss", "latent/kl", "lr", "clips_per_s"} <= set(train_rows[0])
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


def test_two_cpu_processes_match_one_process_with_the_same_global_batch(sim_data, tmp_path):
    common = [*TINY, f"data.data={sim_data}", "steps=3", "eval_every=0", "checkpoint_every=0",
              "model.latent.family=none"]
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


def test_feature_cache_gives_the_same_loss_as_frames(sim_data, tmp_path):
    common = [*TINY, f"data.data={sim_data}", "model.encoder.mode=frozen", "steps=3", "eval_every=0",
              "checkpoint_every=0"]
    cache = tmp_path / "features"
    subprocess.run([sys.executable, str(ENCODE), "--out", str(cache), "--no-progress", *common], check=True,
                   capture_output=True, timeout=300, cwd=ROOT)
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
