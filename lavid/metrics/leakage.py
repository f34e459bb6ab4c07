"""The scene-cut test for future leakage (the reference paper's; docs/reference.md, "Evaluations").

Join the first ``cut`` steps of clip A to the last steps of clip B (another video). The transition
``cut - 1 -> cut`` is then unpredictable from the past. A latent action that only describes motion
cannot say what B looks like, so the one-step error at the cut should be far above the error at the
same position without a cut. A latent that smuggles the next frame keeps the error low at the cut:
a ratio near 1 means leakage. The paper reports ratios of ×2.0–×2.5.

Errors are mean L1 in representation space (the training loss's space), with the IDM's latents.
"""

from __future__ import annotations

import torch


def pair_with_other_episodes(episodes: torch.Tensor, generator: torch.Generator | None = None,
                             pool: torch.Tensor | None = None, groups: torch.Tensor | None = None,
                             pool_groups: torch.Tensor | None = None) -> torch.Tensor:
    """For each clip ``i`` the index of a partner clip from another episode (``-1`` when none exists).

    Args:
        episodes: ``[B]`` episode (video) id of each clip.
        pool: ``[P]`` episode ids of the candidate partners (default: the clips themselves).
        groups, pool_groups: ``[B]`` and ``[P]`` group ids (e.g. the task); when given, a partner must
            be of the clip's own group.
    """
    pool = episodes if pool is None else pool
    if groups is not None and pool_groups is None:
        pool_groups = groups
    count = episodes.shape[0]
    partners = torch.full((count,), -1, dtype=torch.long)
    for i in range(count):
        allowed = pool != episodes[i]
        if groups is not None:
            allowed &= pool_groups == groups[i]
        others = allowed.nonzero().flatten()
        if len(others):
            partners[i] = others[torch.randint(len(others), (1,), generator=generator)].item()
    return partners


@torch.no_grad()
def scene_cut_errors(model, states_a: torch.Tensor, targets_a: torch.Tensor, states_b: torch.Tensor,
                     targets_b: torch.Tensor, cut: int) -> dict[str, torch.Tensor]:
    """Per-clip one-step errors at position ``cut`` with and without a scene cut.

    Args:
        model: a world model (``infer_latents``, ``predict``).
        states_a, targets_a, states_b, targets_b: ``[B, S, N, D]`` context and target representations of
            paired clips A and B (targets differ from states only with an EMA target encoder).
        cut: first step taken from B, in ``[1, S - 1]``.

    Returns:
        ``cut`` ``[B]`` (error predicting B's step ``cut`` after A's steps), ``no_cut`` ``[B]`` (error
        predicting A's step ``cut`` on A alone) and ``copy_at_cut`` ``[B]`` (error of repeating A's step).
    """
    steps = states_a.shape[1]
    if not 1 <= cut <= steps - 1:
        raise ValueError(f"cut must be in [1, {steps - 1}] for clips of {steps} steps, got {cut}")
    mixed = torch.cat([states_a[:, :cut], states_b[:, cut:]], dim=1)
    mixed_targets = torch.cat([targets_a[:, :cut], targets_b[:, cut:]], dim=1)

    def error_at_cut(states, targets):
        latents = model.infer_latents(states)[0]
        prediction = model.predict(states[:, :cut], latents[:, :cut])[:, -1]
        return (prediction - targets[:, cut]).abs().flatten(1).mean(-1)

    return {
        "cut": error_at_cut(mixed, mixed_targets),
        "no_cut": error_at_cut(states_a, targets_a),
        "copy_at_cut": (mixed[:, cut - 1] - mixed_targets[:, cut]).abs().flatten(1).mean(-1),
    }


def summarize(errors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means over clips, ``ratio = cut / no_cut`` (near 1: the latent leaks the future) and
    ``cut_over_copy = cut / copy_at_cut`` (below 1: the latent passes part of the jump; 1: none of it)."""
    cut, no_cut = errors["cut"].mean().item(), errors["no_cut"].mean().item()
    copy = errors["copy_at_cut"].mean().item()
    return {"leak/error_cut": cut, "leak/error_no_cut": no_cut, "leak/copy_at_cut": copy,
            "leak/ratio": cut / no_cut if no_cut > 0 else float("nan"),
            "leak/cut_over_copy": cut / copy if copy > 0 else float("nan"), "leak/clips": int(errors["cut"].numel())}
