"""The state probe: recovers a known linear map, refuses malformed state columns, and runs as a command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lavid.metrics.state_probe import (EpisodeFeatures, StateProbeError, pose_groups, pose_target_groups, pose_targets,
                               probe_states)

ROOT = Path(__file__).resolve().parents[1]


def test_pose_groups_keep_positions_and_drop_velocities():
    groups = pose_groups("reacher-easy", 6)  # position 2, to_target 2, velocity 2
    assert list(groups) == ["position", "to_target"]
    assert groups["position"] == slice(0, 2)
    # reacher's position holds raw hinge angles that wrap: they are probed as sine and cosine
    state = torch.tensor([[0.5, 7.0, 0.1, 0.2, 9.0, 9.0]])
    targets = pose_targets("reacher-easy", groups, state)
    angles = torch.tensor([0.5, 7.0])
    assert torch.allclose(targets, torch.cat([angles.sin(), angles.cos(), torch.tensor([0.1, 0.2])])[None])
    assert pose_target_groups("reacher-easy", groups) == {"position": slice(0, 4), "to_target": slice(4, 6)}


def test_state_of_wrong_length_names_the_task():
    with pytest.raises(StateProbeError, match="reacher-easy.*5 values"):
        pose_groups("reacher-easy", 5)


def test_a_machine_without_the_simulator_gets_a_state_probe_error(monkeypatch):
    """A GPU machine without dm_control trained a run, then the probe's SimError failed the finished run:
    it is now a StateProbeError, which the probe after training reports and skips."""
    import lavid.data.sim as sim
    from lavid.metrics.state_probe import observation_layout

    def no_renderer():
        raise sim.SimError("MuJoCo cannot render headless; tried MUJOCO_GL=egl: no dm_control")

    monkeypatch.setattr(sim, "ensure_renderer", no_renderer)
    observation_layout.cache_clear()
    try:
        with pytest.raises(StateProbeError, match="cheetah-run.*simulator.*cannot start.*no dm_control"):
            pose_groups("cheetah-run", 17)
    finally:
        observation_layout.cache_clear()  # later tests read the real layout


def _episodes(features_of, count=16, length=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for k in range(count):
        state = torch.randn(length, 6, generator=generator).cumsum(0) * 0.1  # a random walk of the pose
        visible = torch.cat([state[:, :2].sin(), state[:, :2].cos(), state[:, 2:]], dim=1)  # what a frame shows
        out.append(EpisodeFeatures("reacher-easy", features_of(visible, generator), state, heldout=k % 4 == 0))
    return out


def test_probe_recovers_a_linear_map_and_rejects_noise():
    mixing = torch.randn(8, 96, generator=torch.Generator().manual_seed(1))
    linear = probe_states(_episodes(lambda s, g: s @ mixing + 0.01 * torch.randn(len(s), 96, generator=g)))
    assert min(linear.state["reacher-easy"].values()) > 0.98
    assert min(linear.change["reacher-easy"].values()) > 0.9
    noise = probe_states(_episodes(lambda s, g: torch.randn(len(s), 96, generator=g)))
    assert max(noise.state["reacher-easy"].values()) < 0.2
    summary = linear.summary()
    assert summary["probe/state/dmc_mean"] > 0.98 and "probe/change/reacher-easy" in summary


def test_mlp_readout_reads_a_pose_that_the_features_code_nonlinearly():
    """Features that code each pose direction as its sign and its magnitude: a ridge reads part of it, the MLP
    readout nearly all of it (as for an arm seen from many start poses, the question of the Jaco probe)."""
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))[0]

    def code(pose, _):
        direction = pose @ rotation * 3
        return torch.cat([direction.sign(), direction.abs()], dim=1)

    episodes = _episodes(code)
    linear = probe_states(episodes, readout="linear").state["reacher-easy"]
    mlp = probe_states(episodes, readout="mlp").state["reacher-easy"]
    assert linear["position"] < 0.5 and mlp["position"] > 0.8 and mlp["to_target"] > 0.85
    with pytest.raises(ValueError, match="readout must be one of linear, mlp"):
        probe_states(episodes, readout="kernel")


def test_probe_reduces_wide_features_before_the_ridge():
    mixing = torch.randn(8, 3000, generator=torch.Generator().manual_seed(2))
    result = probe_states(_episodes(lambda s, g: s @ mixing), max_dim=64)
    assert min(result.state["reacher-easy"].values()) > 0.95


def test_probe_command_on_simulator_data(sim_data, tmp_path):
    out = tmp_path / "probe"
    command = [sys.executable, str(ROOT / "evals" / "probe_state.py"), f"data={sim_data}", "data.frames=4",
               "data.holdout_fraction=0.3", "model.encoder.img_size=32", "model.encoder.patch_size=8",
               "model.encoder.depth=1", "--readouts", "linear,mlp", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "state_probe.json").read_text())
    assert set(data["state"]["cartpole-swingup"]) == {"position"}
    assert "| cartpole-swingup |" in (out / "state_probe.md").read_text()
    mlp = json.loads((out / "state_probe_mlp.json").read_text())  # the MLP readout of the same episodes
    assert mlp["readout"] == "mlp" and mlp["samples"] == data["samples"]
    assert set(mlp["state"]["cartpole-swingup"]) == {"position"}
    bad = subprocess.run(command[:-4] + ["--readouts", "linear,kernel", "--out", str(out)], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "--readouts" in bad.stderr and "kernel" in bad.stderr


def test_probe_command_without_states_is_a_clear_error(video_dir, tmp_path):
    index = tmp_path / "videos"
    subprocess.run([sys.executable, str(ROOT / "data_prep" / "videos.py"), str(video_dir), str(index), "--clip-len",
                    "4", "--fps", "4", "--size", "32"], check=True, capture_output=True, timeout=300)
    result = subprocess.run([sys.executable, str(ROOT / "evals" / "probe_state.py"), f"data={index}",
                             "data.frames=4", "model.encoder.img_size=32", "--out", str(tmp_path / "p")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "stores simulator states" in result.stderr and "Traceback" not in result.stderr
