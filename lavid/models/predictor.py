"""Predictor p(s_0..t, c_t) -> ŝ_t+1: a frame-causal transformer conditioned per step by AdaLN-zero.

All tokens of all steps attend jointly under a block-causal mask (a token of step t sees steps <= t).
``attention: mask`` passes that mask to ``scaled_dot_product_attention`` as a dense boolean tensor, which rules
out the fused flash kernel on a GPU; ``attention: flex`` runs ``torch.nn.attention.flex_attention`` with the
same rule as a block mask (compiled on CUDA, where it makes a fused kernel of it; eager elsewhere): the same
outputs to float tolerance.
The condition ``c_t`` of each step (a latent action, or a real action for an action-conditioned model)
sets the shift, scale and gate of every block for that step's tokens. Gates and the output layer start
at zero: every block is the identity at initialization and the first prediction is ŝ_t+1 = s_t.

Because a step sees only itself and earlier steps, and its own condition, its keys and values in every
block never change once computed. Imagination therefore decodes one step at a time with a
:class:`KVCache` (the earlier steps' keys and values per block) instead of rerunning the whole growing
sequence for every new step; :meth:`Predictor.rollout` does, and gives the same predictions to float
tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lavid.core.config import check
from lavid.models.layers import MLP, sincos_1d, sincos_2d


@dataclass
class PredictorConfig:
    """Attributes:
        dim, depth, num_heads, mlp_ratio: transformer size.
        max_steps: longest sequence of steps (temporal position table).
        predict_residual: predict ŝ_t+1 − s_t (so the untrained model copies the last step).
        checkpoint_activations: in training, keep only each block's input and recompute the block in the
            backward pass (``torch.utils.checkpoint``): less activation memory for about a third more
            compute; the same loss and gradients.
        attention: how the block-causal rule reaches the attention of a whole sequence: ``mask`` (a dense
            boolean mask to ``scaled_dot_product_attention``) or ``flex`` (``flex_attention`` with a block
            mask, fused when compiled on CUDA). Imagination's one-step calls need no mask either way.
    """

    dim: int = 192
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    max_steps: int = 64
    predict_residual: bool = True
    checkpoint_activations: bool = False
    attention: str = "mask"

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.dim % self.num_heads == 0, f"{key}dim", f"{self.dim} not divisible by num_heads {self.num_heads}")
        check(self.dim % 4 == 0, f"{key}dim", "must be divisible by 4 (2D position embedding)")
        check(self.depth >= 1, f"{key}depth", "must be >= 1")
        check(self.max_steps >= 2, f"{key}max_steps", "must be >= 2")
        check(self.attention in ("mask", "flex"), f"{key}attention", f"must be mask or flex, got {self.attention!r}")


def frame_causal_mask(steps: int, tokens: int, device: torch.device | None = None) -> torch.Tensor:
    """``[steps*tokens, steps*tokens]`` bool, True where a query token may attend a key token."""
    step_of = torch.arange(steps, device=device).repeat_interleave(tokens)
    return step_of[:, None] >= step_of[None, :]


def frame_causal_block_mask(steps: int, tokens: int, device: torch.device):
    """The rule of :func:`frame_causal_mask` as a ``flex_attention`` ``BlockMask`` (no dense tensor)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def may_attend(batch, head, query, key):
        return query // tokens >= key // tokens

    length = steps * tokens
    return create_block_mask(may_attend, B=None, H=None, Q_LEN=length, KV_LEN=length, device=device)


@cache
def _compiled_flex():
    """``flex_attention`` compiled once per process: on CUDA that is what makes it a fused kernel."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    """``flex_attention`` of ``[B, heads, L, head dim]`` q, k, v: compiled on CUDA, eager elsewhere (the CPU's
    eager path is unfused but exact: the equivalence tests run it)."""
    import warnings

    if q.is_cuda:
        return _compiled_flex()(q, k, v, block_mask=block_mask)
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():  # "called without torch.compile": intended off CUDA
        warnings.simplefilter("ignore")
        return flex_attention(q, k, v, block_mask=block_mask)


class KVCache:
    """The keys and values of the steps a predictor has seen, per block: ``[B, heads, steps·N, head dim]``
    each. ``steps`` counts them; the next call's steps take the time positions that follow."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.steps = 0

    def extend(self, block: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this call's keys and values of ``block``; returns all of them."""
        if block in self.keys:
            keys = torch.cat([self.keys[block], keys], dim=2)
            values = torch.cat([self.values[block], values], dim=2)
        self.keys[block], self.values[block] = keys, values
        return keys, values


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask, cache: KVCache | None = None, block: int = 0) -> torch.Tensor:
        """``mask``: a boolean tensor (True: may attend), a flex ``BlockMask``, or ``None`` (every key)."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        if cache is not None:
            k, v = cache.extend(block, k, v)
        if mask is None or isinstance(mask, torch.Tensor):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out = flex(q, k, v, mask)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated per step by the condition (AdaLN-zero)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None, tokens: int,
                cache: KVCache | None = None, block: int = 0) -> torch.Tensor:
        """x ``[B, S*N, D]``; cond ``[B, S, D]`` (one per step); mask ``[S*N, (P+S)*N]`` over the ``P`` cached
        and the ``S`` new steps' tokens (``None``: every key)."""
        modulation = self.modulation(cond).repeat_interleave(tokens, dim=1)  # [B, S*N, 6D]
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation.chunk(6, dim=-1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1, mask, cache, block)
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


