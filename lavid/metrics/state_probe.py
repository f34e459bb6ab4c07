"""Does the frame representation see what the action changes? Probes to the simulator state.

Simulator datasets store, at every step, the proprioceptive observation (``state``) the task exposes.
Its *pose* entries (joint angles, orientations, heights, positions; not velocities, torques or
touch sensors, which one frame cannot show) are what an action moves. Two held-out probes per task:

- **state**: features of a step ``[N·D]`` -> the pose at that step;
- **change**: feature change between two consecutive steps -> the pose change between them.

Both are ridge regressions by default (strength by 5-fold cross-validation,
:func:`lavid.metrics.probe.choose_ridge`) fit on training episodes and scored by R² on held-out episodes.
Features wider than ``max_dim`` are first reduced by PCA fit on the training features (a ridge on 8,192
token features would cost minutes per fold and gain nothing over their leading components). With
``readout="mlp"`` the same split is read by :func:`lavid.metrics.probe.mlp_probe` instead (two hidden
layers, early-stopped on the last fifth of the training steps, seeded): it tells features that hold the
pose nonlinearly (an arm seen from many start poses) from features that do not hold it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from lavid.metrics.probe import choose_ridge, fit_ridge, mlp_probe

log = logging.getLogger(__name__)

NOT_POSE = ("vel", "torque", "touch", "rmat", "target_position")
"""Observation keys containing any of these are not pose: one frame cannot show them (or, for the
target position, they do not move with the action)."""

WRAPPED_ANGLES = {"reacher": ("position",)}
"""Per domain, the observation keys that hold raw hinge angles of unlimited joints (they wrap, so a
linear probe of the angle itself is meaningless): they are probed as their sine and cosine."""


class StateProbeError(Exception):
    """A dataset whose state columns cannot be probed (missing, or of the wrong length)."""


@lru_cache(maxsize=None)
def observation_layout(task: str) -> tuple[tuple[str, int, int], ...]:
    """``((key, start, stop), ...)``: where each observation entry lies in the flattened ``state`` column.

    Read from the task's own observation spec (the order :meth:`lavid.data.sim.SimEnv.proprio` flattens in).
    """
    from lavid.data.sim import SimEnv, SimError, ensure_renderer

    try:  # the layout comes from the task's own observation spec: it needs the simulator
        ensure_renderer()
        env = SimEnv(task, seed=0, size=8)
    except SimError as error:
        raise StateProbeError(f"the state probe reads task {task}'s observation layout from the simulator, "
                              f"which cannot start here: {error}") from None
    try:
        env.reset()
        layout, start = [], 0
        for key, value in env._timestep.observation.items():
            if "image" in key:
                continue
            size = int(np.asarray(value).size)
            layout.append((key, start, start + size))
            start += size
    finally:
        env.close()
    return tuple(layout)


def pose_groups(task: str, state_dim: int) -> dict[str, slice]:
    """``{observation key: slice into state}`` for the pose entries of ``task``.

    Raises:
        StateProbeError: the stored state does not have the length the task's observation spec gives.
    """
    layout = observation_layout(task)
    expected = layout[-1][2] if layout else 0
    if state_dim != expected:
        raise StateProbeError(f"state column of task {task} has {state_dim} values; its observation spec gives "
                              f"{expected} ({', '.join(k for k, _, _ in layout)})")
    groups = {key: slice(start, stop) for key, start, stop in layout if not any(w in key for w in NOT_POSE)}
    if not groups:
        raise StateProbeError(f"task {task} exposes no pose entries in its state column")
    return groups


def _wrapped(task: str, key: str) -> bool:
    return key in WRAPPED_ANGLES.get(task.split("-")[0], ())


def pose_targets(task: str, groups: dict[str, slice], state: torch.Tensor) -> torch.Tensor:
    """``[S, state_dim]`` states -> ``[S, P]`` probe targets: the pose entries in ``groups`` order, raw
    hinge angles (:data:`WRAPPED_ANGLES`) replaced by their sine and cosine."""
    parts = []
    for key, where in groups.items():
        value = state[:, where]
        parts += [value.sin(), value.cos()] if _wrapped(task, key) else [value]
    return torch.cat(parts, dim=1)


def pose_target_groups(task: str, groups: dict[str, slice]) -> dict[str, slice]:
    """Where each pose entry lies in :func:`pose_targets`' columns."""
    local, at = {}, 0
    for key, where in groups.items():
        width = (where.stop - where.start) * (2 if _wrapped(task, key) else 1)
        local[key] = slice(at, at + width)
        at += width
    return local


