"""A latent-action policy learned offline by actor-critic in the imagination of a :class:`StateWorldModel`.

From observations of the data, the actor ``pi(z | o)`` picks latent actions, the frozen model imagines the
next observations and rewards for ``horizon`` steps, a critic ``V(o)`` and its slow copy give
lambda-returns, and the actor follows the returns' gradient through the model while a KL term keeps it on
the support of the model's prior ``p(z | o)``: latents the data never showed have no meaningful
consequence in the model. At execution :func:`execute_latent` turns ``z`` into a real action, through the
model's supervised IDM on the predicted next state or through its action decoder. :class:`PriorPolicy`, the
prior's mean executed the same way, is the baseline the actor should beat.

Shapes: ``B`` start states, ``H`` horizon, ``O`` observation, ``Z`` latent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from lavid.offline_rl.state_world_model import Gaussian, StateWorldModel, kl, mlp, sample
from lavid.offline_rl.offline_data import OfflineDataError
from lavid.core.config import check


EXECUTE = ("decoder", "idm")


def check_execution(execute: str, has_idm: bool | None = None, name: str = "policy.execute") -> None:
    """``execute`` must be one of :data:`EXECUTE`, and ``idm`` needs the model's supervised IDM (``has_idm``:
    the model has one, or its config asks for one with ``model.pseudo > 0``; None when not known yet)."""
    if execute not in EXECUTE:
        raise OfflineDataError(f"{name} must be one of {', '.join(EXECUTE)}, got {execute!r}")
    if execute == "idm" and has_idm is False:
        raise OfflineDataError(f"{name}=idm needs the model's supervised IDM: set model.pseudo > 0 "
                               "(or execute through the decoder: policy.execute=decoder)")


@dataclass
class PolicyConfig:
    """Actor-critic in imagination."""

    hidden: int = 256
    horizon: int = 5
    gamma: float = 0.99
    lam: float = 0.95
    prior_kl: float = 0.1  # weight of KL(pi(z|o) || p(z|o)) in the actor loss, per unit of return scale
    steps: int = 3000
    batch_size: int = 256
    lr: float = 3e-4
    tau: float = 0.01
    # how a latent becomes the executed action: "idm", the model's supervised IDM on the predicted next state,
    # a = g(o, o_hat' - o) with o_hat' = o + f(o, z) (needs model.pseudo > 0); or "decoder", p(a | o, z). On
    # walker the same trained policies scored +2.4 ± 1.5 higher through the IDM, ahead on 9 of 10 seeds
    # (labeled-only: +2.5 ± 3.1, 9 of 10; BENCHMARKS.md offline RL part 5)
    execute: str = "idm"
    # Polyak average of the actor's weights, executed in place of the last ones: 0 turns it off, else the decay
    # (ramped as min(decay, (1 + t) / (10 + t)) so the random initial weights fade within a few steps). On
    # walker, 10 seeds against the last weights: latent's policy +1.9 ± 2.9 (higher on 8 of 10), labeled-only's
    # -0.1 ± 1.5; two policy seeds of one latent model differ by 0.5 points instead of 3.9 (BENCHMARKS.md,
    # offline RL part 7)
    actor_ema: float = 0.995

    def validate(self, prefix: str = "policy") -> None:
        prefix = f"{prefix}." if prefix else ""
        for name in ("hidden", "horizon", "steps", "batch_size"):
            check(getattr(self, name) >= 1, prefix + name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("gamma", "lam", "tau"):
            check(0 < getattr(self, name) <= 1, prefix + name, f"must be in (0, 1], got {getattr(self, name)}")
        check(0 <= self.actor_ema < 1, f"{prefix}actor_ema", f"must be in [0, 1) (0: off), got {self.actor_ema}")
        check(self.prior_kl >= 0, f"{prefix}prior_kl", f"must be >= 0, got {self.prior_kl}")
        check(self.lr > 0, f"{prefix}lr", f"must be > 0, got {self.lr}")
        check_execution(self.execute, name=f"{prefix}execute")


class LatentPolicy(nn.Module):
    """Actor ``pi(z | x)`` and critic ``V(x)`` on normalised observations, with the model that executes them."""

    def __init__(self, model: StateWorldModel, config: PolicyConfig) -> None:
        super().__init__()
        obs_dim = model.obs_mean.shape[0]
        self.model, self.config = model.requires_grad_(False), config
        self.actor = Gaussian(obs_dim, config.hidden, model.config.latent_dim)
        self.critic = mlp(obs_dim, config.hidden, 1)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations ``[B, O]`` -> real actions ``[B, A]`` in [-1, 1] on the observations' device: the
        actor's mean, executed as ``config.execute`` says."""
        x = self.model.normalize(obs.to(self.model.obs_mean.device))
        return execute_latent(self.model, x, self.actor(x)[0], self.config.execute).to(obs.device)

    def executing(self, execute: str) -> LatentPolicy:
        """This policy executed as ``execute`` says (see :class:`PolicyConfig`), sharing every weight: one trained
        actor scored under several executions, side by side."""
        check_execution(execute, self.model.action_idm is not None, name="execute")
        view = copy.copy(self)  # shallow: the same modules; only the config differs
        view.config = replace(self.config, execute=execute)
        return view


