"""Every latent-action eval of one trained model on one set of clips, as a flat dict of numbers.

Representation-space errors (mean L1, the training loss's space): one-step with IDM latents, the copy
baseline, rollouts; the scene-cut leakage test; cycle-consistency transfer; rollouts from sampled
latents. With a pixel decoder: PSNR / SSIM (and LPIPS when available) of decoded one-step predictions
against the true frames, next to the decoder's own reconstruction quality (the ceiling). With real
actions: the action probes' R², linear and MLP, per task (action spaces differ between tasks) and averaged,
each beside its ceiling: the same probe from the true poses at both ends of the same transitions, where
the clips store simulator states (a linear readout of two poses explains only about 0.3 of the DMControl
actions, so a probe's R² reads as a fraction of its ceiling, not of 1).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from lavid.data.actions import transition_actions
from lavid.data.eval_data import EvalClips
from lavid.metrics import leakage, transfer
from lavid.metrics.image_metrics import psnr, ssim
from lavid.metrics.probe import MLP_MIN_TRAIN, linear_probe, mlp_probe
from lavid.metrics.sampling import has_sampler, sample_metrics, sampled_rollouts
from lavid.training.evaluation import transition_errors

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_clips(model, frames: torch.Tensor, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[M, T, 3, H, W]`` -> ``(states, targets)`` ``[M, S, N, D]`` on the model's device."""
    device = next(model.parameters()).device
    states, targets = [], []
    for start in range(0, frames.shape[0], batch_size):
        chunk = frames[start : start + batch_size].to(device)
        s = model.encode(chunk)
        states.append(s)
        targets.append(model.encode(chunk, target=True) if model.target_encoder is not None else s)
    return torch.cat(states), torch.cat(targets)


def pair_across_videos(episodes: torch.Tensor, states: torch.Tensor, targets: torch.Tensor,
                       pool_episodes: torch.Tensor, pool_states: torch.Tensor, pool_targets: torch.Tensor,
                       generator: torch.Generator | None = None, groups: torch.Tensor | None = None,
                       pool_groups: torch.Tensor | None = None) -> tuple[torch.Tensor, ...] | None:
    """Each clip A with a random clip B of another video from the pool (of A's own group, e.g. task,
    when ``groups`` / ``pool_groups`` are given); ``None`` if no pair exists.

    Returns:
        ``(states_a, targets_a, states_b, targets_b)``, each ``[P, S, N, D]``.
    """
    partners = leakage.pair_with_other_episodes(episodes, generator, pool_episodes, groups, pool_groups)
    valid = (partners >= 0).nonzero().flatten()
    if not len(valid):
        return None
    b = partners[valid]
    return states[valid], targets[valid], pool_states[b], pool_targets[b]


@torch.no_grad()
def scene_pairs(model, config, clips: int, seed: int = 0, same_task: bool = False) -> tuple[torch.Tensor, ...]:
    """Held-out clips A paired with clips B of other videos (held-out or training) for leakage / transfer.

    Args:
        config: the run's :class:`~lavid.data.data_config.DataConfig`.
        same_task: B comes from another episode of A's own simulator task (a cut between two scenes of
            the kind the model was trained on), not from any other video.

    Returns:
        ``(states_a, targets_a, states_b, targets_b)``, each ``[P, S, N, D]``.

    Raises:
        ValueError: the data has a single video, so no pair of different scenes exists.
    """
    from lavid.data.eval_data import load_split

    heldout = load_split(config, "heldout", clips, seed=seed, actions=False)
    train = load_split(config, "train", clips, seed=seed, actions=False)
    states, targets = encode_clips(model, torch.cat([heldout.frames, train.frames]))
    count = len(heldout)
    groups = pool_groups = None
    if same_task:
        names = sorted(set(heldout.tasks) | set(train.tasks))
        pool_groups = torch.tensor([names.index(t) for t in heldout.tasks + train.tasks])
        groups = pool_groups[:count]
    pairs = pair_across_videos(heldout.episodes, states[:count], targets[:count],
                               torch.cat([heldout.episodes, train.episodes]), states, targets,
                               torch.Generator().manual_seed(seed), groups, pool_groups)
    if pairs is None:
        what = "one episode per task" if same_task else "one video"
        raise ValueError(f"every clip of {config.data} comes from {what}: no pair of different scenes")
    return pairs


