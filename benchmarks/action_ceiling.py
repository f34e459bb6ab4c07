"""How much of the action can a transition show at all? Ridge probes from the simulator's own state.

    python benchmarks/action_ceiling.py --data data/mix

The latent probe asks a linear readout of z to give the true action (issue 11: R² ≥ 0.3 on DMControl).
z is inferred from frames, so its probe can be no better than a linear readout of what frames show:
the pose (joint angles, positions; not velocities) at a few consecutive steps. This script measures
that ceiling on the stored states, with no model at all, per task, for the held-out episodes of the
training split (ridge fit on training episodes, strength by cross-validation; R² averaged over action
dimensions, as the latent probe does):

- ``observation, t and t+1``: the full proprioceptive observation (velocities included) at both ends of
  the transition: what the simulator knows;
- ``pose (as probed), t and t+1``: the state probe's pose targets, wrapped hinge angles as sine and
  cosine, at both ends: what an IDM that sees two frames (``idm.input=change``) could show if its
  features were exactly the pose;
- ``pose (as probed), t-1 to t+1``: the same with the step before (``idm.input=history``);
- ``raw pose, t-1 to t+1``: the pose entries as stored (angles unwrapped where the simulator reports
  them so): how much of the gap to the observation is the sine/cosine geometry of the picture;
- ``pose (as probed), t and t+1, MLP``: a small MLP instead of the ridge on the two-step pose
  (:func:`lavid.metrics.probe.mlp_probe`: early-stopped on the last part of the training transitions,
  seeded). z is a learned function of the two frames, not the pose itself, so the linear rows bound a
  linear readout of pose-like features; this row is what any function of the two poses can give (on these
  few episodes).

The training run's action probe and the ablation's latent evals report the two pose-at-t-and-t+1 rows
(ridge and MLP) beside the probes from z, on their own clips (``probe/ceiling``, ``probe/ceiling_mlp``:
:func:`lavid.metrics.latent_evals.probe_metrics`); this script is the same on whole episodes, with the
other inputs beside them.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

INPUTS = ("observation, t and t+1", "pose (as probed), t and t+1", "pose (as probed), t-1 to t+1",
          "raw pose, t-1 to t+1")
MLP = "pose (as probed), t and t+1, MLP"


def transitions(state: torch.Tensor, action: torch.Tensor, task: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One episode's states ``[L, S]`` and actions ``[L, A]`` -> per input kind ``(inputs [M, F], actions [M, A])``.

    Row ``t`` of ``action`` is the action applied between steps ``t`` and ``t+1``.
    """
    from lavid.metrics.state_probe import pose_groups, pose_targets

    groups = pose_groups(task, state.shape[1])
    pose = pose_targets(task, groups, state)
    raw = torch.cat([state[:, where] for where in groups.values()], dim=1)

    def pair(x):
        return torch.cat([x[:-1], x[1:]], dim=1)[1:], action[1:-1]

    def triple(x):
        return torch.cat([x[:-2], x[1:-1], x[2:]], dim=1), action[1:-1]

    return dict(zip(INPUTS, (pair(state), pair(pose), triple(pose), triple(raw))))


def ceiling(paths: list[str], holdout: float) -> dict[str, dict[str, float]]:
    """``{task: {input kind: held-out R², "episodes": (train, held out)}}`` over the simulator datasets."""
    import datasets

    from lavid.data.clips import ClipDataset, read_rows, split_by_episode
    from lavid.metrics.probe import linear_probe, mlp_probe

    per_task: dict[str, dict[bool, dict[str, list]]] = {}
    for path in paths:
        dataset = ClipDataset(path, columns=[])
        if dataset.steps is None or not {"state", "action"} <= set(dataset.steps.column_names):
            print(f"{path}: no stored states and actions; skipped")
            continue
        episodes = datasets.load_from_disk(str(dataset.root / "episodes"))
        _, heldout = split_by_episode(list(episodes["source"]), holdout)
        held = set(heldout)
        for i in range(len(episodes)):
            length = int(episodes[i]["num_steps"])
            if length < 3:
                continue
            rows = read_rows(dataset.steps, int(dataset.first_row[i]), length, ["action", "state"])
            state = torch.from_numpy(np.array(rows["state"], dtype=np.float64))
            action = torch.from_numpy(np.array(rows["action"], dtype=np.float64))
            side = per_task.setdefault(episodes[i]["task"], {}).setdefault(i in held, {})
            for kind, (x, y) in transitions(state, action, episodes[i]["task"]).items():
                side.setdefault(kind, []).append((x, y))
    out = {}
    for task, sides in sorted(per_task.items()):
        if True not in sides or False not in sides:
            continue
        row = {}
        for kind in INPUTS:
            x, y = (torch.cat(part) for part in zip(*sides[False][kind]))
            x_test, y_test = (torch.cat(part) for part in zip(*sides[True][kind]))
            mean, std = x.mean(0), x.std(0) + 1e-6
            row[kind] = linear_probe((x - mean) / std, y, (x_test - mean) / std, y_test)["r2_mean"]
            if kind == INPUTS[1]:
                row[MLP] = mlp_probe(x, y, x_test, y_test)["r2_mean"]
        row["episodes"] = (len(sides[False][INPUTS[0]]), len(sides[True][INPUTS[0]]))
        out[task] = row
    return out


def format_table(result: dict[str, dict[str, float]]) -> str:
    kinds = (*INPUTS, MLP)
    lines = ["| task | episodes (train / held out) | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for task, row in result.items():
        train, test = row["episodes"]
        lines.append(f"| {task} | {train} / {test} | " + " | ".join(f"{row[k]:.3f}" for k in kinds) + " |")
    dmc = [row for task, row in result.items() if not task.startswith("jaco")]
    if dmc:
        lines.append("| DMControl mean | | " + " | ".join(f"{np.mean([r[k] for r in dmc]):.3f}" for k in kinds) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="comma-separated simulator datasets")
    parser.add_argument("--holdout", type=float, default=0.1, help="the training split's holdout_fraction")
    args = parser.parse_args(argv)
    result = ceiling(args.data.split(","), args.holdout)
    if not result:
        print("no task has stored states and actions on both sides of the split", file=sys.stderr)
        return 1
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
