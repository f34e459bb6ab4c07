"""Frame encoder f: a timm ViT, or a small conv net, applied to each step (a tubelet of k frames) of a clip.

Steps are encoded independently, so the encoder is frame-causal by construction: a step's tokens never
depend on later frames. A tubelet of k frames enters the ViT as 3k channels, ordered channel-major
(``c0t0, c0t1, c1t0, ...``), the flattening of a V-JEPA-style 3D patch embedding ``[D, 3, k, p, p]``.

Weights load from a local file in four layouts: a timm state dict, a V-JEPA 2 checkpoint
(``encoder``/``target_encoder`` sub-dicts, ``module.backbone.`` prefixes, 3D patch embedding), a
DINOv2 checkpoint (``teacher``/``backbone.`` prefixes, chunked blocks, class-token position embedding)
and a lavid run's own encoder (``lavid``: a run folder or one of its checkpoints, ViT or conv; with
``mode=frozen`` a predictor trains on features another run learned). Position embeddings of the first
three are resampled to the configured grid; a lavid encoder must match the config exactly.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from einops import rearrange
from torch import nn

from lavid.core.config import check

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EncoderConfig:
    """The frame encoder.

    Attributes:
        arch: ``vit`` (a timm ViT: ``N = (img_size / patch_size)²`` tokens a step) or ``conv`` (a DrQ-style
            conv stack and a projector: one vector of ``embed_dim`` a step; see :class:`ConvEncoder`).
        name: timm model name (``vit``); the size fields below override its defaults.
        img_size, patch_size, embed_dim, depth, num_heads: ViT geometry (``conv`` uses img_size and
            embed_dim).
        conv_channels, conv_hidden: the conv stack's channels and the projector's hidden width (``conv``).
        tubelet: frames per step (1 or 2).
        mode: ``frozen`` (no gradients), ``ema`` (finetuned; targets come from an EMA copy so the
            features cannot collapse to a constant) or ``e2e`` (trained end to end with the predictor,
            targets from the same encoder, kept from collapse by SIGReg, :mod:`lavid.models.sigreg`).
        ema_momentum: EMA decay of the target encoder per optimizer step.
        sigreg: weight of the SIGReg term (``e2e``); the statistic is scaled per frame, not per token.
        sigreg_directions: random projections per SIGReg evaluation.
        sigreg_change: weight of a second SIGReg term on the within-clip changes ``s_t+1 − s_t`` (``e2e``). The
            states' SIGReg alone is met by features that differ between episodes but not within one (reacher's
            target, drawn once an episode), and then copying predicts perfectly: a static collapse. This term
            makes that state costly; 0 turns it off. Measured on reacher (weight 0.1) the features then move but not
            with the action (gain 1.03); a higher ``sigreg`` (0.3) is what removed the collapse (BENCHMARKS.md,
            issue 34 part 3).
        random_shift: training clips are shifted by up to this many pixels (DrQ's augmentation,
            :mod:`lavid.data.augment`; one shift per clip); 0 turns it off. Evaluation never shifts.
        checkpoint: local weights file, or ``None`` for random initialization; for ``lavid`` also a run
            folder (its latest checkpoint) or a ``checkpoints/step_*`` folder.
        checkpoint_layout: ``auto``, ``timm``, ``vjepa2``, ``dinov2`` or ``lavid``.
        checkpoint_key: sub-dict to read from a V-JEPA 2 checkpoint (default ``target_encoder``), or which
            encoder of a lavid run (``encoder``, the default, or ``target_encoder`` of an EMA run).
        model_kwargs: extra keyword arguments for ``timm.create_model``.
        state_norm: the world model's states from the encoder's tokens: ``layer_norm``, ``raw``, or ``auto``
            (raw in ``e2e`` mode, whose SIGReg sets the tokens' scale; layer-normed otherwise). A frozen encoder
            taken from an ``e2e`` run wants ``raw``: the space that run predicted and planned in.
    """

    arch: Literal["vit", "conv"] = "vit"
    name: str = "vit_tiny_patch16_224"
    img_size: int = 64
    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    conv_channels: int = 32
    conv_hidden: int = 512
    tubelet: int = 1
    mode: Literal["frozen", "ema", "e2e"] = "ema"
    ema_momentum: float = 0.996
    sigreg: float = 0.1
    sigreg_directions: int = 256
    sigreg_change: float = 0.0
    random_shift: int = 0
    checkpoint: str | None = None
    checkpoint_layout: Literal["auto", "timm", "vjepa2", "dinov2", "lavid"] = "auto"
    checkpoint_key: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    state_norm: Literal["auto", "layer_norm", "raw"] = "auto"

    def validate(self, prefix: str = "") -> None:
        key = (prefix + ".") if prefix else ""
        check(self.tubelet in (1, 2), f"{key}tubelet", f"must be 1 or 2, got {self.tubelet}")
        check(self.img_size % self.patch_size == 0, f"{key}img_size",
              f"{self.img_size} is not a multiple of patch_size {self.patch_size}")
        check(self.embed_dim % self.num_heads == 0, f"{key}embed_dim",
              f"{self.embed_dim} is not divisible by num_heads {self.num_heads}")
        check(self.depth >= 1, f"{key}depth", "must be >= 1")
        check(0.0 <= self.ema_momentum < 1.0, f"{key}ema_momentum", "must be in [0, 1)")
        check(self.sigreg >= 0.0, f"{key}sigreg", f"must be >= 0, got {self.sigreg}")
        check(self.sigreg_directions >= 1, f"{key}sigreg_directions", "must be >= 1")
        check(self.sigreg_change >= 0.0, f"{key}sigreg_change", f"must be >= 0, got {self.sigreg_change}")
        check(0 <= self.random_shift < self.img_size // 2, f"{key}random_shift",
              f"must be in [0, img_size / 2), got {self.random_shift}")
        if self.arch == "conv":
            check(self.img_size % 8 == 0, f"{key}img_size", f"{self.img_size} is not a multiple of 8 (conv stack)")
            check(self.conv_channels >= 1 and self.conv_hidden >= 1, f"{key}conv_channels", "sizes must be >= 1")
            check(self.checkpoint is None or self.checkpoint_layout in ("auto", "lavid"), f"{key}checkpoint_layout",
                  "a conv encoder loads only a lavid run's weights (checkpoint_layout=lavid)")


class ConvEncoder(nn.Module):
    """A DrQ-style conv stack (three stride-2 and one stride-1 3×3 convolutions, ReLU) flattened into a
    Linear–BatchNorm–GELU–Linear projector: normalized tubelets ``[M, 3k, H, W]`` -> ``[M, embed_dim]``.

    The kind of encoder DMControl agents learn from pixels (DrQ, TD-MPC2), with LeWM's projector: one
    vector a frame, cheap enough to train end to end on a CPU.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        c = config.conv_channels
        self.net = nn.Sequential(
            nn.Conv2d(3 * config.tubelet, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Flatten())
        grid = config.img_size // 8
        self.projector = nn.Sequential(nn.Linear(c * grid * grid, config.conv_hidden),
                                       nn.BatchNorm1d(config.conv_hidden), nn.GELU(),
                                       nn.Linear(config.conv_hidden, config.embed_dim))

    def forward(self, tubelets: torch.Tensor) -> torch.Tensor:
        return self.projector(self.net(tubelets))


class FrameEncoder(nn.Module):
    """``[B, T, 3, H, W]`` normalized frames -> ``[B, T/k, N, D]`` step tokens (``N = 1`` for ``conv``)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.dim = config.embed_dim
        if config.arch == "conv":
            self.conv = ConvEncoder(config)
            self.num_tokens = 1
            if config.checkpoint:
                load_encoder_checkpoint(self, config.checkpoint, config.checkpoint_layout, config.checkpoint_key)
            return
        import timm

        self.vit = timm.create_model(
            config.name,
            pretrained=False,
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            in_chans=3 * config.tubelet,
            num_classes=0,
            global_pool="",
            class_token=False,
            **config.model_kwargs,
        )
        self.num_tokens = (config.img_size // config.patch_size) ** 2
        if config.checkpoint:
            load_encoder_checkpoint(self, config.checkpoint, config.checkpoint_layout, config.checkpoint_key)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Args: frames ``[B, T, 3, H, W]`` (T divisible by the tubelet). Returns ``[B, T/k, N, D]``."""
        batch, time = frames.shape[:2]
        k = self.config.tubelet
        if time % k:
            raise ValueError(f"clip of {time} frames is not a whole number of tubelets of {k}")
        tubelets = rearrange(frames, "b (s k) c h w -> (b s) (c k) h w", k=k)
        if self.config.arch == "conv":
            return rearrange(self.conv(tubelets), "(b s) d -> b s 1 d", b=batch)
        tokens = self.vit.forward_features(tubelets)
        tokens = tokens[:, self.vit.num_prefix_tokens :]
        return rearrange(tokens, "(b s) n d -> b s n d", b=batch)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float, ImageNet-normalized."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(3, 1, 1)
    return (frames.float() / 255.0 - mean) / std


# ---------------------------------------------------------------- checkpoint layouts


class CheckpointError(Exception):
    """A weights file that does not fit the configured encoder."""


_PREFIXES = ("module.", "backbone.", "_orig_mod.", "encoder.", "model.")


def detect_layout(raw: dict[str, Any]) -> str:
    keys = set(raw)
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("predictor.") for k in keys):
        return "lavid"  # a lavid world model's model.safetensors
    if {"encoder", "target_encoder"} & keys:
        return "vjepa2"
    if "teacher" in keys or any("ls1.gamma" in k or k.endswith("mask_token") for k in keys):
        return "dinov2"
    flat = [k for k in keys if k.endswith("patch_embed.proj.weight")]
    if flat and isinstance(raw[flat[0]], torch.Tensor) and raw[flat[0]].dim() == 5:
        return "vjepa2"
    return "timm"


def _unwrap(raw: dict[str, Any], layout: str, key: str | None) -> dict[str, torch.Tensor]:
    if layout == "vjepa2":
        for candidate in ([key] if key else ["target_encoder", "encoder"]):
            if candidate in raw:
                return raw[candidate]
        if key:
            raise CheckpointError(f"V-JEPA 2 checkpoint has no {key!r} entry (has: {', '.join(list(raw)[:8])})")
    for candidate in ([key] if key else ["teacher", "model", "state_dict"]):
        if candidate in raw and isinstance(raw[candidate], dict):
            return raw[candidate]
    return raw


def convert_state_dict(raw: dict[str, Any], encoder: FrameEncoder, layout: str = "auto",
                       key: str | None = None) -> dict[str, torch.Tensor]:
    """Map a checkpoint's keys and shapes onto ``encoder.vit``'s.

    Returns:
        A state dict for ``encoder.vit`` (keys it lacks are dropped by the caller and reported).
    """
    layout = detect_layout(raw) if layout == "auto" else layout
    state = _unwrap(raw, layout, key)
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        name = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", name)  # DINOv2 chunked (FSDP) blocks
        converted[name] = tensor
    target = encoder.vit.state_dict()
    k = encoder.config.tubelet
    weight = converted.get("patch_embed.proj.weight")
    if weight is not None:
        if weight.dim() == 5:  # [D, C, kt, p, p] -> [D, C*k, p, p] (channel-major, time-minor)
            if weight.shape[2] != k:
                weight = weight.mean(dim=2, keepdim=True).repeat(1, 1, k, 1, 1) * (weight.shape[2] / k)
            weight = rearrange(weight, "d c t h w -> d (c t) h w")
        elif weight.shape[1] == 3 and k > 1:  # inflate an image patch embedding over the tubelet
            weight = weight.repeat_interleave(k, dim=1) / k
        expected = target["patch_embed.proj.weight"].shape
        if weight.shape[-2:] != expected[-2:]:
            weight = torch.nn.functional.interpolate(weight.float(), size=expected[-2:], mode="bicubic",
                                                     align_corners=False).to(weight.dtype)
        converted["patch_embed.proj.weight"] = weight
    pos = converted.get("pos_embed")
    if pos is not None and "pos_embed" in target:
        converted["pos_embed"] = _resample_pos_embed(pos, target["pos_embed"].shape[1])
    return converted


def _resample_pos_embed(pos: torch.Tensor, num_tokens: int) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    tokens = pos.shape[1]
    side = int(round(tokens**0.5))
    prefix = 0
    if side * side != tokens:  # a class token (and registers) in front
        side = int(round((tokens - 1) ** 0.5))
        prefix = tokens - side * side
    grid = pos[:, prefix:]
    new_side = int(round(num_tokens**0.5))
    if side == new_side:
        return grid
    return resample_abs_pos_embed(grid, [new_side, new_side], [side, side], num_prefix_tokens=0)


def _lavid_weights_file(path: str) -> str:
    """A lavid run folder or ``checkpoints/step_*`` folder -> its ``model.safetensors``; a file stays."""
    from pathlib import Path

    from lavid.core.run_folders import WEIGHTS, weights_checkpoint

    folder = Path(path)
    if not folder.is_dir():
        return path
    checkpoint = weights_checkpoint(folder)
    if checkpoint is None:
        raise CheckpointError(f"encoder checkpoint {path} is a folder without a saved lavid checkpoint "
                              "(give a run folder, a checkpoints/step_* folder or a weights file)")
    return str(checkpoint / WEIGHTS)


def _load_lavid_encoder(encoder: FrameEncoder, raw: dict[str, Any], path: str, key: str | None) -> None:
    """Load a lavid run's ``<key>.*`` weights into ``encoder``, which must have the same architecture."""
    prefix = (key or "encoder") + "."
    state = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    if not state:
        found = sorted({k.split(".")[0] for k in raw})
        raise CheckpointError(f"{path} has no {prefix[:-1]!r} weights (has: {', '.join(found)})")
    target = encoder.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in state.items()
                  if k in target and v.shape != target[k].shape]
    if missing or unexpected or mismatched:
        detail = "; ".join(mismatched[:3] + [f"missing {k}" for k in missing[:3]]
                           + [f"unexpected {k}" for k in unexpected[:3]])
        raise CheckpointError(f"{path}'s {prefix[:-1]} does not fit the encoder config (arch, img_size, "
                              f"embed_dim, depth, ... must be the run's): {detail}")
    encoder.load_state_dict(state)
    log.info("loaded the %d tensors of %s's %s", len(state), path, prefix[:-1])