def _batched(function, *tensors: torch.Tensor, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Apply ``function`` to batches of the leading dimension and concatenate its per-clip outputs."""
    outputs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, tensors[0].shape[0], batch_size):
        result = function(*(t[start : start + batch_size] for t in tensors))
        for key, value in result.items():
            outputs.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in outputs.items()}


@torch.no_grad()
def prediction_errors(model, states: torch.Tensor, targets: torch.Tensor, horizon: int) -> dict[str, float]:
    """One-step (IDM latents), copy-last-step (target vs target), shuffled-latent and rollout errors over
    clips ``[M, S, N, D]``, with the same definitions as training's held-out eval (:mod:`lavid.training.evaluation`;
    latents are shuffled within batches of 16 clips)."""

    def per_clip(s, t):
        latents = model.infer_latents(s)[0]
        rolled = model.rollout(s[:, :1], latents[:, :horizon])
        errors = transition_errors(model, s, t, latents)
        return {"one_step": errors["one_step"], "copy": errors["copy"], "shuffled": errors["shuffled"],
                "rollout": (rolled - t[:, 1 : 1 + horizon]).abs().flatten(1).mean(-1)}

    errors = _batched(per_clip, states, targets)
    one_step, copy, shuffled = (errors[k].mean().item() for k in ("one_step", "copy", "shuffled"))
    return {"error/one_step": one_step, "error/copy": copy, "error/one_step_over_copy": one_step / copy,
            "error/shuffled": shuffled, "error/latent_gain": shuffled / one_step,
            "error/rollout": errors["rollout"].mean().item()}


@torch.no_grad()
def pixel_metrics(model, decoder, frames: torch.Tensor, states: torch.Tensor, targets: torch.Tensor,
                  lpips=None) -> dict[str, float]:
    """Decoded one-step predictions vs the true next frames, and the decoder's reconstructions of them."""
    sums: dict[str, float] = {}
    count = 0
    device = next(decoder.parameters()).device
    tubelet = frames.shape[1] // states.shape[1]
    for start in range(0, frames.shape[0], 16):
        s, t = states[start : start + 16], targets[start : start + 16]
        truth = frames[start : start + 16, tubelet:].to(device).float() / 255.0  # frames of steps 1..S-1
        latents = model.infer_latents(s)[0]
        predicted = decoder(model.predict(s[:, :-1], latents)).clamp(0, 1)
        reconstructed = decoder(t[:, 1:]).clamp(0, 1)
        values = {"pixel/psnr": psnr(predicted, truth), "pixel/ssim": ssim(predicted, truth),
                  "pixel/recon_psnr": psnr(reconstructed, truth), "pixel/recon_ssim": ssim(reconstructed, truth)}
        if lpips is not None:
            values["pixel/lpips"] = lpips(predicted, truth)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value.sum().item()
        count += truth.shape[0] * truth.shape[1]
    return {key: value / count for key, value in sums.items()}


def by_task(clips: EvalClips, tubelet: int, *per_transition) -> dict[str, tuple[torch.Tensor, ...]]:
    """Per task, over the clips that have actions: each of ``per_transition`` (``[B, S-1, F]``, or a list
    of ``B`` per-clip ``[S-1, F]`` or ``None``; clips with a ``None`` are left out) as ``[M, F]``, then the
    transitions' actions ``[M, A]``."""
    grouped: dict[str, list[tuple[torch.Tensor, ...]]] = {}
    for i, actions in enumerate(clips.actions):
        values = [per_clip[i] for per_clip in per_transition]
        if actions is not None and clips.tasks[i] and all(v is not None for v in values):
            grouped.setdefault(clips.tasks[i], []).append((*values, transition_actions(actions[None], tubelet)[0]))
    return {task: tuple(torch.cat(parts) for parts in zip(*rows)) for task, rows in grouped.items()}