class Predictor(nn.Module):
    """``states [B, S, N, D_enc]``, ``cond [B, S, C]`` -> next-step predictions ``[B, S, N, D_enc]``.

    Output ``t`` predicts step ``t + 1`` from steps ``0..t`` and conditions ``0..t``.

    Args:
        config: sizes.
        in_dim: encoder token dim D_enc.
        num_tokens: tokens per step N.
        cond_dim: condition size C (latent dim, or an action dim).
        cache_mask: reuse the attention mask across calls (False builds it every call: the naive way,
            kept for the benchmark).
    """

    def __init__(self, config: PredictorConfig, in_dim: int, num_tokens: int, cond_dim: int,
                 cache_mask: bool = True) -> None:
        super().__init__()
        self.config, self.num_tokens, self.cache_mask = config, num_tokens, cache_mask
        self.project = nn.Linear(in_dim, config.dim)
        self.register_buffer("space", sincos_2d(num_tokens, config.dim), persistent=False)
        self.register_buffer("time", sincos_1d(config.max_steps, config.dim), persistent=False)
        self.cond_embed = nn.Sequential(nn.Linear(cond_dim, config.dim), nn.SiLU(), nn.Linear(config.dim, config.dim))
        self.blocks = nn.ModuleList(AdaLNBlock(config.dim, config.num_heads, config.mlp_ratio)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(config.dim, 2 * config.dim))
        self.head = nn.Linear(config.dim, in_dim)
        for layer in (self.final_modulation[1], self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self._masks: dict[tuple, object] = {}  # boolean tensors, or flex BlockMasks

    def mask(self, steps: int, device: torch.device):
        """The block-causal rule over ``steps`` whole steps: a boolean ``[L, L]`` tensor, or a flex
        ``BlockMask`` with ``attention: flex``."""
        make = frame_causal_block_mask if self.config.attention == "flex" else frame_causal_mask
        if not self.cache_mask:
            return make(steps, self.num_tokens, device)
        key = (steps, str(device))
        if key not in self._masks:
            self._masks[key] = make(steps, self.num_tokens, device)
        return self._masks[key]

    def forward(self, states: torch.Tensor, cond: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """With a ``cache``, ``states`` are the steps that follow the cached ones (time positions
        ``cache.steps ..``); they attend to the cached steps and the cache grows by them."""
        batch, steps, tokens, _ = states.shape
        start = cache.steps if cache is not None else 0
        if tokens != self.num_tokens:
            raise ValueError(f"predictor built for {self.num_tokens} tokens per step, got {tokens}")
        if start + steps > self.config.max_steps:
            raise ValueError(f"{start + steps} steps exceed predictor.max_steps={self.config.max_steps}")
        x = self.project(states) + self.space + self.time[start:start + steps, None, :]
        x = rearrange(x, "b s n d -> b (s n) d")
        c = self.cond_embed(cond)
        if start == 0:
            mask = self.mask(steps, states.device)
        elif steps == 1:
            mask = None  # one new step sees every cached step and all of its own tokens
        else:
            mask = frame_causal_mask(start + steps, tokens, states.device)[start * tokens:]
        for index, block in enumerate(self.blocks):
            if self.config.checkpoint_activations and self.training and cache is None and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(block, x, c, mask, tokens, use_reentrant=False)
            else:
                x = block(x, c, mask, tokens, cache, index)
        if cache is not None:
            cache.steps += steps
        shift, scale = self.final_modulation(c).repeat_interleave(tokens, dim=1).chunk(2, dim=-1)
        out = self.head(self.norm(x) * (1 + scale) + shift)
        out = rearrange(out, "b (s n) d -> b s n d", s=steps)
        return states + out if self.config.predict_residual else out

    @torch.no_grad()
    def rollout(self, context: torch.Tensor, latents: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        """Predict ``H`` future steps autoregressively, without gradients (:meth:`imagine` with them).

        Args:
            context: ``[B, S0, N, D]`` observed steps.
            latents: ``[B, S0 - 1 + H, C]``: the conditions of the transitions inside the context, then
                the ``H`` transitions to predict.
            use_cache: decode one new step per call over a :class:`KVCache` (False: rerun the whole sequence
                for every step, the way it was done before; kept for the benchmark and the equivalence test).

        Returns:
            ``[B, H, N, D]`` predicted steps ``S0 .. S0 + H - 1``.
        """
        return self.imagine(context, latents, use_cache)

    def imagine(self, context: torch.Tensor, latents: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        """:meth:`rollout` with gradients where they are enabled (a training loss on the model's own rollouts)."""
        observed = context.shape[1]
        horizon = latents.shape[1] - observed + 1
        if horizon < 1:
            raise ValueError(f"need at least {observed} latents for a context of {observed} steps")
        if use_cache and observed + horizon - 1 <= self.config.max_steps:  # decode one step at a time over cached keys / values
            cache = KVCache()
            out = self.forward(context, latents[:, :observed], cache)[:, -1:]
            predictions = [out]
            for h in range(1, horizon):
                out = self.forward(out, latents[:, observed + h - 1:observed + h], cache)
                predictions.append(out)
            return torch.cat(predictions, dim=1)
        states = context  # longer than the position table: a sliding window, the whole window every step
        predictions = []
        for h in range(horizon):
            steps = states.shape[1]
            window = max(0, steps - self.config.max_steps)
            out = self.forward(states[:, window:], latents[:, window:steps])[:, -1:]
            predictions.append(out)
            states = torch.cat([states, out], dim=1)
        return torch.cat(predictions, dim=1)
