"""data_prep/dmc.py: real DMControl and Jaco trajectories with actions, states and restorable physics."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from lavid.data.clips import ClipDataset, read_rows
from lavid.data.goals import goal_image, load_step, render_state
from lavid.data.policies import PolicyError, SmoothPolicy, UniformPolicy, make_policy
from lavid.data.sim import SimEnv, SimError
from lavid.data.store import ChunkedWriter, episode_features
from lavid.data.trajectories import (
    TaskSpec,
    TrajectoryConfig,
    build_trajectory_dataset,
    dataset_params,
    episode_jobs,
    features,
    inspect_tasks,
    rollout,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "data_prep" / "dmc.py"


def run_script(*args, check=True):
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--no-progress"], capture_output=True,
                            text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def walker(tmp_path_factory):
    out = tmp_path_factory.mktemp("dmc") / "walker"
    run_script("--task", "walker-walk", "--policy", "smooth", "--episodes", "3", "--episode-len", "20",
               "--clip-len", "8", "--size", "32", "--out", out, "--workers", "2")
    return out


@pytest.fixture(scope="module")
def jaco(tmp_path_factory):
    out = tmp_path_factory.mktemp("dmc") / "jaco"
    run_script("--task", "jaco-reach", "--policy", "smooth", "--episodes", "2", "--episode-len", "12",
               "--clip-len", "4", "--size", "32", "--out", out, "--workers", "0")
    return out


def test_suite_dataset_shapes_dtypes_and_bounds(walker):
    dataset = ClipDataset(walker)
    assert len(dataset) == 3 * 2  # 20 steps -> two clips of 8
    item = dataset[1]
    assert item["frames"].shape == (8, 3, 32, 32) and item["frames"].dtype == torch.uint8
    assert item["action"].shape == (8, 6) and item["action"].dtype == torch.float32
    assert item["reward"].shape == (8,) and item["state"].shape == (8, 24)
    assert item["physics"].dtype == torch.float64
    actions = torch.cat([dataset[i]["action"] for i in range(len(dataset))])
    assert actions.min() >= -1 and actions.max() <= 1 and actions.std() > 0.1
    assert item["frames"].float().std() > 5  # a real render, not a blank frame
    episodes = datasets.load_from_disk(str(walker / "episodes"))
    assert episodes["task"] == ["walker-walk"] * 3 and len(set(episodes["seed"])) == 3
    assert np.isclose(episodes["fps"][0], 20.0)  # control step 0.025 s x action repeat 2
    # the one episodes schema of lavid.data.store
    assert episodes.features == episode_features("trajectory")
    assert sorted(episodes.column_names) == sorted(["source", "episode", "first_row", "num_steps", "task", "camera",
                                                    "seed", "policy", "return", "fps", "action_dim", "state_dim"])


def test_smooth_policy_moves_smoothly_and_random_does_not():
    low, high = -np.ones(4, np.float32), np.ones(4, np.float32)
    smooth, uniform = SmoothPolicy(low, high), UniformPolicy(low, high)
    smooth.reset(np.random.default_rng(0))
    uniform.reset(np.random.default_rng(0))
    a = np.stack([smooth.act(None) for _ in range(500)])
    b = np.stack([uniform.act(None) for _ in range(500)])
    lag1 = lambda x: np.mean([np.corrcoef(x[:-1, d], x[1:, d])[0, 1] for d in range(4)])  # noqa: E731
    assert lag1(a) > 0.7 and abs(lag1(b)) < 0.15
    assert a.min() >= -1 and a.max() <= 1 and b.min() >= -1 and b.max() <= 1


def test_same_seed_same_data_and_resume_after_kill(walker, tmp_path):
    out = tmp_path / "again"
    args = ["--task", "walker-walk", "--policy", "smooth", "--episodes", "3", "--episode-len", "20",
            "--clip-len", "8", "--size", "32", "--out", str(out)]
    process = subprocess.Popen([sys.executable, str(SCRIPT), *args, "--workers", "0", "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the writer commits every 8 episodes by default; kill before anything is final
    deadline = time.time() + 120
    while time.time() < deadline and not (out / ".work" / "params.json").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "lavid.json").exists()
    run_script(*args, "--workers", "2")
    a, b = ClipDataset(out), ClipDataset(walker)
    for index in range(len(a)):
        for key in ("frames", "action", "reward", "state", "physics"):
            assert torch.equal(a[index][key], b[index][key]), key
    again = run_script(*args)
    assert "already complete" in again.stdout


def test_resume_per_episode_in_library(tmp_path):
    config = TrajectoryConfig((TaskSpec("cartpole-swingup", 4, episode_len=6),), size=16, clip_len=3)
    reference = build_trajectory_dataset(str(tmp_path / "ref"), config, chunk_items=1, progress=False)
    layout = inspect_tasks(config)
    writer = ChunkedWriter(tmp_path / "part", dataset_params(config), features(config, layout), chunk_items=1)
    for job in episode_jobs(config)[:2]:  # two episodes committed, then "killed"
        writer.add(rollout(job, config, layout.robot))
    assert writer.items_done == 2
    resumed = build_trajectory_dataset(str(tmp_path / "part"), config, chunk_items=1, progress=False)
    assert resumed["counts"] == reference["counts"]
    a = datasets.load_from_disk(str(tmp_path / "part" / "steps"))
    b = datasets.load_from_disk(str(tmp_path / "ref" / "steps"))
    assert a.data.equals(b.data)


def test_each_task_spec_may_name_its_own_policy(tmp_path):
    """The default preset mixes white-noise and smooth episodes of one task: each keeps its own policy."""
    config = TrajectoryConfig((TaskSpec("cartpole-swingup", 2, episode_len=12, policy="random"),
                               TaskSpec("cartpole-swingup", 2, episode_len=12, policy="smooth")),
                              size=16, clip_len=4, action_repeat=1)
    build_trajectory_dataset(str(tmp_path / "mixed"), config, progress=False)
    episodes = datasets.load_from_disk(str(tmp_path / "mixed" / "episodes"))
    dataset = ClipDataset(tmp_path / "mixed", columns=[])
    assert sorted(episodes["policy"]) == ["random", "random", "smooth", "smooth"]
    assert len(set(episodes["source"])) == 4 and all("/policy=" in s for s in episodes["source"])
    jitter = {}
    for i, policy in enumerate(episodes["policy"]):
        actions = np.asarray(read_rows(dataset.steps, int(dataset.first_row[i]), 12, ["action"])["action"])
        jitter.setdefault(policy, []).append(float(abs(actions[1:] - actions[:-1]).mean()))
    assert max(jitter["smooth"]) < min(jitter["random"])
    with pytest.raises(PolicyError):
        TaskSpec("cartpole-swingup", 1, policy="greedy")


def test_each_task_spec_may_name_its_own_action_repeat(tmp_path):
    """Per-embodiment action repeat: a step spans the spec's control steps; fps and sources say so."""
    config = TrajectoryConfig((TaskSpec("cartpole-swingup", 1, episode_len=6, action_repeat=8),
                               TaskSpec("cartpole-swingup", 1, episode_len=6)),
                              size=16, clip_len=3, action_repeat=2)
    meta = build_trajectory_dataset(str(tmp_path / "repeats"), config, progress=False)
    episodes = datasets.load_from_disk(str(tmp_path / "repeats" / "episodes"))
    by_source = dict(zip(episodes["source"], episodes["fps"]))
    assert by_source["sim:cartpole-swingup/camera=default/repeat=8/episode=0"] == pytest.approx(100 / 8)
    assert by_source["sim:cartpole-swingup/camera=default/episode=0"] == pytest.approx(100 / 2)
    assert meta["fps"] is None  # two rates: no common one
    # a spec without its own repeat leaves the dataset's parameters as they were before the knob existed
    assert "action_repeat" not in meta["params"]["tasks"][1] and meta["params"]["tasks"][0]["action_repeat"] == 8
    with pytest.raises(ValueError, match="action_repeat"):
        TaskSpec("cartpole-swingup", 1, action_repeat=0)