def transition_poses(clips: EvalClips, tubelet: int) -> list[torch.Tensor | None]:
    """Per clip: the true pose at both ends of each step transition, ``[S-1, 2P]`` (the state probe's pose
    targets, :func:`lavid.metrics.state_probe.pose_targets`, of the stored state at each step's first
    frame: step ``s``'s and step ``s+1``'s, side by side), or ``None`` where the clip stores no state or
    its task's pose layout cannot be read (no simulator here, or a state of the wrong length: logged once
    per task)."""
    from lavid.metrics.state_probe import StateProbeError, pose_groups, pose_targets

    out: list[torch.Tensor | None] = []
    failed: set[str] = set()
    for i, task in enumerate(clips.tasks):
        state = clips.state(i)
        if state is None or not task or task in failed:
            out.append(None)
            continue
        try:
            groups = pose_groups(task, state.shape[1])
        except StateProbeError as error:
            log.warning("action probe ceiling of %s skipped: %s", task, error)
            failed.add(task)
            out.append(None)
            continue
        steps = state.shape[0] // tubelet
        pose = pose_targets(task, groups, state[: steps * tubelet : tubelet].double())
        out.append(torch.cat([pose[:-1], pose[1:]], dim=1))
    return out


def poses_and_actions(clips: EvalClips, tubelet: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per task: ``(poses at t and t+1 [M, 2P], actions [M, A])`` of every transition of the clips that have
    actions and stored states (:func:`transition_poses`); empty when no clip has states."""
    if not any(state is not None for state in clips.states):
        return {}
    return by_task(clips, tubelet, transition_poses(clips, tubelet))


def action_ceilings(fit: dict[str, tuple[torch.Tensor, torch.Tensor]], test: dict[str, tuple[torch.Tensor, torch.Tensor]],
                    transitions: dict[str, tuple[int, int]], seed: int = 0) -> dict[str, dict[str, float]]:
    """What the true poses show of the action: per task, the linear and the MLP probe from the pose at
    t and t+1 to the action, fit on the training clips' transitions and scored on the held-out ones'.

    Args:
        fit, test: :func:`poses_and_actions` of the training and the held-out clips.
        transitions: per task, ``(training, held-out)`` transitions of the latent probes the ceilings go
            with; a task is scored only when its poses cover exactly as many (the same transitions).

    Returns:
        ``{task: {"linear": R², "mlp": R²}}`` (``"mlp"`` only with >= :data:`MLP_MIN_TRAIN` training
        transitions); empty where the clips store no states.
    """
    out = {}
    for task in sorted(set(fit) & set(test) & set(transitions)):
        (x, actions), (x_test, actions_test) = fit[task], test[task]
        if (len(x), len(x_test)) != tuple(transitions[task]) or len(x) < 2:
            continue
        out[task] = {"linear": linear_probe(x, actions, x_test, actions_test)["r2_mean"]}
        if len(x) >= MLP_MIN_TRAIN:
            out[task]["mlp"] = mlp_probe(x, actions, x_test, actions_test, seed=seed)["r2_mean"]
    return out


def conditional_probes(fit_z: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       test_z: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       fit_poses: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       test_poses: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       seed: int = 0) -> dict[str, dict[str, float]]:
    """Is the action in z *given the state it was taken in*? Per task, two MLP probes to the action:

    - ``pose_mlp``: from the true pose at t alone (what the state says of the action: about 0 where the
      policy ignores the state, as white noise does);
    - ``z_pose_mlp``: from z and the pose at t side by side.

    An IDM's z may code what the action did (the frames' change), which is the action only through the
    state: a latent that is such a state-dependent code scores low from z alone and high given the pose.
    The ceiling that goes with both is the MLP from the poses at t and t+1 (:func:`action_ceilings`).

    Args:
        fit_z, test_z: per task ``(z [M, C], actions [M, A])`` of the training and the held-out transitions.
        fit_poses, test_poses: per task ``(poses at t and t+1 [M, 2P], actions [M, A])`` of the same
            transitions (:func:`poses_and_actions`); a task is scored only where both cover exactly as many.

    Returns:
        ``{task: {"pose_mlp": R², "z_pose_mlp": R²}}`` for the tasks with >= :data:`MLP_MIN_TRAIN` training
        transitions.
    """
    out = {}
    for task in sorted(set(fit_z) & set(test_z) & set(fit_poses) & set(test_poses)):
        (z, actions), (z_test, actions_test) = fit_z[task], test_z[task]
        poses, poses_test = fit_poses[task][0], test_poses[task][0]
        if (len(poses), len(poses_test)) != (len(z), len(z_test)) or len(z) < MLP_MIN_TRAIN:
            continue
        half = poses.shape[1] // 2  # the pose at t; the second half is the pose at t+1
        pose, pose_test = poses[:, :half].float(), poses_test[:, :half].float()
        out[task] = {
            "pose_mlp": mlp_probe(pose, actions, pose_test, actions_test, seed=seed)["r2_mean"],
            "z_pose_mlp": mlp_probe(torch.cat([z.float(), pose], 1), actions,
                                    torch.cat([z_test.float(), pose_test], 1), actions_test, seed=seed)["r2_mean"],
        }
    return out


def _mean(values) -> float | None:
    """The mean of the finite ``values`` (``None`` when there is none)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def _latents_and_actions(model, clips: EvalClips, states: torch.Tensor, tubelet: int):
    """Per task: ``(latents [M, C], actions [M, A])`` of every transition of the clips that have actions."""
    return by_task(clips, tubelet, model.infer_latents(states)[0].cpu())