def load_encoder_checkpoint(encoder: FrameEncoder, path: str, layout: str = "auto", key: str | None = None) -> None:
    """Load weights from a local file (or a lavid run folder) into ``encoder``; fail clearly when they do not fit."""
    path = _lavid_weights_file(str(path)) if layout in ("auto", "lavid") else str(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"encoder checkpoint {path} does not exist") from None
    except Exception as error:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            try:
                raw = load_file(path)
            except Exception as safetensors_error:
                raise CheckpointError(f"cannot read encoder checkpoint {path}: {safetensors_error}") from None
        else:
            raise CheckpointError(f"cannot read encoder checkpoint {path}: {error}") from None
    if layout == "lavid" or (layout == "auto" and detect_layout(raw) == "lavid"):
        _load_lavid_encoder(encoder, raw, path, key)
        return
    if encoder.config.arch == "conv":
        raise CheckpointError(f"{path} is not a lavid run's weights; a conv encoder loads only those")
    state = convert_state_dict(raw, encoder, layout, key)
    target = encoder.vit.state_dict()
    usable = {k: v for k, v in state.items() if k in target}
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in usable.items()
                  if v.shape != target[k].shape]
    if mismatched:
        raise CheckpointError(f"{path} does not fit the encoder config: " + "; ".join(mismatched[:5]))
    missing = [k for k in target if k not in usable]
    if any(k.startswith("blocks.") for k in missing):
        raise CheckpointError(
            f"{path} lacks {len(missing)} encoder weights (e.g. {', '.join(missing[:4])}); is encoder.depth "
            "right and the layout (timm / vjepa2 / dinov2) the one this file uses?"
        )
    encoder.vit.load_state_dict(usable, strict=False)
    unused = sorted(set(state) - set(usable))
    log.info("loaded %d encoder tensors from %s (missing, kept at init: %s; unused: %d)", len(usable), path,
             ", ".join(missing) or "none", len(unused))


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """A short hash of an encoder's weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]
