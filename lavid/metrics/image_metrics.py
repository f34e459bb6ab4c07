"""Pixel metrics on frames in [0, 1]: PSNR, SSIM, and LPIPS when its weights are on local disk.

SSIM follows Wang et al. (2004): an 11×11 Gaussian window (σ = 1.5), C1 = (0.01)², C2 = (0.03)², computed
per channel and averaged. LPIPS needs pretrained network weights, which are never downloaded here:
:func:`load_lpips` returns ``None`` (and says why in one line) unless the ``lpips`` package and a local
weights file are both available.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB. Inputs ``[..., 3, H, W]`` in [0, 1]; returns ``[...]``."""
    mse = (prediction.float() - target.float()).pow(2).flatten(-3).mean(-1)
    return 10.0 * torch.log10(1.0 / mse.clamp(min=1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(prediction: torch.Tensor, target: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-image SSIM. Inputs ``[..., 3, H, W]`` in [0, 1] (H, W >= ``window``); returns ``[...]``."""
    lead = prediction.shape[:-3]
    x = prediction.float().reshape(-1, *prediction.shape[-3:])
    y = target.float().reshape(-1, *target.shape[-3:])
    channels = x.shape[1]
    kernel = _gaussian_window(window).to(x.device).expand(channels, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(-1).reshape(lead)


class LPIPS:
    """LPIPS (AlexNet) from local files: the backbone's torchvision weights at ``path``."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        import lpips  # optional dependency

        self.net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        backbone = torch.load(path, map_location="cpu", weights_only=True)
        features = {k.removeprefix("features."): v for k, v in backbone.items() if k.startswith("features.")}
        layers = [m for m in self.net.net.modules() if isinstance(m, torch.nn.Conv2d)]
        convs = sorted({int(k.split(".")[0]) for k in features})
        if len(convs) != len(layers):
            raise ValueError(f"{path} is not a torchvision AlexNet state dict")
        for layer, index in zip(layers, convs):
            layer.weight.data.copy_(features[f"{index}.weight"])
            layer.bias.data.copy_(features[f"{index}.bias"])
        self.net.to(device).eval()

    @torch.no_grad()
    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lead = prediction.shape[:-3]
        x = prediction.reshape(-1, *prediction.shape[-3:]) * 2 - 1
        y = target.reshape(-1, *target.shape[-3:]) * 2 - 1
        return self.net(x, y).flatten().reshape(lead)


def load_lpips(path: str | os.PathLike | None, device: str | torch.device = "cpu") -> LPIPS | None:
    """LPIPS from a local AlexNet weights file, or ``None`` with a one-line notice (never a download)."""
    if path is None:
        log.info("LPIPS not reported: pass --lpips-weights with a local torchvision AlexNet state dict to add it")
        return None
    if not Path(path).exists():
        log.warning("LPIPS not reported: weights file %s does not exist", path)
        return None
    try:
        return LPIPS(path, device)
    except ImportError:
        log.warning("LPIPS not reported: the 'lpips' package is not installed (pip install lpips)")
    except Exception as error:  # a wrong file must not stop the evaluation
        log.warning("LPIPS not reported: %s", error)
    return None
