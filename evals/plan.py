"""Closed-loop goal reaching in the simulator: plan through world models with CEM or MPPI, act, replan.

    python evals/plan.py --task reacher-easy --out runs/plan_reacher                  # the anchors' protocol
    python evals/plan.py --task reacher-easy --methods oracle,random --pairs 50 --seeds 0,1,2 --out DIR
    python evals/plan.py --task jaco-reach --preset goal_episodes --out runs/plan_jaco   # the earlier protocol

Two protocols (``--protocol``, set by the preset):

- ``anchors`` (the default, LeWorldModel's and DINO-WM's): random-policy training episodes of the task
  (``OUT/data``) and held-out ones with a seed of their own (``OUT/heldout``); ``--pairs`` start / goal pairs
  drawn from the held-out episodes, the goal ``--goal-offset`` stored steps after the start; each method in
  ``--methods`` acts ``--budget`` steps on every pair, once per seed of ``--seeds``, planning ``--horizon``
  steps and executing ``--receding`` of them: ``oracle`` (the simulator as the model, the true joint
  distance as cost), ``replay`` (the stored actions), ``random``, ``action`` (an action-conditioned world
  model trained on every action) and ``latent_<family>`` (a latent world model trained without actions, with
  a controller fit on ``--labeled-fraction`` of the episodes' actions). Success on reacher is LeWorldModel's:
  every joint within ``--success-qpos`` rad of the goal's at any control step. ``results.csv`` has one row per
  method: success rate with its 95 % Wilson interval, final distance, time per planning call, labeled
  transitions and the learned cost's Spearman correlation with the true distance on held-out states.
  ``runs.jsonl`` keeps every finished (method, seed): a rerun reuses them.
- ``episodes`` (``--preset goal_episodes``, the earlier one): goal episodes of smooth random motion
  (``OUT/goals``), start = stored step 0, goal = ``--goal-steps`` later, every method replanning every step;
  the oracle replays the stored actions.

Both write ``results.md``, ``results.csv``, ``results.json`` and a GIF per method (executed frames beside the
goal) into ``--out``; every stage is skipped when its output is there, so a killed run resumes.
The settings come from ``--preset`` (``configs/experiments/plan/``); each flag below overrides its key.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from lavid.core.cli import fail, setup_logging
from lavid.experiments.planning import PlanPreset
from lavid.experiments.presets import preset_names

LIST_KEYS = {"seeds"}
"""Preset keys that hold lists: their flags take comma-separated values (``--seeds 0,1,2``)."""

HELP = {
    "protocol": "anchors: start / goal pairs from held-out trajectories (LeWorldModel's); episodes: the earlier one",
    "methods": "comma-separated: oracle, replay, random, action, latent_<family> (anchors' protocol)",
    "pairs": "start / goal pairs (anchors' protocol)", "seeds": "comma-separated planner seeds",
    "goal_offset": "stored steps from start to goal (anchors' protocol)",
    "budget": "stored steps each method acts (anchors' protocol)",
    "receding": "planned steps executed before replanning",
    "start_history": "stored steps before the start (frames and actions, from the held-out episode) the learned "
                     "models' planners see at their first plan (0: the start frame only, the anchors')",
    "episodes": "goal episodes planned at once", "goal_steps": "stored steps from start to goal",
    "mpc_steps": "steps each method acts (0: --goal-steps)", "train_episodes": "white-noise training episodes to build",
    "train_steps": "world-model training steps",
    "feature_cache": "true: with --encoder-steps, encode the data once with the frozen encoder and train the "
                     "predictor from those features (false: encode every batch's frames)",
    "families": "latent families to train and compare, each FAMILY[:KEY=VALUE;KEY=VALUE] (config overrides of "
                "that run)",
    "train_overrides": "config overrides of every world model trained here, 'key=value;key=value'",
    "labeled_fraction": "share of the training episodes whose actions the controllers see",
    "controller": "the controller into a latent model's actions: attention (each step's action and state, the "
                  "imagined one inside a plan), mlp (the action alone) or sequence (the plan's whole action sequence "
                  "from the observed states)",
    "controller_prediction": "weight of the controller's one-step prediction loss through the frozen world model "
                             "(0: it only matches the IDM's latents)",
    "controller_previous": "true: the controller also sees the action taken before (a_t-1), which with the two "
                           "frames tells the velocity",
    "controller_dropout": "share of the controller's training transitions shown without their past (s_t twice, no "
                          "previous action), as a plan's first step sees its start",
    "controller_imagined": "rounds of training the controller on the states it meets in its own imagined rollouts "
                           "(the predicted states, the IDM's latents of the true transitions as targets)",
    "controller_layer_dropout": "dropout in the controller's attention layers while it trains (a regularizer for few "
                                "labels)",
    "controller_weight_decay": "AdamW weight decay of the controller's fit",
    "controller_pseudo_labels": "share of the training episodes more, without actions, that the sequence controller "
                                "fits on with pseudo-actions read back from the IDM's latents",
    "controller_validation": "share of the labeled episodes held back from the controller's fit to choose its length "
                             "(the weights with the lowest latent error on them are kept; 0: the last step's)",
    "context": "observed steps the world model sees",
    "cost_steps": "cost the distance to the goal at every imagined step, or at the last one only (the reference "
                  "paper's)",
    "precision": "the world model's imagination in float32 or under bfloat16 autocast (the encoder and the cost stay "
                 "float32)",
    "threshold": "success distance (0: per task, metres)",
    "camera": "camera index or name, or a view of lavid.data.sim.VIEWS (reacher: top_close); empty: the task's default",
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help="jaco-reach, reacher-easy, or any suite task (pose goals)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="smoke",
                        help=f"settings: a preset of configs/experiments/plan/ ({', '.join(preset_names('plan'))}) "
                             "or a YAML file")
    parser.add_argument("--train-data", default="",
                        help="trajectory data of the task: a dataset folder or several, A,B[:weight] as data.data "
                             "(default OUT/data, built)")
    parser.add_argument("--latent-runs", default="", help="comma-separated trained latent runs (skips training)")
    parser.add_argument("--action-run", default="", help="a trained model.condition=action run (skips training)")
    parser.add_argument("--scale", default="",
                        help="success against data and training: EPISODESxSTEPS,... (e.g. 200x1000,1000x5000), the "
                             "anchors' protocol once per point, a table of them all in OUT/results.md")
    for field in dataclasses.fields(PlanPreset):  # every preset key is a flag; None: the preset's value
        kind = {int: int, float: float}.get(type(field.default), str)
        choices = None
        if "Literal" in str(field.type):
            choices = [c.strip(" '\"") for c in str(field.type).split("[", 1)[1].rstrip("]").split(",")]
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None, choices=choices,
                            help=f"{HELP.get(field.name, field.name.replace('_', ' '))} (preset's value if not given)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    setup_logging()
    from lavid.core.config import ConfigError
    from lavid.data.clips import DatasetFormatError
    from lavid.data.sim import SimError, check_task
    from lavid.experiments.planning import PlanSettings, parse_points, run_planning, run_scale
    from lavid.experiments.presets import load_preset
    from lavid.training.runs import RunError

    try:
        check_task(args.task)
        overrides = [f"{f.name}=[{value}]" if f.name in LIST_KEYS else f"{f.name}={value}"
                     for f in dataclasses.fields(PlanPreset) if (value := getattr(args, f.name)) is not None]
        preset = load_preset(PlanPreset, "plan", args.preset, overrides)
        settings = PlanSettings(task=args.task, out=args.out, train_data=args.train_data,
                                latent_runs=tuple(r for r in args.latent_runs.split(",") if r),
                                action_run=args.action_run, progress=not args.no_progress)
        if args.scale:
            results = run_scale(preset, settings, parse_points(args.scale))
        else:
            results = run_planning(preset, settings)
    except (ValueError, SimError, RunError, ConfigError, DatasetFormatError, FileNotFoundError, RuntimeError) as error:
        return fail(error)
    print(f"results in {results.parent}/: results.md, results.csv, results.json, *.gif")
    return 0


if __name__ == "__main__":
    sys.exit(main())
