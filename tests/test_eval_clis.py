"""The eval entry points end to end: evals/ablate.py (files, resume, a failed run), evals/transfer.py on real
video files, evals/leakage.py, and clean errors for bad runs and videos."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_video
from test_train import ROOT, TINY, run

ABLATE = ROOT / "evals" / "ablate.py"
TRANSFER = ROOT / "evals" / "transfer.py"
LEAKAGE = ROOT / "evals" / "leakage.py"
PROBE_ACTION = ROOT / "evals" / "probe_action.py"


def call(script: Path, *args, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def trained_run(sim_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    run(*TINY, f"data={sim_data}", f"out_dir={out}", "steps=3", "eval_every=0", "model.latent.family=noisy")
    return out


def ablate_args(sim_data, out):
    return ["--out", out, "--steps", 2, "--mae-steps", 2, "--decoder-steps", 2, "--eval-clips", 6, "--probe-clips", 8,
            "--values", "noisy=1e-3", "--no-progress", *TINY, f"data.data={sim_data}", "data.holdout_fraction=0.5"]


def test_ablate_writes_every_file_resumes_and_records_a_failed_run(sim_data, tmp_path):
    out = tmp_path / "ablate"
    first = call(ABLATE, *ablate_args(sim_data, out), "--families", "noisy,deterministic")
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("results.md", "results.csv", "results.json", "plots/one_step_vs_capacity.png",
                 "plots/leakage_ratio.png", "plots/transfer_ratio.png", "plots/probe_r2.png",
                 "runs/noisy-beta_0.001/decoder.pt", "runs/deterministic/decoder.pt"):
        assert (out / name).exists(), name
    # the default encoder is trained end to end: each run has its own, so nothing is shared between runs
    assert not (out / "features").exists() and not (out / "decoder.pt").exists()
    rows = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in rows] == ["noisy-beta_0.001", "deterministic"]
    assert all(r["status"] == "done" for r in rows)
    for key in ("error/one_step", "error/copy", "leak/ratio", "transfer/ratio", "probe/r2_mean", "pixel/psnr",
                "pixel/ssim", "sample/error_best"):
        assert isinstance(rows[0][key], float), key
    assert "| noisy-beta_0.001 | noisy | beta=0.001 |" in (out / "results.md").read_text()
    log = (out / "runs" / "noisy-beta_0.001.log").read_text()

    # the same command again: nothing is retrained or re-evaluated; a new family is added beside them,
    # and a run whose checkpoint is corrupt fails alone, with its error in the table
    bad = out / "runs" / "none" / "checkpoints" / "step_00000001"
    bad.mkdir(parents=True)
    (bad / "trainer_state.json").write_text(json.dumps({"step": 1, "epoch": 0, "consumed": 0}))
    (bad / "model.safetensors").write_bytes(b"not a checkpoint")
    (bad.parent / "latest").write_text(bad.name)
    (out / "runs" / "none" / "config.yaml").write_text((out / "runs" / "deterministic" / "config.yaml").read_text())
    second = call(ABLATE, *ablate_args(sim_data, out), "--families", "noisy,none,deterministic")
    assert second.returncode == 1
    assert (out / "runs" / "noisy-beta_0.001.log").read_text() == log  # not trained again
    rows2 = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows2["noisy-beta_0.001"]["error/one_step"] == rows[0]["error/one_step"]
    assert rows2["none"]["status"] == "failed" and rows2["none"]["error"]
    assert rows2["deterministic"]["status"] == "done"
    assert "failed" in (out / "results.md").read_text()


def test_ablate_with_a_frozen_encoder_shares_encoder_features_and_decoder(sim_data, tmp_path):
    out = tmp_path / "frozen"
    # run from another folder with a relative --out: the sweep and its training runs agree on where it is
    result = call(ABLATE, *ablate_args(sim_data, "frozen"), "--families", "none,deterministic",
                  "model.encoder.arch=vit", "model.encoder.mode=frozen", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("encoder/mae.pth", "features", "decoder.pt"):
        assert (out / name).exists(), name
    assert not (out / "runs" / "none" / "decoder.pt").exists()
    config = (out / "runs" / "none" / "config.yaml").read_text()
    assert "mode: frozen" in config and str(out / "features") in config
    rows = json.loads((out / "results.json").read_text())
    # one shared feature space: every run is scored against the same copy baseline
    assert rows[0]["error/copy"] == pytest.approx(rows[1]["error/copy"])


def test_ablate_stops_before_work_on_a_bad_key_or_value(sim_data, tmp_path):
    result = call(ABLATE, *ablate_args(sim_data, tmp_path / "x"), "model.latent.betta=1")
    assert result.returncode == 2 and "model.latent.betta" in result.stderr and "Traceback" not in result.stderr
    result = call(ABLATE, *ablate_args(sim_data, tmp_path / "y"), "--values", "discrete=1")
    assert result.returncode == 2 and "codebook_size" in result.stderr
    assert not (tmp_path / "y" / "runs").exists()


def test_transfer_on_two_real_video_files_writes_gif_mp4_png(trained_run, tmp_path):
    a = write_video(tmp_path / "a.mp4", num_frames=20, fps=10, width=64, height=48)
    b = write_video(tmp_path / "b.mp4", num_frames=30, fps=10, width=80, height=60)
    out = tmp_path / "transfer"
    result = call(TRANSFER, "--checkpoint", trained_run, "--video-a", a, "--video-b", b, "--out", out,
                  "--decoder-steps", 3, "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image

    gif = Image.open(out / "transfer.gif")
    assert gif.n_frames == 4  # one frame per step of the 4-frame clips
    assert Image.open(out / "transfer.png").size[0] > 4 * 32
    import av

    with av.open(str(out / "transfer.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    summary = json.loads((out / "transfer.json").read_text())
    assert summary["pair"]["ratio"] > 0
    assert (trained_run / "decoder.pt").exists()  # trained once, reused next time


def test_transfer_and_leakage_metrics_over_held_out_pairs(trained_run, tmp_path):
    result = call(TRANSFER, "--checkpoint", trained_run, "--pairs", 4, "--out", tmp_path / "t")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cycle transfer over" in result.stdout
    result = call(LEAKAGE, "--checkpoint", trained_run, "--clips", 8, "--out", tmp_path / "l")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "l" / "leakage.json").read_text())
    assert rows[0]["leak/ratio"] > 0 and (tmp_path / "l" / "leakage.md").exists()
    assert rows[0]["pairs"] == "any other episode"
    result = call(LEAKAGE, "--checkpoint", trained_run, "--clips", 8, "--same-task", "--out", tmp_path / "s")
    assert result.returncode == 0, result.stderr[-3000:]
    same = json.loads((tmp_path / "s" / "leakage.json").read_text())[0]
    assert same["pairs"] == "same task" and same["leak/ratio"] > 0  # one task here: cuts within it


def test_clear_errors_for_short_videos_missing_checkpoints_and_other_families(trained_run, tmp_path):
    short = write_video(tmp_path / "short.mp4", num_frames=5, fps=10, width=64, height=48)
    result = call(TRANSFER, "--checkpoint", trained_run, "--video-a", short, "--video-b", short, "--out", tmp_path / "o")
    assert result.returncode == 2 and "too short" in result.stderr and "Traceback" not in result.stderr

    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    result = call(TRANSFER, "--checkpoint", empty, "--pairs", 2, "--out", tmp_path / "o")
    assert result.returncode == 2 and "no complete checkpoint" in result.stderr

    other = tmp_path / "other_family"
    shutil.copytree(trained_run, other)
    config = (other / "config.yaml").read_text().replace("family: noisy", "family: discrete")
    (other / "config.yaml").write_text(config)
    result = call(LEAKAGE, "--checkpoint", other, "--out", tmp_path / "o")
    assert result.returncode == 2 and "another family or size" in result.stderr and "Traceback" not in result.stderr

    result = call(LEAKAGE, "--checkpoint", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_mae_stage_with_a_batch_larger_than_the_training_split_finishes(sim_data, tmp_path):
    """A regression: an epoch with no full batch used to loop forever (the ablate test hung in CI)."""
    out = tmp_path / "mae.pth"
    result = subprocess.run([sys.executable, str(ROOT / "data_prep" / "pretrain_encoder.py"), "--out", str(out),
                             "--steps", "2", "--batch-size", "64", "--no-progress", *TINY, f"data.data={sim_data}",
                             "model.encoder.arch=vit"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.exists()


def test_action_probe_scores_z_and_the_feature_change_per_task(trained_run, sim_data, tmp_path):
    result = call(PROBE_ACTION, "--checkpoint", trained_run, "--train-clips", 20, "--clips", 20, "--out", tmp_path / "p")
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads((tmp_path / "p" / "action_probe.json").read_text())
    row = scores["cartpole-swingup"]
    assert row["train"] > 0 and row["heldout"] > 0  # transitions on both sides of the run's split
    assert all(math.isfinite(row[k]) and row[k] <= 1 for k in ("z", "change"))  # R², scored on held-out clips
    assert "cartpole-swingup" in (tmp_path / "p" / "action_probe.md").read_text()
    history = tmp_path / "det"
    run(*TINY, f"data={sim_data}", f"out_dir={history}", "steps=1", "eval_every=0", "probe_episodes=0",
        "model.latent.family=deterministic")
    result = call(PROBE_ACTION, "--checkpoint", history, "--out", tmp_path / "q")
    assert result.returncode == 2 and "no inferred latent" in result.stderr and "Traceback" not in result.stderr