PROBE_KINDS = ("r2", "r2_mlp", "ceiling", "ceiling_mlp")
"""The action probes :func:`probe_metrics` reports: linear and MLP from z, and each one's ceiling."""


@torch.no_grad()
def probe_metrics(model, train: EvalClips, train_states: torch.Tensor, heldout: EvalClips,
                  heldout_states: torch.Tensor, tubelet: int, seed: int = 0) -> dict[str, Any]:
    """Probes latent z -> real action per task, fit on ``train``'s transitions and scored on ``heldout``'s.

    Keys, per task and averaged over the tasks that have them (``..._mean``):

    - ``probe/r2/{task}``: the linear probe (:func:`lavid.metrics.probe.linear_probe`); ``probe/r2_mean``;
    - ``probe/r2_mlp/{task}``: the MLP probe (:func:`lavid.metrics.probe.mlp_probe`, seeded with ``seed``);
      ``probe/r2_mlp_mean``;
    - ``probe/ceiling/{task}``, ``probe/ceiling_mlp/{task}``: the same two probes from the true poses at t
      and t+1 of the same transitions instead of z (:func:`action_ceilings`; only where both splits'
      clips store simulator states, ``load_split(..., states=True)``); ``probe/ceiling_mean``,
      ``probe/ceiling_mlp_mean``.
    """
    if model.idm is None:
        return {}
    fit = _latents_and_actions(model, train, train_states, tubelet)
    test = _latents_and_actions(model, heldout, heldout_states, tubelet)
    tasks = [task for task in sorted(set(fit) & set(test)) if len(fit[task][0]) >= 2]
    per_task: dict[str, dict[str, float]] = {}
    for task in tasks:
        per_task[task] = {"r2": linear_probe(*fit[task], *test[task])["r2_mean"]}
        if len(fit[task][0]) >= MLP_MIN_TRAIN:
            per_task[task]["r2_mlp"] = mlp_probe(*fit[task], *test[task], seed=seed)["r2_mean"]
    counts = {task: (len(fit[task][0]), len(test[task][0])) for task in tasks}
    ceilings = action_ceilings(poses_and_actions(train, tubelet), poses_and_actions(heldout, tubelet), counts, seed)
    for task, ceiling in ceilings.items():
        per_task[task]["ceiling"] = ceiling["linear"]
        if "mlp" in ceiling:
            per_task[task]["ceiling_mlp"] = ceiling["mlp"]
    results: dict[str, Any] = {}
    for kind in PROBE_KINDS:
        for task, row in per_task.items():
            if kind in row:
                results[f"probe/{kind}/{task}"] = row[kind]
        mean = _mean(row.get(kind) for row in per_task.values())
        if mean is not None:
            results[f"probe/{kind}_mean"] = mean
    return results