def reduce_dim(train: torch.Tensor, test: torch.Tensor, max_dim: int, seed: int = 0):
    """PCA to ``max_dim`` components fit on ``train`` ``[M, F]``; both sets projected (no-op if narrower)."""
    max_dim = min(max_dim, train.shape[0] - 1)  # PCA cannot give more components than samples
    if train.shape[1] <= max_dim:
        return train, test
    mean = train.mean(0, keepdim=True)
    torch.manual_seed(seed)
    _, _, basis = torch.pca_lowrank(train - mean, q=max_dim, center=False, niter=3)
    return (train - mean) @ basis, (test - mean) @ basis


@dataclass
class EpisodeFeatures:
    """One episode's per-step features and states.

    Attributes:
        task: simulator task name.
        features: ``[S, F]`` one flattened feature vector per step.
        state: ``[S, state_dim]`` the stored state at each step (its first frame, for tubelets).
        heldout: whether the episode is on the held-out side of the split.
    """

    task: str
    features: torch.Tensor
    state: torch.Tensor
    heldout: bool


@dataclass
class ProbeResult:
    """R² per task and pose entry, for the state and the change probe; per task, ``samples`` is
    ``(training steps, held-out steps, training episodes, held-out episodes)``."""

    state: dict[str, dict[str, float]] = field(default_factory=dict)
    change: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Flat ``probe/{state,change}/{task}`` (mean over the task's pose entries) and their means."""
        out: dict[str, float] = {}
        for kind in ("state", "change"):
            per_task = getattr(self, kind)
            for task, groups in per_task.items():
                out[f"probe/{kind}/{task}"] = float(np.mean(list(groups.values())))
            dmc = [out[f"probe/{kind}/{t}"] for t in per_task if not t.startswith("jaco")]
            if dmc:
                out[f"probe/{kind}/dmc_mean"] = float(np.mean(dmc))
        return out


READOUTS = ("linear", "mlp")
"""The probe's readouts: ridge regression, or :func:`lavid.metrics.probe.mlp_probe`."""


def _r2_per_group(train_x, train_y, test_x, test_y, groups: dict[str, slice], readout: str = "linear",
                  seed: int = 0) -> dict[str, float]:
    """R² of each pose entry, pooled over its columns: 1 − Σ residual² / Σ (y − held-out mean)².

    Pooled rather than averaged per column, so a column that hardly varies on the few held-out episodes
    (a Jaco joint that barely moved) cannot send the entry's score to −50.
    """
    if readout == "mlp":
        prediction = mlp_probe(train_x, train_y, test_x, test_y, seed=seed, return_prediction=True)["prediction"]
        prediction = prediction.double()
    else:
        prediction = fit_ridge(train_x, train_y, choose_ridge(train_x, train_y))(test_x)
    out = {}
    for key, where in groups.items():
        target = test_y[:, where]
        total = (target - target.mean(0)).pow(2).sum()
        if total > 1e-12:
            out[key] = float(1.0 - (prediction[:, where] - target).pow(2).sum() / total)
    return out


def probe_states(episodes: list[EpisodeFeatures], max_dim: int = 512, readout: str = "linear",
                 seed: int = 0) -> ProbeResult:
    """Fit the state and change probes per task on training episodes; R² on held-out ones.

    Args:
        readout: ``"linear"`` (ridge) or ``"mlp"`` (:func:`lavid.metrics.probe.mlp_probe`, seeded by ``seed``).

    Tasks without both training and held-out episodes are skipped (with a log line).

    Raises:
        ValueError: an unknown ``readout``.
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    result = ProbeResult()
    for task in sorted({e.task for e in episodes}):
        mine = [e for e in episodes if e.task == task]
        train = [e for e in mine if not e.heldout]
        test = [e for e in mine if e.heldout]
        if not train or not test:
            log.info("state probe: task %s has no %s episodes; skipped", task, "training" if not train else "held-out")
            continue
        groups = pose_groups(task, mine[0].state.shape[1])
        local = pose_target_groups(task, groups)

        def stack(side, change: bool):
            xs, ys = [], []
            for e in side:
                x, y = e.features.double(), pose_targets(task, groups, e.state.double())
                if change:
                    x, y = x[1:] - x[:-1], y[1:] - y[:-1]
                xs.append(x)
                ys.append(y)
            return torch.cat(xs), torch.cat(ys)

        for kind in ("state", "change"):
            train_x, train_y = stack(train, kind == "change")
            test_x, test_y = stack(test, kind == "change")
            train_x, test_x = reduce_dim(train_x, test_x, max_dim)
            getattr(result, kind)[task] = _r2_per_group(train_x, train_y, test_x, test_y, local, readout, seed)
        result.samples[task] = (sum(len(e.features) for e in train), sum(len(e.features) for e in test),
                                len(train), len(test))
    return result


def open_with_states(root):
    """``(ClipDataset, episodes table)`` of a simulator dataset, or ``None`` when it stores no states (videos)."""
    import datasets

    from lavid.data.clips import ClipDataset

    dataset = ClipDataset(root, columns=[])
    if dataset.steps is None or "state" not in dataset.steps.column_names:
        return None
    episodes = datasets.load_from_disk(str(dataset.root / "episodes"))
    if "task" not in episodes.column_names:
        raise StateProbeError(f"{root} stores states but its episodes have no task column")
    return dataset, episodes


@torch.no_grad()
def collect_episodes(encode, data, holdout_fraction: float, tubelet: int = 1, max_episodes: int = 24,
                     max_steps: int = 100, seed: int = 0) -> list[EpisodeFeatures]:
    """Encode up to ``max_episodes`` training and as many held-out episodes per task of each dataset.

    Args:
        encode: uint8 frames ``[1, T, 3, H, W]`` -> features ``[1, T/k, N, D]`` (a model's ``encode``).
        data: dataset folders (``DataConfig.sources()`` paths); folders without states are skipped.
        holdout_fraction: the training run's split (episodes are split exactly as training splits them).
        tubelet: frames per step; a step's state is that of its first frame.
        max_steps: steps read from the start of each episode.

    Raises:
        StateProbeError: a dataset's ``state`` column is missing on some rows or has the wrong length.
    """
    from lavid.data.clips import read_rows, split_by_episode

    out: list[EpisodeFeatures] = []
    generator = torch.Generator().manual_seed(seed)
    for path in data:
        opened = open_with_states(path)
        if opened is None:
            log.info("state probe: %s has no stored states; skipped", path)
            continue
        dataset, episodes = opened
        tasks = list(episodes["task"])
        train, heldout = split_by_episode(list(episodes["source"]), holdout_fraction)
        lengths = episodes["num_steps"]
        for side, indices in (("train", train), ("heldout", heldout)):
            by_task: dict[str, list[int]] = {}
            for i in indices:
                by_task.setdefault(tasks[i], []).append(i)
            for task, chosen in by_task.items():
                order = torch.randperm(len(chosen), generator=generator)[:max_episodes].tolist()
                for i in sorted(chosen[j] for j in order):
                    length = (min(int(lengths[i]), max_steps) // tubelet) * tubelet
                    if length < 2 * tubelet:
                        continue
                    rows = read_rows(dataset.steps, int(dataset.first_row[i]), length, ["frame", "state"])
                    state = torch.from_numpy(np.array(rows["state"], dtype=np.float32))
                    if state.ndim != 2 or state.shape[0] != length:
                        raise StateProbeError(f"{path}: the state column of episode {i} is not one vector per step")
                    frames = torch.from_numpy(np.array(rows["frame"], copy=True))[None]
                    features = encode(frames)[0].flatten(1).float().cpu()
                    out.append(EpisodeFeatures(task, features, state[::tubelet], side == "heldout"))
    return out


@torch.no_grad()
def model_episodes(model, data, holdout_fraction: float, max_episodes: int = 24, max_steps: int = 100,
                   seed: int = 0) -> list[EpisodeFeatures]:
    """:func:`collect_episodes` through ``model``'s (target) encoder, in eval mode (its mode restored after)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return collect_episodes(lambda frames: model.encode(frames.to(device), target=True), data,
                                holdout_fraction, model.config.encoder.tubelet, max_episodes, max_steps, seed)
    finally:
        model.train(was_training)


def probe_model(model, data, holdout_fraction: float, max_episodes: int = 24, max_steps: int = 100,
                seed: int = 0, readout: str = "linear") -> ProbeResult | None:
    """The state probe of ``model``'s (target) encoder on ``data``; ``None`` when no dataset stores states."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    episodes = model_episodes(model, data, holdout_fraction, max_episodes, max_steps, seed)
    return probe_states(episodes, readout=readout, seed=seed) if episodes else None


def format_table(result: ProbeResult) -> str:
    """A markdown table: task, train/held-out episodes and steps, state R², change R², each pose entry's
    state R². R² is relative to the held-out steps' own variance: with one held-out episode that is the
    motion within it, and the score says little (the episode counts are there to show it)."""
    lines = ["| task | episodes (train / held out) | steps (train / held out) | state R² | change R² | state R² per entry |",
             "|---|---|---|---|---|---|"]
    for task in result.state:
        state, change = result.state[task], result.change.get(task, {})
        entries = ", ".join(f"{k} {v:.2f}" for k, v in state.items())
        train, test, train_episodes, test_episodes = result.samples[task]
        lines.append(f"| {task} | {train_episodes} / {test_episodes} | {train} / {test} | {np.mean(list(state.values())):.3f} | "
                     f"{np.mean(list(change.values())) if change else float('nan'):.3f} | {entries} |")
    return "\n".join(lines)
