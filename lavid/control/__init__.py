"""Acting with a trained world model (reserved: empty for now).

Takes in: a trained run (:func:`lavid.training.load_run`: the world model with its encoder, IDM and
predictor) and, for goals, the data stage's goal images (:mod:`lavid.data.goals`).
Gives out: actions or latent actions for an environment.

Meant for the controller, the planners over latent actions and offline RL. Like ``lavid.metrics``, it sits
on ``lavid.training`` and may import every stage below it (core, data, models, training), but not
``lavid.metrics``: a controller must run without the analysis code, and the two stay siblings
(``tests/test_layout.py`` checks it). A controller's evaluation lives here with it.
"""