@torch.no_grad()
def action_probe(model, data_config, train_clips: int = 3000, heldout_clips: int = 1000,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """Is z the action? Per task, probes to the true actions of each transition, fit on training clips and
    scored (R²) on held-out clips of ``data_config``'s split: ridge and MLP probes from the IDM latent z,
    a ridge probe from the model's own feature change ``s_t+1 − s_t`` (what the two frames show of the
    action at all), and, where the data stores simulator states, the ridge and MLP probes from the true
    poses at t and t+1 of the same transitions (each z probe's ceiling: :func:`action_ceilings`) and the MLP
    probes from the pose at t with and without z (:func:`conditional_probes`: the action in z given its state).

    The clips' frames are held in memory while they are encoded (3,000 clips of 8 frames at 64² are
    0.3 GB). On the default data 600 / 300 clips gave noisy, low figures (finger 0.29, cartpole −0.29
    where 3,000 / 1,000 give 0.31 and −0.02; more changes nothing: BENCHMARKS.md).

    Returns:
        ``{task: {"z": R², "z_mlp": R², "change": R², "ceiling": R², "ceiling_mlp": R², "pose_mlp": R²,
        "z_pose_mlp": R², "train": transitions, "heldout": transitions}}`` (the MLP probes need >=
        :data:`MLP_MIN_TRAIN` training transitions; the ceilings and :func:`conditional_probes`' ``pose_mlp`` /
        ``z_pose_mlp`` stored states); empty when no clip has actions on both sides of the split (videos) or
        the model infers no latent.
    """
    from lavid.data.clips import ClipDataset
    from lavid.data.eval_data import load_split

    if model.action_conditioned or model.idm is None:
        return {}
    if not any("action" in ClipDataset(path, columns=["action"]).step_columns for path, _ in data_config.sources()):
        return {}  # videos: no clip has actions, so do not load and encode thousands of clips for nothing
    tubelet = model.config.encoder.tubelet

    def transitions(split: str, count: int) -> tuple[dict[str, tuple[torch.Tensor, ...]], dict]:
        """Per task ``(z, change, actions)`` and ``(poses at t and t+1, actions)`` of the split's transitions."""
        clips = load_split(data_config, split, count, seed=seed, states=True)
        if all(actions is None for actions in clips.actions):
            return {}, {}
        states, _ = encode_clips(model, clips.frames)
        change = (states[:, 1:] - states[:, :-1]).flatten(2).cpu()
        return (by_task(clips, tubelet, model.infer_latents(states)[0].cpu(), change),
                poses_and_actions(clips, tubelet))

    was_training = model.training
    model.eval()
    try:
        fit, fit_poses = transitions("train", train_clips)
        test, test_poses = transitions("heldout", heldout_clips) if fit else ({}, {})
    finally:
        model.train(was_training)
    out = {}
    for task in sorted(set(fit) & set(test)):
        (z, change, actions), (z_test, change_test, actions_test) = fit[task], test[task]
        if len(z) < 2:
            continue
        out[task] = {"z": linear_probe(z, actions, z_test, actions_test)["r2_mean"]}
        if len(z) >= MLP_MIN_TRAIN:
            out[task]["z_mlp"] = mlp_probe(z, actions, z_test, actions_test, seed=seed)["r2_mean"]
        out[task].update(change=linear_probe(change, actions, change_test, actions_test)["r2_mean"],
                         train=len(z), heldout=len(z_test))
    if out:
        counts = {task: (row["train"], row["heldout"]) for task, row in out.items()}
        for task, ceiling in action_ceilings(fit_poses, test_poses, counts, seed).items():
            out[task]["ceiling"] = ceiling["linear"]
            if "mlp" in ceiling:
                out[task]["ceiling_mlp"] = ceiling["mlp"]
        latents = {task: (z, actions) for task, (z, _, actions) in fit.items()}
        latents_test = {task: (z, actions) for task, (z, _, actions) in test.items()}
        for task, row in conditional_probes(latents, latents_test, fit_poses, test_poses, seed).items():
            out[task].update(row)
    return out


ACTION_PROBE_COLUMNS = (  # (key of an action_probe row, header)
    ("z", "R² from z, linear"),
    ("ceiling", "linear ceiling (true poses t, t+1)"),
    ("z_mlp", "R² from z, MLP"),
    ("ceiling_mlp", "MLP ceiling (true poses t, t+1)"),
    ("change", "R² from the feature change, linear"),
    ("pose_mlp", "MLP from the pose at t alone"),
    ("z_pose_mlp", "MLP from z and the pose at t"),
)


def format_action_probe(result: dict[str, dict[str, float]]) -> str:
    """:func:`action_probe` as a markdown table: each z probe next to its ceiling from the true poses (a
    dash where there is none), and a last row with the means over the tasks that have each."""

    def number(value) -> str:
        return "–" if value is None or math.isnan(value) else f"{value:.3f}"

    lines = ["| task | transitions (train / held out) | " + " | ".join(h for _, h in ACTION_PROBE_COLUMNS) + " |",
             "|---|---|" + "---|" * len(ACTION_PROBE_COLUMNS)]
    for task, row in result.items():
        lines.append(f"| {task} | {row['train']} / {row['heldout']} | "
                     + " | ".join(number(row.get(k)) for k, _ in ACTION_PROBE_COLUMNS) + " |")
    if len(result) > 1:
        lines.append("| mean | | " + " | ".join(number(_mean(row.get(k) for row in result.values()))
                                               for k, _ in ACTION_PROBE_COLUMNS) + " |")
    return "\n".join(lines)


@torch.no_grad()
def evaluate_latents(model, heldout: EvalClips, horizon: int, train: EvalClips | None = None, decoder=None,
                     lpips=None, samples: int = 4, seed: int = 0) -> dict[str, Any]:
    """All evals of ``model`` on ``heldout``.

    ``train`` clips (optional) fit the action probes (:func:`probe_metrics`; their ceilings need both
    splits loaded with ``states=True``) and add scene-cut / transfer partners from other videos; they are
    never scored themselves. ``horizon`` is capped at the clips' steps − 1.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    states, targets = encode_clips(model, heldout.frames)
    steps = states.shape[1]
    horizon = min(horizon, steps - 1)
    results: dict[str, Any] = {"clips": len(heldout), "steps_per_clip": steps}
    results.update(prediction_errors(model, states, targets, horizon))

    # partners B come from other videos: held-out ones, and training ones too when given (a scene cut only
    # needs another scene; the model is never asked to predict B's frames before the cut)
    pool_states, pool_targets, pool_episodes = states, targets, heldout.episodes
    train_states = None
    if train is not None:
        train_states, train_targets = encode_clips(model, train.frames)
        pool_states, pool_targets = torch.cat([states, train_states]), torch.cat([targets, train_targets])
        pool_episodes = torch.cat([heldout.episodes, train.episodes])
    pairs = pair_across_videos(heldout.episodes, states, targets, pool_episodes, pool_states, pool_targets, generator)
    if pairs is not None:
        cut = steps // 2
        errors = _batched(lambda sa, ta, sb, tb: leakage.scene_cut_errors(model, sa, ta, sb, tb, cut), *pairs)
        results.update(leakage.summarize(errors))
        cycled = _batched(lambda sa, ta, sb: {k: v for k, v in transfer.cycle_transfer(model, sa, ta, sb, horizon).items()
                                              if k in ("own", "cycle")}, *pairs[:3])
        results.update(transfer.summarize(cycled))
    else:
        log.warning("leakage and transfer skipped: every clip comes from one video")

    if has_sampler(model):
        sampled = _batched(lambda s, t: sample_metrics(sampled_rollouts(model, s[:, :1], horizon, samples, generator),
                                                       t[:, 1 : 1 + horizon]), states, targets)
        results.update({f"sample/{key}": value.mean().item() for key, value in sampled.items()})

    if decoder is not None:
        results.update(pixel_metrics(model, decoder, heldout.frames, states, targets, lpips))
    if train_states is not None and any(a is not None for a in heldout.actions):
        tubelet = heldout.frames.shape[1] // steps
        results.update(probe_metrics(model, train, train_states, heldout, heldout_states=states, tubelet=tubelet,
                                     seed=seed))
    return results