def test_restored_state_renders_the_stored_frame(walker):
    stored = load_step(walker, episode=1, step=13)
    image, pinch = render_state(stored.task, stored.physics, size=32, camera=stored.camera)
    assert pinch is None
    assert np.array_equal(image, stored.frame)
    assert np.array_equal(goal_image(walker, 1, 13), stored.frame)
    other = load_step(walker, episode=1, step=3)
    assert not np.array_equal(other.frame, stored.frame)


def test_jaco_has_pinch_site_consistent_with_physics(jaco):
    dataset = ClipDataset(jaco)
    item = dataset[0]
    assert item["action"].shape == (4, 9) and item["pinch"].shape == (4, 3) and item["target"].shape == (4, 3)
    steps = datasets.load_from_disk(str(jaco / "steps"))
    rows = read_rows(steps, 0, 12, ["pinch", "physics", "target", "frame"])
    assert np.linalg.norm(np.diff(rows["pinch"], axis=0), axis=1).max() > 1e-4  # the hand moves
    assert np.all(np.abs(rows["pinch"]) < 1.5)  # metres, within reach of the arm
    assert np.allclose(rows["target"], rows["target"][0])  # one target per episode
    stored = load_step(jaco, episode=0, step=7)
    image, pinch = render_state("jaco-reach", stored.physics, stored.target, size=32)
    np.testing.assert_allclose(pinch, rows["pinch"][7], atol=1e-5)
    assert np.array_equal(image, rows["frame"][7])


