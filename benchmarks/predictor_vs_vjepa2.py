"""lavid's predictor against V-JEPA 2's action-conditioned predictor at the same size, side by side.

Both predict the next step's tokens from the past, frame-causally, conditioned on one vector a step:
lavid modulates every block's norms with it (AdaLN-zero, :class:`lavid.models.predictor.Predictor`); V-JEPA 2-AC
(facebookresearch/vjepa2, ``src/models/ac_predictor.py``, MIT) interleaves an action and a state token
before each frame's tokens and attends with 3D RoPE. Measured here: one training step (forward, a
regression loss to a random target, backward, AdamW) at predictor width ``dim``, ``depth`` blocks,
``heads`` heads, ``steps`` × ``grid²`` tokens, batch ``batch``; the two models alternate step by step and
the medians are compared. The V-JEPA 2 row needs a local checkout (``--vjepa2 PATH``, the folder that
holds ``src/``; nothing is downloaded) and its imports (timm); without one it is skipped.

Usage:
    python benchmarks/predictor_vs_vjepa2.py --vjepa2 ~/src/vjepa2 [--repeats 20] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from lavid.models.predictor import Predictor, PredictorConfig


def checkout_module(checkout: Path, name: str):
    """Module ``name`` of V-JEPA 2's top-level ``src`` package in ``checkout``, without putting the checkout on the
    import path: ``src`` is registered from its folder, and its own ``src.*`` imports resolve there."""
    import importlib
    import importlib.machinery
    import importlib.util

    folder = checkout / "src"
    init = folder / "__init__.py"
    if init.exists():
        spec = importlib.util.spec_from_file_location("src", init, submodule_search_locations=[str(folder)])
    else:  # a namespace package
        spec = importlib.machinery.ModuleSpec("src", None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    package = importlib.util.module_from_spec(spec)
    sys.modules["src"] = package
    if spec.loader is not None:
        spec.loader.exec_module(package)
    return importlib.import_module(name)


def vjepa2_predictor(checkout: Path, dim: int, depth: int, heads: int, steps: int, grid: int, action_dim: int):
    """V-JEPA 2's AC predictor (its own code, from ``checkout``) at the given size, or an error message."""
    if not (checkout / "src" / "models" / "ac_predictor.py").exists():
        return f"{checkout} has no src/models/ac_predictor.py (pass the root of a facebookresearch/vjepa2 checkout)"
    try:
        vit_ac_predictor = checkout_module(checkout, "src.models.ac_predictor").vit_ac_predictor
    except ImportError as error:
        return f"cannot import V-JEPA 2's predictor from {checkout}: {error}"
    patch = 16
    return vit_ac_predictor(img_size=grid * patch, patch_size=patch, num_frames=2 * steps, tubelet_size=2,
                            embed_dim=dim, predictor_embed_dim=dim, depth=depth, num_heads=heads,
                            action_embed_dim=action_dim, use_rope=True, is_frame_causal=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vjepa2", type=Path, default=None, help="local facebookresearch/vjepa2 checkout")
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="time steps a clip")
    parser.add_argument("--grid", type=int, default=8, help="tokens a step = grid²")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokens = args.grid**2
    b, s, d = args.batch, args.steps, args.dim

    torch.manual_seed(0)
    models = {"lavid (AdaLN-zero, per-step condition)": Predictor(
        PredictorConfig(dim=d, depth=args.depth, num_heads=args.heads, max_steps=s), d, tokens, args.action_dim)}
    notice = "no --vjepa2 checkout given"
    if args.vjepa2 is not None:
        built = vjepa2_predictor(args.vjepa2.expanduser(), d, args.depth, args.heads, s, args.grid, args.action_dim)
        if isinstance(built, str):
            notice = built
        else:
            models["V-JEPA 2-AC (action + state tokens, RoPE)"] = built
    states = torch.randn(b, s, tokens, d, device=device)
    actions = torch.randn(b, s, args.action_dim, device=device)
    proprio = torch.randn(b, s, args.action_dim, device=device)
    target = torch.randn(b, s, tokens, d, device=device)

    def step_fn(name: str, model: torch.nn.Module):
        if name.startswith("lavid"):
            return lambda: model(states, actions)
        return lambda: model(states.flatten(1, 2), actions, proprio).view(b, s, tokens, d)

    runs = {}
    for name, model in models.items():
        model.to(device).train()
        runs[name] = (step_fn(name, model), torch.optim.AdamW(model.parameters(), lr=1e-4),
                      sum(p.numel() for p in model.parameters()))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.repeats + 2):  # two warm-up rounds
        for name, (forward, optimizer, _) in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = torch.nn.functional.l1_loss(forward(), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    print(f"predictor training step, dim {d}, depth {args.depth}, {args.heads} heads, {s} steps x {tokens} tokens, "
          f"batch {b}, torch {torch.__version__}, {args.device}"
          + (f", {args.threads} threads" if device.type == "cpu" else "") + f", median of {args.repeats}")
    print("| predictor | parameters | ms / step (median) | × lavid |")
    print("|---|---|---|---|")
    reference = statistics.median(next(iter(times.values())))
    for name, (_, _, params) in runs.items():
        median = statistics.median(times[name])
        print(f"| {name} | {params / 1e6:.2f} M | {median * 1000:.1f} | {median / reference:.2f} |")
    if len(runs) == 1:
        print(f"(V-JEPA 2 row skipped: {notice})")


if __name__ == "__main__":
    main()
