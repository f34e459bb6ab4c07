"""Acting with a trained world model: the controller, planners over action sequences, closed-loop control,
offline RL with latent actions.

Takes in: a trained run (:func:`lavid.training.load_run`: the world model with its encoder, IDM and
predictor) and, for goals, the data stage's goal images (:mod:`lavid.data.goals`).
Gives out: actions or latent actions for an environment.

- :class:`Controller` (``controller.py``) maps a real action and the state it acts in to the latent action
  of a latent world model; ``fit_controller.py`` fits it on a few labeled episodes
  (``lavid/train_controller.py``).
- :class:`ActionDynamics` (``dynamics.py``) imagines where actions lead through an action-conditioned
  world model, or through a latent one and its controller.
- :func:`plan` searches action sequences with CEM or MPPI (:class:`PlannerConfig`) against any cost
  that follows :class:`CostFn`, for many episodes at once; :func:`warm_start` shifts a plan for
  model-predictive replanning.
- ``mpc.py`` runs agents (planning, random, replay) closed loop in the simulator; ``reaching.py`` makes
  start states and goal images from stored episodes and scores how close each episode ends
  (``evals/plan.py``).
- Offline RL (``evals/offline_rl.py``): :class:`SAC` (``sac.py``, trained by ``expert.py``) makes datasets of
  known quality; :func:`split_labeled` (``offline_data.py``) removes the actions of most episodes;
  :class:`LatentActionModel` (``latent_action_model.py``) learns one latent-action space from both parts;
  :func:`train_policy` (``imagination.py``) learns a latent policy in its imagination; ``offline_rl.py``
  holds the methods compared and their evaluation in the simulator.

Like ``lavid.metrics``, it sits on ``lavid.training`` and may import every stage below it (core, data,
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
    "Controller": "lavid.control.controller",
    "ControllerConfig": "lavid.control.controller",
    "ActionDynamics": "lavid.control.dynamics",
    "PlanningAgent": "lavid.control.mpc",
    "run_closed_loop": "lavid.control.mpc",
    "load_goals": "lavid.control.reaching",
    "SAC": "lavid.control.sac",
    "SACConfig": "lavid.control.sac",
    "train_expert": "lavid.control.expert",
    "split_labeled": "lavid.control.offline_data",
    "load_offline": "lavid.control.offline_data",
    "LatentActionModel": "lavid.control.latent_action_model",
    "train_latent_model": "lavid.control.latent_action_model",
    "train_policy": "lavid.control.imagination",
    "run_method": "lavid.control.offline_rl",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