def test_jaco_overview_view_renders_a_stored_state_from_a_fixed_pose(jaco):
    stored = load_step(jaco, episode=1, step=5)
    close, _ = render_state("jaco-reach", stored.physics, stored.target, size=48, camera="front_close")
    overview, pinch = render_state("jaco-reach", stored.physics, stored.target, size=48, camera="overview")
    again, _ = render_state("jaco-reach", stored.physics, stored.target, size=48, camera="overview")
    assert overview.shape == (3, 48, 48) and np.array_equal(overview, again)  # a fixed pose, not the free camera
    np.testing.assert_allclose(pinch, stored.pinch, atol=1e-5)

    def arm_pixels(image):  # the arm is black: dark, unsaturated pixels (the floor is blue, the target red)
        rgb = image.astype(int)
        return int(((rgb.max(0) < 60) & (rgb.max(0) - rgb.min(0) < 25)).sum())

    assert arm_pixels(overview) > 0 and not np.array_equal(overview, close)
    with pytest.raises(SimError, match="overview"):
        SimEnv("jaco-reach", seed=0, size=8, camera="overveiw")
    with pytest.raises(SimError):
        SimEnv("walker-walk", seed=0, size=8, camera="overview")  # views belong to their task


def test_reacher_close_view_shows_the_same_arm_larger():
    """``top_close``: reacher's top-down camera moved closer; the same state, the arm (yellow) about 1.36² larger."""
    def arm_pixels(image):  # the arm is yellow: red and green high, blue low (the floor is blue, the target red)
        r, g, b = image.astype(int)
        return int(((r > 150) & (g > 120) & (b < 120)).sum())

    counts = []
    for camera in (0, "top_close"):
        env = SimEnv("reacher-easy", seed=3, size=64, camera=camera)
        env.reset()
        for _ in range(3):
            env.step(np.array([0.7, -0.4]))
        counts.append(arm_pixels(env.render()))
        env.close()
    assert counts[0] > 0 and 1.4 < counts[1] / counts[0] < 2.6


def test_bad_task_policy_camera_fail_before_work(tmp_path):
    result = run_script("--task", "walker-wlk", "--out", tmp_path / "a", check=False)
    assert result.returncode == 2 and "valid tasks" in result.stderr and "walker-walk" in result.stderr
    result = run_script("--task", "walker-walk", "--policy", "greedy", "--out", tmp_path / "b", check=False)
    assert result.returncode == 2 and "random, smooth, checkpoint:PATH" in result.stderr
    result = run_script("--task", "walker-walk", "--camera", "7", "--out", tmp_path / "c", check=False)
    assert result.returncode == 2 and "cameras:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / name / "lavid.json").exists() for name in "abc")


def test_renderer_failure_names_what_was_tried(tmp_path):
    import os

    env = {**os.environ, "MUJOCO_GL": "nonexistent-backend"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--task", "walker-walk", "--out", str(tmp_path / "x")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "MUJOCO_GL=nonexistent-backend" in result.stderr and "libegl1" in result.stderr


def test_checkpoint_policy_runs_a_torchscript_agent(tmp_path):
    env = SimEnv("cartpole-swingup", seed=0, size=16)
    state = env.reset().state
    net = torch.nn.Sequential(torch.nn.Linear(state.shape[0], 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    path = tmp_path / "agent.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    policy = make_policy(f"checkpoint:{path}", state.shape[0], env.action_low, env.action_high)
    expected = np.clip(net(torch.as_tensor(state)).detach().numpy(), -1, 1)
    np.testing.assert_allclose(policy.act(state), expected, rtol=1e-5)
    with pytest.raises(PolicyError, match="shape"):
        make_policy(f"checkpoint:{path}", state.shape[0], np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(PolicyError, match="TorchScript"):
        make_policy(f"checkpoint:{tmp_path / 'missing.pt'}", 5, env.action_low, env.action_high)
    with pytest.raises(SimError, match="valid tasks"):
        SimEnv("nope-nope", 0)


def test_rendering_then_building_a_model_in_one_process_does_not_crash():
    # Regression: importing triton (timm -> torchvision -> torch._dynamo) after Mesa made a GL context
    # segfaulted the whole test run; planning will render and run models in one process.
    code = (
        "from lavid.data.sim import SimEnv\n"
        "env = SimEnv('cartpole-swingup', 0, 16); env.reset(); env.render()\n"
        "from lavid.models.world_model import LatentActionWorldModel, ModelConfig\n"
        "LatentActionWorldModel(ModelConfig()); print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
