"""A world model for control over few action-labeled and many unlabeled transitions, in one latent-action space.

On every transition the latent action comes from the inverse dynamics model ``q(z | o, o')``; on labeled
transitions also from the action encoder ``q(z | o, a)``. Both feed the same dynamics ``o' = o + f(o, z)``
and reward head ``r(o, z)``, are pulled towards the same prior ``p(z | o)`` and towards each other (the
alignment term), and an action decoder ``p(a | o, z)`` maps a latent back to a real action. By default
(``pseudo``) a supervised inverse dynamics model ``g(o, o' - o)``, fitted on the labeled transitions, also
labels the unlabeled ones, so the decoder learns in states no labeled episode visited. A policy that acts
in ``z`` is executed through ``g`` on the predicted next state (or through the decoder: ``PolicyConfig.execute``).

Observations are vectors (standardised by a :class:`~lavid.offline_rl.offline_data.Normalizer` fitted on
the data); actions are in [-1, 1]. Shapes: ``B`` batch, ``O`` observation, ``A`` action, ``Z`` latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lavid.offline_rl.offline_data import Normalizer, OfflineDataError, Transitions
from lavid.core.config import check


@dataclass
class StateWorldModelConfig:
    """Sizes and loss weights of :class:`StateWorldModel` and its training."""

    latent_dim: int = 8
    hidden: int = 256
    beta: float = 1e-3  # KL of both inferences to the prior p(z|o)
    align: float = 1.0  # KL(q(z|o,a) || q(z|o,o')): the two inferences agree
    decoder: float = 1.0
    reward: float = 1.0
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    # decode the posteriors' means, not samples: the decoder then reads z rather than memorising o from the
    # few labeled states (held-out R² -0.04 -> 0.36 on walker), but the policy scored lower (BENCHMARKS.md)
    decode_mean: bool = False
    # decoder coverage: on every transition (unlabeled ones too) decode the IDM's latent to an action and ask
    # the action encoder, frozen, to map that action back onto the IDM's posterior. The decoder then learns in
    # states no labeled episode visited, held to what the labeled data taught the encoder. 0: off. On walker it
    # reshaped the latent (one-step error 0.25 -> 0.36 x copy) and the policy scored lower (BENCHMARKS.md, part 4)
    cycle: float = 0.0
    # pseudo-labels: a supervised inverse dynamics model a = g(o, o' - o), fitted on the labeled transitions,
    # labels every transition, and the decoder learns p(a | o, z) on all of them at this weight (z detached, so
    # only the decoder's targets change). 0: off. On walker (8 of 80 episodes labeled) it lifts the decoder's
    # held-out R² from 0.25 to 0.34 on every seed; the policy's score moved within the seeds' noise (14.4 ->
    # 14.9 over 5 seeds; BENCHMARKS.md, offline RL part 4)
    pseudo: float = 1.0

    def validate(self, prefix: str = "model") -> None:
        prefix = f"{prefix}." if prefix else ""
        for name in ("latent_dim", "hidden", "steps", "batch_size"):
            check(getattr(self, name) >= 1, prefix + name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("beta", "align", "decoder", "reward", "cycle", "pseudo"):
            check(getattr(self, name) >= 0, prefix + name, f"must be >= 0, got {getattr(self, name)}")
        check(self.lr > 0, f"{prefix}lr", f"must be > 0, got {self.lr}")


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.LayerNorm(hidden), nn.ELU(), nn.Linear(hidden, hidden),
                         nn.ELU(), nn.Linear(hidden, out))


class Gaussian(nn.Module):
    """``x [B, I] -> (mean [B, Z], std [B, Z])`` of a diagonal Gaussian."""

    def __init__(self, inp: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.net = mlp(inp, hidden, 2 * latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(x).chunk(2, dim=-1)
        return mean, F.softplus(raw) + 1e-3


def kl(q: tuple[torch.Tensor, torch.Tensor], p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over the latent: ``[B]``."""
    (mq, sq), (mp, sp) = q, p
    return (torch.log(sp / sq) + (sq.pow(2) + (mq - mp).pow(2)) / (2 * sp.pow(2)) - 0.5).sum(-1)


