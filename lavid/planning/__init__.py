"""Planning with a trained world model: the controller from real actions to latent actions, planners over
action sequences, closed-loop control in the simulator.

Takes in: a trained run (:func:`lavid.training.load_run`: the world model with its encoder, IDM and
predictor) and, for goals, the data stage's goal images (:mod:`lavid.data.goals`).
Gives out: actions for an environment, and how close each episode ends to its goal.

- :class:`Controller` (``controller.py``) maps a real action and the state it acts in to the latent action
  of a latent world model; ``fit_controller.py`` fits it on a few labeled episodes
  (``lavid/train_controller.py``).
- :class:`ActionDynamics` (``dynamics.py``) imagines where actions lead through an action-conditioned
  world model, or through a latent one and its controller.
- :func:`plan` searches action sequences with CEM (``cem.py``) or MPPI (``mppi.py``) (:class:`PlannerConfig`)
  against any cost that follows :class:`CostFn`, for many episodes at once; :func:`warm_start` shifts a plan
  for model-predictive replanning.
- ``mpc.py`` runs agents (planning, random, replay) closed loop in the simulator; ``reaching.py`` makes
  start states and goal images from stored episodes and scores how close each episode ends
  (``evals/plan.py``).

It sits on ``lavid.training`` and may import every stage below it (core, data, models, training), but not
its siblings ``lavid.metrics`` and ``lavid.offline_rl``: a planner must run without the analysis code
(``tests/test_layout.py`` checks it). The names below are imported on first use, so ``import lavid.planning``
stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {  # module: the names it exports here
    "lavid.planning.planner": (
        "PlannerConfig", "CostFn", "Plan", "plan", "plan_looped", "warm_start", "seeded_generators",
    ),
    "lavid.planning.cem": ("cem_update",),
    "lavid.planning.mppi": ("mppi_update",),
    "lavid.planning.controller": ("Controller", "ControllerConfig"),
    "lavid.planning.dynamics": ("ActionDynamics",),
    "lavid.planning.mpc": ("PlanningAgent", "run_closed_loop"),
    "lavid.planning.reaching": ("load_goals",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