def execute_latent(model: StateWorldModel, x: torch.Tensor, z: torch.Tensor, execute: str) -> torch.Tensor:
    """Normalised ``x [B, O]`` and latent ``z [B, Z]`` -> real action ``[B, A]`` in [-1, 1], as ``execute`` says
    (:class:`PolicyConfig`): the supervised IDM on the predicted next state, or the action decoder."""
    if execute == "idm":
        return model.label(x, model.step(x, z)[0])
    return model.decode(x, z)


class PriorPolicy:
    """The model's prior mean, ``z = E p(z | o)``, executed as ``execute`` says: the data's average behaviour
    cloned through the model, with no actor. A :class:`LatentPolicy` trained on the same model should beat it;
    the difference is what RL in imagination added."""

    def __init__(self, model: StateWorldModel, execute: str) -> None:
        check_execution(execute, model.action_idm is not None, name="execute")
        self.model, self.execute = model, execute

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations ``[B, O]`` -> real actions ``[B, A]`` in [-1, 1] on the observations' device."""
        x = self.model.normalize(obs.to(self.model.obs_mean.device))
        return execute_latent(self.model, x, self.model.prior(x)[0], self.execute).to(obs.device)


def lambda_returns(reward: torch.Tensor, value: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """``reward [H, B]``, ``value [H+1, B]`` (of the states before each step and after the last) ->
    ``[H, B]`` TD(lambda) returns bootstrapped from the last value."""
    out, last = [], value[-1]
    for t in reversed(range(reward.shape[0])):
        last = reward[t] + gamma * ((1 - lam) * value[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


def imagine(policy: LatentPolicy, x: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Roll the actor through the model from normalised ``x [B, O]``: states ``[H+1, B, O]``, rewards ``[H, B]``
    and the actor's KL to the prior at each step ``[H, B]`` (differentiable in the actor)."""
    states, rewards, kls = [x], [], []
    for _ in range(horizon):
        pi = policy.actor(x)
        kls.append(kl(pi, policy.model.prior(x)))
        x, r = policy.model.step(x, sample(pi))
        states.append(x)
        rewards.append(r)
    return torch.stack(states), torch.stack(rewards), torch.stack(kls)


def ema_decay(decay: float, step: int) -> float:
    """The Polyak decay used after ``step`` updates (0-based): ``decay``, ramped up from 0.1 at the start."""
    return min(decay, (1 + step) / (10 + step))


def train_policy(model: StateWorldModel, starts: torch.Tensor, config: PolicyConfig, seed: int = 0,
                 progress: bool = False, callback=None) -> tuple[LatentPolicy, list[dict]]:
    """Learn a :class:`LatentPolicy` from imagined rollouts starting at observations ``starts [N, O]``.
    Returns the policy and a log (every 100 steps: mean imagined return, KL to the prior). With
    ``config.actor_ema`` the returned actor holds the Polyak average of the actor's weights over training.
    ``callback(step, policy)``, if given, is called after each update with the actor being trained."""
    from tqdm.auto import tqdm

    config.validate()
    check_execution(config.execute, model.action_idm is not None)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    policy = LatentPolicy(model, config)
    device = model.obs_mean.device
    policy.to(device)
    actor_optim = torch.optim.Adam(policy.actor.parameters(), lr=config.lr)
    critic_optim = torch.optim.Adam(policy.critic.parameters(), lr=config.lr)
    average = copy.deepcopy(policy.actor).requires_grad_(False) if config.actor_ema else None
    scale, history = torch.tensor(1.0), []
    bar = tqdm(range(config.steps), disable=not progress, desc="policy in imagination", unit="step", leave=False)
    for step in bar:
        x = model.normalize(starts[torch.randint(len(starts), (config.batch_size,), generator=generator)].to(device))
        states_t, reward, prior_kl = imagine(policy, x, config.horizon)
        value = policy.critic_target(states_t).squeeze(-1)
        returns = lambda_returns(reward, value, config.gamma, config.lam)
        discount = config.gamma ** torch.arange(config.horizon, dtype=returns.dtype, device=device)[:, None]
        # the returns' spread sets the scale, so prior_kl means the same on any task's reward
        scale = 0.99 * scale + 0.01 * returns.detach().std().clamp_min(1.0).cpu()
        actor_loss = (discount * (-returns / scale.to(device) + config.prior_kl * prior_kl)).mean()
        actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        nn.utils.clip_grad_norm_(policy.actor.parameters(), 10.0)
        actor_optim.step()
        if average is not None:
            with torch.no_grad():
                for p, ap in zip(policy.actor.parameters(), average.parameters()):
                    ap.lerp_(p, 1 - ema_decay(config.actor_ema, step))
        critic = policy.critic(states_t[:-1].detach()).squeeze(-1)
        critic_loss = F.mse_loss(critic, returns.detach())
        critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_optim.step()
        with torch.no_grad():
            for p, tp in zip(policy.critic.parameters(), policy.critic_target.parameters()):
                tp.lerp_(p, config.tau)
        if step % 100 == 0 or step == config.steps - 1:
            history.append({"step": step, "imagined_return": returns[0].mean().item(), "prior_kl": prior_kl.mean().item()})
            bar.set_postfix(ret=f"{history[-1]['imagined_return']:.1f}")
        if callback is not None:
            callback(step, policy)
    if average is not None:
        policy.actor.load_state_dict(average.state_dict())
    return policy.eval(), history