def frozen(module: nn.Module, x: torch.Tensor):
    """``module(x)`` with its parameters detached: gradients reach ``x`` but not the module."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, (x,))


def sample(dist: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    mean, std = dist
    return mean + std * torch.randn_like(std)


class StateWorldModel(nn.Module):
    """IDM, action encoder, prior, dynamics, reward head and action decoder over normalised observations."""

    def __init__(self, obs_dim: int, action_dim: int, config: StateWorldModelConfig, normalizer: Normalizer) -> None:
        super().__init__()
        h, z = config.hidden, config.latent_dim
        self.config, self.action_dim = config, action_dim
        self.register_buffer("obs_mean", normalizer.mean.clone())
        self.register_buffer("obs_std", normalizer.std.clone())
        self.idm = Gaussian(2 * obs_dim, h, z)
        self.action_encoder = Gaussian(obs_dim + action_dim, h, z)
        self.prior = Gaussian(obs_dim, h, z)
        self.dynamics = mlp(obs_dim + z, h, obs_dim)
        self.reward_head = mlp(obs_dim + z, h, 1)
        self.action_decoder = mlp(obs_dim + z, h, action_dim)
        # built only when used, so that a model without it draws the same random numbers as before
        self.action_idm = mlp(2 * obs_dim, h, action_dim) if config.pseudo > 0 else None

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def step(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``x [B, O]``, latent ``z [B, Z]`` -> (next normalised observation ``[B, O]``, reward ``[B]``)."""
        xz = torch.cat([x, z], dim=-1)
        return x + self.dynamics(xz), self.reward_head(xz).squeeze(-1)

    def decode(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The real action ``[B, A]`` in [-1, 1] for latent ``z`` in normalised state ``x``."""
        return torch.tanh(self.action_decoder(torch.cat([x, z], dim=-1)))

    def label(self, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """The supervised IDM's action ``[B, A]`` in [-1, 1] for normalised ``x, x_next [B, O]`` (``pseudo > 0``)."""
        return torch.tanh(self.action_idm(torch.cat([x, x_next - x], dim=-1)))

    def loss(self, obs: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor,
             labeled: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """All terms on a batch of transitions, plus the labeled terms on ``labeled = (obs, next_obs, reward,
        action)`` when given."""
        cfg = self.config
        x, x_next = self.normalize(obs), self.normalize(next_obs)
        q_idm = self.idm(torch.cat([x, x_next], dim=-1))
        pred, r = self.step(x, sample(q_idm))
        dyn = F.mse_loss(pred, x_next)
        rew = F.mse_loss(r, reward)
        prior_kl = kl(q_idm, self.prior(x)).mean()
        total = dyn + cfg.reward * rew + cfg.beta * prior_kl
        stats = {"dynamics": dyn.item(), "reward": rew.item(), "kl": prior_kl.item()}
        if cfg.cycle > 0:
            target = tuple(t.detach() for t in q_idm)
            back = frozen(self.action_encoder, torch.cat([x, self.decode(x, sample(target))], dim=-1))
            cycle = kl(back, target).mean()
            total = total + cfg.cycle * cycle
            stats["cycle"] = cycle.item()
        if cfg.pseudo > 0:
            with torch.no_grad():  # a target only: no graph through the supervised IDM
                target_action = self.label(x, x_next)
            pseudo = F.mse_loss(self.decode(x, sample(q_idm).detach()), target_action)
            total = total + cfg.pseudo * pseudo
            stats["pseudo"] = pseudo.item()
        if labeled is not None:
            lo, ln, lr, la = labeled
            lx, lx_next = self.normalize(lo), self.normalize(ln)
            q_idm_l = self.idm(torch.cat([lx, lx_next], dim=-1))
            q_act = self.action_encoder(torch.cat([lx, la], dim=-1))
            z_act = sample(q_act)
            pred_a, r_a = self.step(lx, z_act)
            dyn_a = F.mse_loss(pred_a, lx_next)
            rew_a = F.mse_loss(r_a, lr)
            if cfg.decode_mean:
                decoded = F.mse_loss(self.decode(lx, q_act[0]), la) + F.mse_loss(self.decode(lx, q_idm_l[0]), la)
            else:
                decoded = F.mse_loss(self.decode(lx, z_act), la) + F.mse_loss(self.decode(lx, sample(q_idm_l)), la)
            align = kl(q_act, q_idm_l).mean()
            if cfg.pseudo > 0:
                supervised = F.mse_loss(self.label(lx, lx_next), la)
                total = total + supervised
                stats["supervised_idm"] = supervised.item()
            total = total + dyn_a + cfg.reward * rew_a + cfg.decoder * decoded + cfg.align * align \
                + cfg.beta * kl(q_act, self.prior(lx)).mean()
            stats.update(dynamics_action=dyn_a.item(), decoder=decoded.item(), align=align.item())
        return total, stats


def train_state_world_model(data: Transitions, config: StateWorldModelConfig, seed: int = 0, labeled_only: bool = False,
                       progress: bool = False, device: str | torch.device = "cpu") -> StateWorldModel:
    """Fit a :class:`StateWorldModel` on ``data`` (``labeled_only``: on its labeled transitions alone, the
    baseline that cannot use unlabeled data)."""
    from tqdm.auto import tqdm

    config.validate()
    if len(data.labeled) == 0:
        raise OfflineDataError("no labeled transition: the action decoder needs some")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rows = data.labeled if labeled_only else torch.arange(len(data))
    model = StateWorldModel(data.obs.shape[1], data.action.shape[1], config, Normalizer.fit(data.obs[rows])).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=config.lr)
    bar = tqdm(range(config.steps), disable=not progress, desc="latent-action model", unit="step", leave=False)
    for _ in bar:
        pick = rows[torch.randint(len(rows), (config.batch_size,), generator=generator)]
        lab = torch.randint(len(data.labeled), (config.batch_size,), generator=generator)
        lrows = data.labeled[lab]
        batch = [t.to(device) for t in (data.obs[pick], data.next_obs[pick], data.reward[pick])]
        labeled = tuple(t.to(device) for t in (data.obs[lrows], data.next_obs[lrows], data.reward[lrows], data.action[lab]))
        loss, stats = model.loss(*batch, labeled)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optim.step()
        bar.set_postfix(dyn=f"{stats['dynamics']:.3f}", dec=f"{stats['decoder']:.3f}")
    return model.eval()
