"""Acting with a trained world model: planners over action sequences (the controller and offline RL to come).

Takes in: a trained run (:func:`lavid.training.load_run`: the world model with its encoder, IDM and
predictor) and, for goals, the data stage's goal images (:mod:`lavid.data.goals`).
Gives out: actions or latent actions for an environment.

Now: :func:`plan` searches action sequences with CEM or MPPI (:class:`PlannerConfig`) against any cost
that follows :class:`CostFn`, for many episodes at once; :func:`warm_start` shifts a plan for
model-predictive replanning. Meant next for the controller, the planners over latent actions and offline
RL. Like ``lavid.metrics``, it sits on ``lavid.training`` and may import every stage below it (core, data,
models, training), but not ``lavid.metrics``: a controller must run without the analysis code, and the two
stay siblings (``tests/test_layout.py`` checks it). A controller's evaluation lives here with it. The
names below are imported on first use, so ``import lavid.control`` stays free of torch.
"""

from lavid.core.lazy import lazy_exports

_EXPORTS = {
    "PlannerConfig": "lavid.control.planner",
    "CostFn": "lavid.control.planner",
    "Plan": "lavid.control.planner",
    "plan": "lavid.control.planner",
    "plan_looped": "lavid.control.planner",
    "warm_start": "lavid.control.planner",
    "seeded_generators": "lavid.control.planner",
    "cem_update": "lavid.control.cem",
    "mppi_update": "lavid.control.mppi",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
