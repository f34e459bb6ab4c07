"""Fit the controller c(a_t, s_t) -> z_t of a trained latent-action world model on a few labeled episodes.

The world model and its IDM learned from every training clip without actions. The controller is the
only part that sees actions, and only those of ``labeled_fraction`` of the training episodes (chosen by
seed); its targets are the frozen IDM's latents of the same transitions, in eval mode (the noisy
family's mean). With ``prediction_weight > 0`` it also learns through the frozen world model: the
prediction from ``s_t`` and the controller's z should be ``s_t+1`` (what planning needs of z, whatever
directions of z the predictor ignores). With ``imagined_rounds > 0`` it then also learns from the states it
meets in a plan: the labeled windows are imagined through the world model with its own latents, from one
frame and from two, and each imagined step (the model's predicted states, the true action) joins the
training set with the IDM's latent of the true transition as target; the controller trains on again, once a
round (aggregated as in DAgger). With ``validation_fraction > 0`` some labeled episodes are held back from the
fit and choose its length (the weights of the lowest latent error on them are kept): fit long on few labels, the
controller learns each training episode by heart instead of the action's effect (BENCHMARKS.md, issue 34 part 16).
The ``sequence`` controller trains on windows instead: the two observed
states before a window, its ``controller.horizon`` actions, and the IDM's latents of its transitions as targets.
Held-out episodes then say how well controller latents stand in
for the IDM's:

- ``latent_r2``: R² of the controller's z against the IDM's z (``latent_r2_first``: on the windows' first
  steps only, seen as a plan's first step is: one image, no past; the ``sequence`` controller maps each
  window's actions from its first image, so every step of it is seen so; ``latent_r2_fit``: the same on the
  episodes it was fit on, at most 100: the gap to the held-out one is what it learned by heart);
- one-step prediction error with the controller's z ÷ with the IDM's z, and ÷ copying the last state;
- the same for an open-loop rollout over a clip (the controller sees the model's own predictions), the
  reference paper's ratio (×1.00–×1.5 there);
- ``action_gain``: rollout error with actions rolled across the batch ÷ with the right ones (> 1 means
  the controller's latents depend on the action).

Writes ``controller.safetensors``, ``controller.yaml`` (its config and the run it belongs to) and
``metrics.json`` into ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lavid.planning.controller import Controller, ControllerConfig
from lavid.planning.dynamics import ActionDynamics, pairs
from lavid.core.config import check, from_dict, load_yaml, to_dict
from lavid.data.actions import pad_actions
from lavid.data.clips import split_by_episode
from lavid.data.data_config import DataConfig
from lavid.data.goals import episode_table, read_episode
from lavid.data.training_data import data_action_dim
from lavid.training.runs import LoadedRun, load_run

log = logging.getLogger(__name__)
WEIGHTS, CONFIG = "controller.safetensors", "controller.yaml"


@dataclass
class ControllerTrainConfig:
    """Attributes:
        run: the trained latent-action world model (an ``out_dir`` of ``lavid/train.py``).
        data: the trajectory data whose labeled episodes train the controller ("" = the run's own data);
            the run's train / held-out split is used.
        out_dir: where the controller goes.
        labeled_fraction: share of the training episodes whose actions the controller may use, in (0, 1].
        steps, batch_size, lr, weight_decay: AdamW on L2 to the IDM's latents.
        prediction_weight: weight of the world-model term: the one-step prediction error from ``s_t`` with the
            controller's z, ÷ copying ``s_t`` (so 1 weighs it like the latent error ÷ the latents' variance).
        history_dropout: share of the training transitions shown as a plan's first step sees them, without
            their past (``s_t`` twice, no previous action): a plan starts from one image of an arm in motion,
            which without this only looks like an episode's first step, at rest.
        imagined_rounds: rounds of training on the states the controller meets in its own imagined rollouts
            (windows of ``eval_frames`` of the labeled episodes), ``steps`` more steps each.
        eval_frames: length of the held-out windows for the rollout comparison, and of the imagined windows.
        validation_fraction: share of the labeled episodes (at least one) held back from the fit to choose its
            length: every ``validation_every`` steps the latent error on their transitions (``sequence``: windows) is
            measured and the weights with the lowest are kept (0: the last step's weights, none held back). They
            are labeled episodes all the same: the labeled count does not change.
        validation_every: steps between two validation checks.
        pseudo_labeled_fraction: ``sequence`` only: this share of the training episodes more, drawn from the
            unlabeled ones, joins the fit with pseudo-actions: an :class:`ActionDecoder` fit on the labeled
            transitions reads each transition's action back from the IDM's latent and the transition's two states.
            The controller still sees only ``labeled_fraction`` of the true actions.
    """

    run: str = ""
    data: str = ""
    out_dir: str = "runs/controller"
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    labeled_fraction: float = 0.1
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    prediction_weight: float = 0.0
    history_dropout: float = 0.0
    imagined_rounds: int = 0
    eval_frames: int = 8
    pseudo_labeled_fraction: float = 0.0
    validation_fraction: float = 0.0
    validation_every: int = 100
    seed: int = 0
    progress: bool = True

    def validate(self, prefix: str = "") -> None:
        check(bool(self.run), "run", "name the latent-action run to control (run=RUN_DIR)")
        check(0 < self.labeled_fraction <= 1, "labeled_fraction", f"must be in (0, 1], got {self.labeled_fraction}")
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.prediction_weight >= 0, "prediction_weight", f"must be >= 0, got {self.prediction_weight}")
        check(0 <= self.history_dropout <= 1, "history_dropout", f"must be in [0, 1], got {self.history_dropout}")
        check(self.imagined_rounds >= 0, "imagined_rounds", f"must be >= 0, got {self.imagined_rounds}")
        check(0 <= self.validation_fraction < 1, "validation_fraction",
              f"must be in [0, 1), got {self.validation_fraction}")
        check(self.validation_every >= 1, "validation_every", f"must be >= 1, got {self.validation_every}")
        check(self.eval_frames >= 2, "eval_frames", f"must be >= 2, got {self.eval_frames}")
        check(self.imagined_rounds == 0 or self.eval_frames >= 3, "eval_frames",
              f"imagined rounds need windows of >= 3 frames, got {self.eval_frames}")
        check(0 <= self.pseudo_labeled_fraction <= 1 - self.labeled_fraction, "pseudo_labeled_fraction",
              f"must be in [0, 1 - labeled_fraction = {1 - self.labeled_fraction:g}], got "
              f"{self.pseudo_labeled_fraction}")
        check(not self.pseudo_labeled_fraction or self.controller.variant == "sequence", "pseudo_labeled_fraction",
              "is for the sequence controller")
        if self.controller.variant == "sequence":
            for name in ("prediction_weight", "imagined_rounds"):
                check(not getattr(self, name), name, "is for the step-by-step controllers, not the sequence one "
                                                     "(it never reads an imagined state)")
            check(self.eval_frames - 1 <= self.controller.horizon, "eval_frames",
                  f"the held-out windows' {self.eval_frames - 1} actions exceed controller.horizon "
                  f"{self.controller.horizon}")


@dataclass
class Transitions:
    """Labeled transitions: ``actions [M, A]``, ``states [M, 2, N, D]`` (s_t−1, s_t), ``latents [M, C]`` (the IDM's
    z_t), ``following [M, N, D]`` (s_t+1; ``None`` when not collected) and ``previous [M, A]`` (a_t−1, zeros at an
    episode's first step; ``None`` when not collected)."""

    actions: torch.Tensor
    states: torch.Tensor
    latents: torch.Tensor
    following: torch.Tensor | None = None
    previous: torch.Tensor | None = None


@dataclass
class Sequences:
    """Labeled episodes for the ``sequence`` controller, one after another: ``states [S, N, D]``, ``actions [S, A]``
    and ``latents [S, C]`` (the IDM's z of step t -> t+1; zeros at an episode's last step, which has none),
    ``first [S]`` (the index of each step's episode's first step) and ``starts [M]`` (the steps a window of
    ``horizon`` transitions starts at)."""

    states: torch.Tensor
    actions: torch.Tensor
    latents: torch.Tensor
    first: torch.Tensor
    starts: torch.Tensor
    horizon: int

    @property
    def transitions(self) -> torch.Tensor:
        """``[M]`` the steps that have a transition (every step but an episode's last)."""
        last = torch.ones_like(self.first, dtype=torch.bool)
        last[:-1] = self.first[1:] != self.first[:-1]
        return torch.nonzero(~last)[:, 0]

    def concat(self, other: Sequences) -> Sequences:
        """These episodes and then ``other``'s, as one set."""
        offset = self.states.shape[0]
        return Sequences(torch.cat([self.states, other.states]), torch.cat([self.actions, other.actions]),
                         torch.cat([self.latents, other.latents]), torch.cat([self.first, other.first + offset]),
                         torch.cat([self.starts, other.starts + offset]), self.horizon)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Windows from ``starts[index]`` (``[B]``): observed states ``[B, 2, N, D]`` (``s_t−1, s_t``; ``s_t``
        twice at an episode's first step), actions ``[B, H, A]`` and target latents ``[B, H, C]``."""
        start = self.starts[index]
        before = torch.maximum(start - 1, self.first[start])
        steps = start[:, None] + torch.arange(self.horizon, device=start.device)
        return (torch.stack([self.states[before], self.states[start]], dim=1), self.actions[steps],
                self.latents[steps])


class ActionDecoder(torch.nn.Module):
    """``latents [B, C]`` (the IDM's z of s_t -> s_t+1) and ``states [B, 2, N, D]`` (s_t, s_t+1) -> actions
    ``[B, A]``: the action read back from a transition's latent, to pseudo-label the episodes without actions.
    The attention controller's network the other way round: z embedded, reading the two states' tokens."""

    def __init__(self, latent_dim: int, state_dim: int, num_tokens: int, action_dim: int) -> None:
        super().__init__()
        self.net = Controller(ControllerConfig(variant="attention"), latent_dim, state_dim, num_tokens, action_dim)

    def forward(self, latents: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.net(latents, states)


def transition_states(data: Sequences, rows: torch.Tensor) -> torch.Tensor:
    """The states of transitions ``rows [B]`` (steps with a next one): ``[B, 2, N, D]`` (s_t, s_t+1)."""
    return torch.stack([data.states[rows], data.states[rows + 1]], dim=1)


def fit_action_decoder(data: Sequences, steps: int = 2000, seed: int = 0, batch_size: int = 256
                       ) -> tuple[ActionDecoder, float | None]:
    """An :class:`ActionDecoder` fit on the transitions of every labeled episode but each tenth (the last one of
    fewer than ten; AdamW, L2), and its R² on those left out (``None`` with a single episode)."""
    rows = data.transitions
    episode = torch.unique(data.first, return_inverse=True)[1][rows]
    count = int(episode.max()) + 1
    held = (episode % 10 == 9) if count >= 10 else (episode == count - 1) if count >= 2 else episode < 0
    train, test = rows[~held], rows[held]
    generator = torch.Generator().manual_seed(seed)
    decoder = ActionDecoder(data.latents.shape[-1], data.states.shape[-1], data.states.shape[-2],
                            data.actions.shape[-1]).to(data.states.device)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    with torch.enable_grad():
        for _ in range(steps):
            index = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=generator).to(
                train.device)]
            predicted = decoder(data.latents[index], transition_states(data, index))
            loss = (predicted - data.actions[index]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    decoder.eval()
    if len(test) == 0:
        return decoder, None
    truth = data.actions[test]
    with torch.no_grad():
        predicted = decoder(data.latents[test], transition_states(data, test))
    return decoder, float(1 - (predicted - truth).pow(2).sum() / (truth - truth.mean(0)).pow(2).sum())


@torch.no_grad()
def pseudo_label(data: Sequences, decoder: ActionDecoder, low: torch.Tensor, high: torch.Tensor) -> Sequences:
    """``data`` with each transition's action replaced by ``decoder``'s, clipped to ``[low, high]`` (the labeled
    actions' range per entry)."""
    rows = data.transitions
    actions = torch.zeros_like(data.actions)
    decoded = torch.cat([decoder(data.latents[part], transition_states(data, part)) for part in rows.split(1024)])
    actions[rows] = torch.maximum(torch.minimum(decoded, high), low)
    return Sequences(data.states, actions, data.latents, data.first, data.starts, data.horizon)


def split_episodes(data: str, holdout_fraction: float) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """``(train, held out)`` episodes ``(dataset, row)`` of every trajectory source in ``data``, split as in
    training (:func:`lavid.data.clips.split_by_episode` over episode identities)."""
    train, heldout = [], []
    for path, _ in DataConfig(data=data).sources():
        sources = list(episode_table(path)["source"])
        train_rows, held_rows = split_by_episode(sources, holdout_fraction)
        train += [(path, row) for row in train_rows]
        heldout += [(path, row) for row in held_rows]
    return train, heldout


def count_transitions(episodes: list[tuple[str, int]]) -> int:
    """Distinct transitions of ``episodes`` (an episode of L steps has L − 1)."""
    steps = {path: episode_table(path)["num_steps"] for path in {p for p, _ in episodes}}
    return sum(int(steps[path][row]) - 1 for path, row in episodes)


def choose_labeled(episodes: list[tuple[str, int]], fraction: float, seed: int) -> list[tuple[str, int]]:
    """``floor(fraction · len)`` of ``episodes`` (at least one, so never more than the fraction asked for
    unless it is less than one episode), drawn with ``seed``."""
    count = max(1, math.floor(fraction * len(episodes) + 1e-9))
    order = torch.randperm(len(episodes), generator=torch.Generator().manual_seed(seed)).tolist()
    return [episodes[i] for i in sorted(order[:count])]


@torch.no_grad()
def encoded_episodes(run: LoadedRun, episodes: list[tuple[str, int]], device: torch.device, chunk: int = 256
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each episode's states ``[L, N, D]`` (frames encoded one at a time: tubelet 1) and actions ``[L, A]``."""
    for path, row in episodes:
        episode = read_episode(path, row)
        frames = torch.from_numpy(np.array(episode.frames))  # a writable copy of the stored frames
        states = [run.model.encode(frames[i:i + chunk, None].to(device))[:, 0] for i in range(0, len(frames), chunk)]
        yield torch.cat(states), torch.from_numpy(episode.actions).to(device)


@torch.no_grad()
def collect_transitions(run: LoadedRun, episodes: list[tuple[str, int]], width: int,
                        device: torch.device) -> Transitions:
    """Every transition of ``episodes`` with the IDM's latent, actions zero-padded to ``width`` entries (the
    largest action size of the data, so that a task without labeled episodes still fits the controller)."""
    actions, states, latents, following = [], [], [], []
    for encoded, episode_actions in encoded_episodes(run, episodes, device):
        latent, _, _ = run.model.infer_latents(encoded[None])
        actions.append(pad_actions(episode_actions[:-1], width))
        states.append(pairs(encoded[None])[0, :-1])
        latents.append(latent[0])
        following.append(encoded[1:])
    previous = [torch.cat([torch.zeros_like(a[:1]), a[:-1]]) for a in actions]  # none before the first step
    return Transitions(torch.cat(actions), torch.cat(states), torch.cat(latents), torch.cat(following),
                       torch.cat(previous))


@torch.no_grad()
def collect_sequences(run: LoadedRun, episodes: list[tuple[str, int]], width: int, horizon: int,
                      device: torch.device) -> Sequences:
    """Every window of ``horizon`` transitions of ``episodes`` (see :class:`Sequences`), actions zero-padded to
    ``width`` entries."""
    states, actions, latents, first, starts, offset = [], [], [], [], [], 0
    for encoded, episode_actions in encoded_episodes(run, episodes, device):
        steps = len(encoded)
        latent, _, _ = run.model.infer_latents(encoded[None])
        states.append(encoded)
        actions.append(pad_actions(episode_actions, width))
        latents.append(torch.cat([latent[0], torch.zeros_like(latent[0, :1])]))
        first.append(torch.full((steps,), offset, dtype=torch.long, device=device))
        starts.append(offset + torch.arange(max(0, steps - horizon), device=device))
        offset += steps
    if not starts or sum(len(s) for s in starts) == 0:
        raise ValueError(f"no labeled episode has the {horizon} transitions of a sequence (controller.horizon)")
    return Sequences(torch.cat(states), torch.cat(actions), torch.cat(latents), torch.cat(first), torch.cat(starts),
                     horizon)


def concat_transitions(parts: list[Transitions]) -> Transitions:
    """All ``parts`` in one, each field concatenated once (a field missing from any part is dropped)."""
    def join(name: str) -> torch.Tensor | None:
        fields = [getattr(part, name) for part in parts]
        return None if any(f is None for f in fields) else torch.cat(fields)

    return Transitions(join("actions"), join("states"), join("latents"), join("following"), join("previous"))


@torch.no_grad()
def labeled_windows(run: LoadedRun, episodes: list[tuple[str, int]], width: int, frames: int, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``frames`` steps of ``episodes``: states ``[W, T, N, D]``, actions
    ``[W, T-1, A]`` (zero-padded to ``width``) and the IDM's latents ``[W, T-1, C]``."""
    states, actions, latents = [], [], []
    for encoded, episode_actions in encoded_episodes(run, episodes, device):
        latent, _, _ = run.model.infer_latents(encoded[None])
        padded = pad_actions(episode_actions, width)
        for start in range(0, len(encoded) - frames + 1, frames):
            states.append(encoded[start:start + frames])
            actions.append(padded[start:start + frames - 1])
            latents.append(latent[0, start:start + frames - 1])
    if not states:
        raise ValueError(f"no labeled episode has {frames} steps to imagine")
    return torch.stack(states), torch.stack(actions), torch.stack(latents)


@torch.no_grad()
def imagined_transitions(model, controller: Controller, windows: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                         chunk: int = 128) -> Transitions:
    """The transitions the controller meets when it imagines ``windows`` (states ``[W, T, N, D]``, actions
    ``[W, T-1, A]``, IDM latents ``[W, T-1, C]``) from their first frame (a plan's first view: that frame twice,
    no action before) and from their first two (the IDM's latent of the observed step): for every imagined step
    t, the model's predicted ``(s_t−1, s_t)`` (a real frame where it was observed), ``a_t``, ``a_t−1`` and, as
    target, the IDM's latent of the true transition t. Ordered: every window's steps from one frame
    (``[W, T-1]`` flattened), then from two (``[W, T-3]``)."""
    states, actions, latents = windows
    dynamics = ActionDynamics(model, controller, controller.action_dim)
    parts: dict[int, list[Transitions]] = {1: [], 2: []}  # by context, each window-major
    for i in range(0, len(states), chunk):
        x, a, z = states[i:i + chunk], actions[i:i + chunk], latents[i:i + chunk]
        previous = torch.cat([torch.zeros_like(a[:, :1]), a[:, :-1]], dim=1)
        for context in (1, 2):
            observed = x[:, :context]
            imagined = dynamics.imagine(observed, z[:, :context - 1], a[:, context - 1:],
                                        a[:, context - 2] if context == 2 else None)
            seen = pairs(torch.cat([observed, imagined], dim=1))  # [W, T, 2, N, D]: real, then imagined
            first = 0 if context == 1 else context  # from one frame the first view too (s_0 twice, no a_-1)
            steps = slice(first, x.shape[1] - 1)
            before = previous[:, steps].clone()
            if context == 1:
                before[:, 0] = 0.0
            parts[context].append(Transitions(a[:, steps].flatten(0, 1), seen[:, steps].flatten(0, 1),
                                              z[:, steps].flatten(0, 1), x[:, steps.start + 1:].flatten(0, 1),
                                              before.flatten(0, 1)))
    return concat_transitions(parts[1] + parts[2])


def validation_error(controller: Controller, data: Transitions | Sequences, limit: int = 4096) -> float:
    """The mean ``|c(a, s) − z|²`` over ``data`` (at most ``limit`` transitions or windows, evenly spaced), the
    observed past as recorded, in eval mode."""
    sequences = isinstance(data, Sequences)
    count = data.starts.shape[0] if sequences else data.actions.shape[0]
    device = data.starts.device if sequences else data.actions.device
    rows = torch.linspace(0, count - 1, min(limit, count), device=device).round().long()
    mode = controller.training
    controller.eval()
    with torch.no_grad():
        total = 0.0
        for part in rows.split(512):
            if sequences:
                states, actions, latents = data.batch(part)
                predicted = controller(actions, states)
            else:
                latents = data.latents[part]
                predicted = controller(data.actions[part], data.states[part],
                                       None if data.previous is None else data.previous[part])
            total += float((predicted - latents).pow(2).mean()) * len(part)
    controller.train(mode)
    return total / len(rows)


def fit(controller: Controller, data: Transitions | Sequences, config: ControllerTrainConfig, model=None,
        validation: Transitions | Sequences | None = None) -> tuple[list[float], dict[str, float] | None]:
    """AdamW on ``|c(a, s) − z|²`` over shuffled mini-batches, plus, with ``config.prediction_weight > 0``,
    ``w · var(z) · |f(s_t, c(a, s)) − s_t+1|² ÷ |s_t − s_t+1|²`` through the frozen world model ``model``;
    returns the loss every 50 steps and, with ``validation`` data (of the same kind as ``data``), the kept step
    (``{"step", "error"}``: its :func:`validation_error`, checked every ``config.validation_every`` steps and at
    the last, the weights of the lowest kept), else ``None``. With :class:`Sequences` (the ``sequence``
    controller) the batch is windows, the loss the same over each window's steps."""
    if isinstance(data, Sequences) != controller.sequential:
        raise ValueError("the sequence controller trains on Sequences, the others on Transitions")
    from tqdm.auto import tqdm

    def blind(states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``history_dropout`` of the rows ``[B]`` as without a past (s_t twice)."""
        return torch.rand(len(states), generator=generator).to(states.device) < config.history_dropout

    if isinstance(data, Sequences):
        count, device = data.starts.shape[0], data.starts.device

        def batch_loss(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            states, actions, latents = data.batch(index)
            if config.history_dropout > 0:  # these as a plan's first view: s_t twice
                states = torch.where(blind(states, generator)[:, None, None, None], states[:, 1:].expand_as(states),
                                     states)
            return (controller(actions, states) - latents).pow(2).mean()
    else:
        count, device, weight = data.actions.shape[0], data.actions.device, config.prediction_weight
        if weight > 0:
            if model is None or data.following is None:
                raise ValueError("prediction_weight > 0 needs the world model and the transitions' next states")
            model.requires_grad_(False)
            latent_variance = float((data.latents - data.latents.mean(0)).pow(2).mean())
            copy_error = float((data.following - data.states[:, 1]).pow(2).mean())

        def batch_loss(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            states, previous = data.states[index], None if data.previous is None else data.previous[index]
            if config.history_dropout > 0:  # these as without a past: s_t twice, no previous action
                hidden = blind(states, generator)
                states = torch.where(hidden[:, None, None, None], states[:, 1:].expand_as(states), states)
                previous = None if previous is None else torch.where(hidden[:, None], 0.0, previous)
            latents = controller(data.actions[index], states, previous)
            loss = (latents - data.latents[index]).pow(2).mean()
            if weight > 0:
                predicted = model.predict(states[:, 1:], latents[:, None])[:, 0]
                error = (predicted - data.following[index]).pow(2).mean()
                loss = loss + weight * latent_variance * error / max(copy_error, 1e-12)
            return loss

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(controller.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    if validation is not None and isinstance(validation, Sequences) != controller.sequential:
        raise ValueError("the validation data must be of the training data's kind")
    losses, best = [], None
    kept: dict[str, torch.Tensor] | None = None
    controller.train()
    for step in tqdm(range(config.steps), desc="controller", disable=not config.progress):
        index = torch.randint(count, (min(config.batch_size, count),), generator=generator).to(device)
        loss = batch_loss(index, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == config.steps - 1:
            losses.append(loss.item())
        if validation is not None and ((step + 1) % config.validation_every == 0 or step == config.steps - 1):
            error = validation_error(controller, validation)
            if best is None or error < best["error"]:
                best = {"step": float(step + 1), "error": error}
                kept = {name: value.detach().clone() for name, value in controller.state_dict().items()}
    if kept is not None:
        controller.load_state_dict(kept)
    controller.eval()
    return losses, best


@torch.no_grad()
def evaluate(run: LoadedRun, controller: Controller, episodes: list[tuple[str, int]], frames: int,
             device: torch.device) -> dict[str, float]:
    """Held-out comparison of controller latents with the IDM's (see the module docstring)."""
    windows, window_actions = [], []
    for encoded, actions in encoded_episodes(run, episodes, device):
        for start in range(0, len(encoded) - frames + 1, frames):
            windows.append(encoded[start:start + frames])
            window_actions.append(actions[start:start + frames - 1])
    if not windows:
        raise ValueError(f"no held-out episode has {frames} steps")
    width = controller.action_dim
    states = torch.stack(windows)  # [W, T, N, D]
    actions = torch.stack([pad_actions(a, width) for a in window_actions])
    model = run.model
    idm_latents, _, _ = model.infer_latents(states)  # [W, T-1, C]
    # each window from its first step as an episode's (the state twice, no action before), as a plan starts
    previous = torch.cat([torch.zeros_like(actions[:, :1]), actions[:, :-1]], dim=1)
    if controller.sequential:  # the whole window's actions from its first image
        ctrl_latents = controller(actions, states[:, [0, 0]])
    else:
        flat_actions, flat_states = actions.flatten(0, 1), pairs(states)[:, :-1].flatten(0, 1)
        ctrl_latents = controller(flat_actions, flat_states, previous.flatten(0, 1)).view_as(idm_latents)
    residual = (ctrl_latents - idm_latents).pow(2).sum()
    total = (idm_latents - idm_latents.flatten(0, 1).mean(0)).pow(2).sum()
    first_residual = (ctrl_latents[:, 0] - idm_latents[:, 0]).pow(2).sum()  # a window's first step: no past seen
    first_total = (idm_latents[:, 0] - idm_latents[:, 0].mean(0)).pow(2).sum()
    target = states[:, 1:]

    def error(prediction: torch.Tensor) -> float:
        return float((prediction - target).pow(2).mean())

    one_step_idm = error(model.predict(states[:, :-1], idm_latents))
    one_step_ctrl = error(model.predict(states[:, :-1], ctrl_latents))
    copy = error(states[:, :-1])
    copy_first = error(states[:, :1].expand_as(target))  # nothing moves from the first state on
    dynamics = ActionDynamics(model, controller, width)
    context, none = states[:, :1], idm_latents[:, :0]
    rollout_idm = error(model.rollout(context, idm_latents))
    rollout_ctrl = error(dynamics.imagine(context, none, actions))
    rollout_rolled = error(dynamics.imagine(context, none, actions.roll(1, dims=0)))
    return {
        # nan when the IDM's latents do not vary (a family that ignores its latent): nothing to explain
        "latent_r2": float(1 - residual / total) if total > 1e-8 * idm_latents.numel() else float("nan"),
        "latent_r2_first": (float(1 - first_residual / first_total) if first_total > 1e-8 * idm_latents[:, 0].numel()
                            else float("nan")),
        "one_step_idm": one_step_idm, "one_step_controller": one_step_ctrl, "copy": copy,
        "one_step_ratio": one_step_ctrl / one_step_idm,
        "rollout_idm": rollout_idm, "rollout_controller": rollout_ctrl,
        "rollout_ratio": rollout_ctrl / rollout_idm, "rollout_copy": copy_first,
        "rollout_vs_copy": rollout_ctrl / copy_first, "rollout_idm_vs_copy": rollout_idm / copy_first,
        "action_gain": rollout_rolled / rollout_ctrl,
        "windows": float(states.shape[0]),
    }


def train_controller(config: ControllerTrainConfig, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Fit and evaluate a controller for ``config.run``; returns the summary also written to ``metrics.json``."""
    from safetensors.torch import save_file

    config.validate()
    torch.manual_seed(config.seed)
    device = torch.device(device)
    run = load_run(config.run, device)
    if run.model.action_conditioned:
        raise ValueError(f"{config.run} is conditioned on true actions (model.condition=action): it needs no controller")
    if run.model.config.encoder.tubelet != 1 or run.config.data.frame_stride != 1:
        raise ValueError("the controller needs a run with one frame a step (tubelet 1, frame stride 1)")
    data = config.data or run.config.data.data
    train_episodes, held_episodes = split_episodes(data, run.config.data.holdout_fraction)
    labeled = choose_labeled(train_episodes, config.labeled_fraction, config.seed)
    log.info("controller: %d of %d training episodes labeled", len(labeled), len(train_episodes))
    checked: list[tuple[str, int]] = []
    if config.validation_fraction:
        if len(labeled) < 2:
            raise ValueError(f"validation_fraction {config.validation_fraction:g} needs >= 2 labeled episodes (one to "
                             f"fit, one to check), got {len(labeled)}: label more or set validation_fraction=0")
        held_back = min(len(labeled) - 1, max(1, round(config.validation_fraction * len(labeled))))
        checked = choose_labeled(labeled, held_back / len(labeled), config.seed + 2)
        labeled = [e for e in labeled if e not in set(checked)]
        log.info("controller: %d of the labeled episodes held back to choose the fit's step", len(checked))
    action_dim = data_action_dim(DataConfig(data=data))
    pseudo, decoder_r2 = [], None
    if config.controller.variant == "sequence":
        transitions = collect_sequences(run, labeled, action_dim, config.controller.horizon, device)
        validation = (collect_sequences(run, checked, action_dim, config.controller.horizon, device) if checked
                      else None)
        labeled_count = count_transitions(labeled + checked)
        if config.pseudo_labeled_fraction:
            chosen = set(labeled + checked)  # the held-back episodes are labeled ones: never pseudo-labeled
            rest = [e for e in train_episodes if e not in chosen]
            pseudo = choose_labeled(rest, config.pseudo_labeled_fraction * len(train_episodes) / max(len(rest), 1),
                                    config.seed + 1)
            decoder, decoder_r2 = fit_action_decoder(transitions, seed=config.seed)
            rows = transitions.transitions
            low, high = transitions.actions[rows].min(0).values, transitions.actions[rows].max(0).values
            log.info("controller: %d episodes pseudo-labeled (action decoder held-out R² %s)", len(pseudo),
                     "-" if decoder_r2 is None else f"{decoder_r2:.3f}")
            extra = collect_sequences(run, pseudo, action_dim, config.controller.horizon, device)
            transitions = transitions.concat(pseudo_label(extra, decoder, low, high))
    else:
        transitions = collect_transitions(run, labeled, action_dim, device)
        validation = collect_transitions(run, checked, action_dim, device) if checked else None
        labeled_count = count_transitions(labeled + checked)
    all_transitions = count_transitions(train_episodes)
    controller = Controller(config.controller, action_dim, run.model.encoder.dim, run.model.encoder.num_tokens,
                            run.model.cond_dim).to(device)
    losses, kept = fit(controller, transitions, config, run.model, validation)
    if config.imagined_rounds:
        windows = labeled_windows(run, labeled, action_dim, config.eval_frames, device)
        for round_ in range(config.imagined_rounds):
            transitions = concat_transitions([transitions, imagined_transitions(run.model, controller, windows)])
            log.info("controller: imagined round %d: %d training transitions", round_ + 1, len(transitions.actions))
            more, kept = fit(controller, transitions, config, run.model, validation)
            losses += more
    metrics = evaluate(run, controller, held_episodes, config.eval_frames, device)
    # the same R² on (at most 100 of) the episodes it was fit on: far above the held-out one, it learned them by heart
    try:
        metrics["latent_r2_fit"] = evaluate(run, controller, labeled[:100], config.eval_frames, device)["latent_r2"]
    except ValueError:  # no fit episode is eval_frames long
        metrics["latent_r2_fit"] = float("nan")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(controller.state_dict(), str(out / WEIGHTS))
    record = {"run": str(Path(config.run).resolve()), "action_dim": action_dim, "controller": to_dict(config.controller),
              "labeled_fraction": config.labeled_fraction}
    (out / CONFIG).write_text(json.dumps(record, indent=2))  # JSON is YAML
    summary = {**metrics, "labeled_episodes": len(labeled) + len(checked), "labeled_transitions": labeled_count,
               "validation_episodes": len(checked), "kept_step": None if kept is None else int(kept["step"]),
               "validation_error": None if kept is None else kept["error"],
               "pseudo_labeled_episodes": len(pseudo), "action_decoder_r2": decoder_r2,
               "training_transitions": all_transitions, "final_loss": losses[-1], "losses": losses,
               "out_dir": str(out)}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_controller(path: str | Path, device: str | torch.device = "cpu") -> tuple[Controller, str]:
    """A controller saved by :func:`train_controller` and the run folder it belongs to."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise FileNotFoundError(f"{path} holds no controller ({CONFIG} and {WEIGHTS}); train one with "
                                "lavid/train_controller.py")
    record = load_yaml(path / CONFIG)
    run = load_run(record["run"], "cpu")
    controller = Controller(from_dict(ControllerConfig, record["controller"], "controller"), int(record["action_dim"]),
                            run.model.encoder.dim, run.model.encoder.num_tokens, run.model.cond_dim)
    controller.load_state_dict(load_file(str(path / WEIGHTS)))
    return controller.to(device).eval(), record["run"]
