"""Choose the frame representation: state probes and the true-action test, per CPU-minute.

    python benchmarks/representation.py --data data/jaco --encoders vit64,vit16,pixels,conv --steps 600

For each frozen frame encoder, every stored frame of the datasets is encoded once, then:
1. the held-out state probe (:mod:`lavid.metrics.state_probe`): R² of pose and of pose change, per task;
2. the true-action test: lavid's predictor trained on the cached features twice from the same seed,
   conditioned on the true actions of each step (stacked over the frame stride) and on nothing
   (deterministic), scored on held-out episodes as one-step L1 ÷ copy L1, and with the actions
   rolled across the batch. A representation in which the action helps gives action ratio well below
   the deterministic one, and rolled actions well above the own actions.

Encoders (all frozen; ``+mae`` pretrains a ViT with :mod:`lavid.models.mae` on the training frames first):
``vit64`` random ViT patch 8 (64 tokens), ``vit16`` patch 16 (16 tokens), ``vitpool`` vit64 mean-pooled
to one token, ``mae64``/``mae16`` MAE-pretrained, ``conv`` a random DrQ-style conv stack (8×8 grid
tokens), ``pixels`` the 8×8 pixel patches themselves (16 tokens of 16×16×3: what the data holds).
Trained first, then frozen: ``e2e-history`` / ``e2e-action`` a conv + projector trained end to end with a
predictor (without / with the true actions) and SIGReg, as the default job trains its encoder;
``supervised`` the same conv + projector trained to regress the pose from each training frame, with the
labels: the ceiling of what this encoder and these training episodes allow the probe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class PixelPatches(nn.Module):
    """uint8-normalized frames ``[B, T, 3, H, W]`` -> non-overlapping patches as tokens ``[B, T, N, 3p²]``."""

    def __init__(self, patch: int) -> None:
        super().__init__()
        self.patch = patch

    def forward(self, frames):
        return rearrange(frames, "b t c (h p) (w q) -> b t (h w) (c p q)", p=self.patch, q=self.patch)


class ConvGrid(nn.Module):
    """A random DrQ-style conv stack; its last feature map (8×8 for 64² frames) as tokens ``[B, T, 64, C]``."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, channels, 3, 2, 1), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2, 1),
                                 nn.ReLU(), nn.Conv2d(channels, channels, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, frames):
        b = frames.shape[0]
        out = self.net(rearrange(frames, "b t c h w -> (b t) c h w"))
        return rearrange(out, "(b t) c h w -> b t (h w) c", b=b)


class ConvProjector(nn.Module):
    """A trainable DrQ-style conv stack, flattened, then a Linear–BatchNorm–GELU–Linear projector:
    frames ``[B, T, 3, H, W]`` -> one vector per frame ``[B, T, 1, dim]``."""

    def __init__(self, size: int, dim: int = 64, channels: int = 32, hidden: int = 512) -> None:
        super().__init__()
        self.conv = ConvGrid(channels).net
        grid = size // 8
        self.projector = nn.Sequential(nn.Linear(channels * grid * grid, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
                                       nn.Linear(hidden, dim))

    def forward(self, frames):
        b = frames.shape[0]
        out = self.conv(rearrange(frames, "b t c h w -> (b t) c h w")).flatten(1)
        return rearrange(self.projector(torch.relu(out)), "(b t) d -> b t 1 d", b=b)


class BackboneOf(nn.Module):
    """A :class:`ConvProjector`'s conv stack alone: frames ``[B, T, 3, H, W]`` -> ``[B, T, 1, C·(H/8)·(W/8)]``."""

    def __init__(self, encoder: ConvProjector) -> None:
        super().__init__()
        self.conv = encoder.conv

    def forward(self, frames):
        b = frames.shape[0]
        out = torch.relu(self.conv(rearrange(frames, "b t c h w -> (b t) c h w"))).flatten(1)
        return rearrange(out, "(b t) f -> b t 1 f", b=b)


def pretrain_end_to_end(episodes, size: int, condition: str, steps: int, clip_steps: int, batch: int,
                        weight: float, seed: int = 0):
    """Train :class:`ConvProjector` and a predictor together: MSE of the next frame's embedding plus
    ``weight`` × SIGReg over all frames of the batch (scaled per frame). ``condition`` is ``action``
    (the true actions) or ``history`` (nothing: label-free). Returns the encoder."""
    from lavid.models.encoder import normalize_frames
    from lavid.models.predictor import Predictor, PredictorConfig
    from lavid.models.sigreg import sigreg

    torch.manual_seed(seed)
    train = [e for e in episodes if not e["heldout"]]
    action_dim = max(e["action"].shape[1] for e in episodes)
    encoder = ConvProjector(size)
    cond_dim = action_dim if condition == "action" else 1
    predictor = Predictor(PredictorConfig(dim=128, depth=3, num_heads=4, max_steps=clip_steps), 64, 1, cond_dim)
    params = list(encoder.parameters()) + list(predictor.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.04)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    starts = [(i, s) for i, e in enumerate(train) for s in range(len(e["frames"]) - clip_steps + 1)]
    started = time.perf_counter()
    for step in range(steps):
        picks = torch.randint(len(starts), (batch,), generator=generator).tolist()
        frames = torch.stack([train[starts[p][0]]["frames"][starts[p][1] : starts[p][1] + clip_steps] for p in picks])
        actions = torch.stack([F.pad(train[starts[p][0]]["action"], (0, action_dim - train[starts[p][0]]["action"].shape[1]))
                               [starts[p][1] : starts[p][1] + clip_steps] for p in picks])
        z = encoder(normalize_frames(frames))
        cond = actions[:, :-1] if condition == "action" else actions.new_zeros(batch, clip_steps - 1, 1)
        prediction = (predictor(z[:, :-1], cond) - z[:, 1:]).pow(2).mean()
        spread = sigreg(z.flatten(0, 2), generator=generator)
        loss = prediction + weight * spread
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"  e2e-{condition} step {step}: prediction {prediction.item():.4f} sigreg {spread.item():.2f} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    return encoder


def train_supervised(episodes, size: int, steps: int, batch: int, seed: int = 0):
    """The probe's ceiling: :class:`ConvProjector` trained to regress each training frame's pose (the
    state probe's targets, standardized per task, one linear head per task) directly. What a conv of this
    size at this resolution can read off these training episodes, labels included; its 64-d output then
    goes through the same ridge probe as every other encoder. Returns the encoder."""
    from lavid.metrics.state_probe import pose_groups, pose_targets
    from lavid.models.encoder import normalize_frames

    torch.manual_seed(seed)
    train = [e for e in episodes if not e["heldout"]]
    tasks = sorted({e["task"] for e in train})
    frames, targets, task_of = [], {}, []
    for e in train:
        frames.append(e["frames"])
        task_of += [tasks.index(e["task"])] * len(e["frames"])
        groups = pose_groups(e["task"], e["state"].shape[1])
        targets.setdefault(e["task"], []).append(pose_targets(e["task"], groups, e["state"]))
    frames, task_of = torch.cat(frames), torch.tensor(task_of)
    stacked = {t: torch.cat(v) for t, v in targets.items()}
    width = max(v.shape[1] for v in stacked.values())
    target = torch.zeros(len(frames), width)
    mask = torch.zeros(len(frames), width)
    for i, t in enumerate(tasks):  # standardized per task, zero-padded to the widest task
        v = stacked[t]
        target[task_of == i, : v.shape[1]] = (v - v.mean(0)) / (v.std(0) + 1e-6)
        mask[task_of == i, : v.shape[1]] = 1.0
    encoder = ConvProjector(size)
    heads = nn.Parameter(torch.randn(len(tasks), 64, width) * 64 ** -0.5)
    params = list(encoder.parameters()) + [heads]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.04)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(frames), (batch,), generator=generator)
        z = encoder(normalize_frames(frames[idx])[:, None])[:, 0, 0]
        prediction = torch.einsum("bd,bdp->bp", z, heads[task_of[idx]])
        loss = ((prediction - target[idx]).pow(2) * mask[idx]).sum() / mask[idx].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"  supervised step {step}: pose MSE (standardized) {loss.item():.4f} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    return encoder


def make_encoder(name: str, size: int, train_frames, mae_steps: int, episodes=None, args=None):
    from lavid.models.encoder import EncoderConfig, FrameEncoder

    torch.manual_seed(0)
    if name.startswith("e2e-"):
        return pretrain_end_to_end(episodes, size, name[4:], args.e2e_steps, args.clip_steps, args.e2e_batch,
                                   args.sigreg)
    if name == "supervised":
        return train_supervised(episodes, size, args.e2e_steps, 2 * args.e2e_batch)
    if name == "pixels":
        return PixelPatches(size // 4)
    if name == "conv":
        return ConvGrid()
    patch = 16 if name.endswith("16") else 8
    config = EncoderConfig(img_size=size, patch_size=patch, embed_dim=128, depth=4, num_heads=4, mode="frozen")
    encoder = FrameEncoder(config)
    if name.startswith("mae"):
        from lavid.models.mae import MAEConfig, MaskedAutoencoder

        mae = MaskedAutoencoder(encoder, MAEConfig()).train()
        optimizer = torch.optim.AdamW(mae.parameters(), lr=1.5e-3, weight_decay=0.05, betas=(0.9, 0.95))
        generator = torch.Generator().manual_seed(0)
        for _ in range(mae_steps):  # batches of 64 single frames
            idx = torch.randint(len(train_frames), (64,), generator=generator)
            loss = mae(train_frames[idx][:, None], generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"MAE {mae_steps} steps: loss {loss.item():.3f}", flush=True)
    if name == "vitpool":
        inner = encoder

        class Pooled(nn.Module):
            def forward(self, frames):
                return inner(frames).mean(dim=2, keepdim=True)

        return Pooled()
    return encoder


def load_episodes(paths: list[str], holdout: float, max_steps: int):
    """Per episode: frames uint8 ``[L, 3, H, W]``, actions ``[L, A]``, states, task, held-out flag."""
    import datasets

    from lavid.data.clips import ClipDataset, read_rows, split_by_episode

    out = []
    for path in paths:
        dataset = ClipDataset(path, columns=[])
        episodes = datasets.load_from_disk(str(dataset.root / "episodes"))
        _, heldout = split_by_episode(list(episodes["source"]), holdout)
        held = set(heldout)
        for i in range(len(episodes)):
            length = min(int(episodes[i]["num_steps"]), max_steps)
            rows = read_rows(dataset.steps, int(dataset.first_row[i]), length, ["frame", "action", "state"])
            out.append({"frames": torch.from_numpy(np.array(rows["frame"], copy=True)),
                        "action": torch.from_numpy(np.asarray(rows["action"], dtype=np.float32)),
                        "state": torch.from_numpy(np.asarray(rows["state"], dtype=np.float32)),
                        "task": episodes[i]["task"], "heldout": i in held})
    return out


@torch.no_grad()
def encode_all(encoder, episodes, batch: int = 64):
    from lavid.models.encoder import normalize_frames

    for e in episodes:
        chunks = [encoder(normalize_frames(e["frames"][s : s + batch])[None])[0]
                  for s in range(0, len(e["frames"]), batch)]
        feats = torch.cat(chunks).float()
        e["features"] = F.layer_norm(feats, feats.shape[-1:])


def windows(episodes, steps: int, stride: int, action_dim: int):
    """All windows of ``steps`` strided steps: features ``[M, S, N, D]``, conditions ``[M, S, stride·A]``."""
    feats, conds = [], []
    span = steps * stride
    for e in episodes:
        length = len(e["features"])
        action = F.pad(e["action"], (0, action_dim - e["action"].shape[1]))
        for start in range(0, length - span + 1):
            feats.append(e["features"][start : start + span : stride])
            conds.append(action[start : start + span].reshape(steps, stride * action_dim))
    return torch.stack(feats), torch.stack(conds)


def true_action_test(episodes, steps: int, stride: int, train_steps: int, batch: int, seed: int = 0,
                     dim: int = 128, depth: int = 3, lr: float = 1e-3):
    from lavid.models.predictor import Predictor, PredictorConfig

    action_dim = max(e["action"].shape[1] for e in episodes)
    train_x, train_c = windows([e for e in episodes if not e["heldout"]], steps, stride, action_dim)
    test_x, test_c = windows([e for e in episodes if e["heldout"]], steps, stride, action_dim)
    tokens, width = train_x.shape[2], train_x.shape[3]
    results = {}
    for condition in ("deterministic", "action"):
        torch.manual_seed(seed)
        cond_dim = train_c.shape[-1] if condition == "action" else 1
        model = Predictor(PredictorConfig(dim=dim, depth=depth, num_heads=4, max_steps=steps), width, tokens, cond_dim)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.04)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=train_steps, pct_start=0.1)
        generator = torch.Generator().manual_seed(seed)

        def cond_of(c):
            return c[:, :-1] if condition == "action" else c.new_zeros(c.shape[0], c.shape[1] - 1, 1)

        started = time.perf_counter()
        for _ in range(train_steps):
            idx = torch.randint(len(train_x), (batch,), generator=generator)
            x, c = train_x[idx], train_c[idx]
            loss = (model(x[:, :-1], cond_of(c)) - x[:, 1:]).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        wall = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            own = rolled = copy = 0.0
            for s in range(0, len(test_x), 256):
                x, c = test_x[s : s + 256], test_c[s : s + 256]
                own += (model(x[:, :-1], cond_of(c)) - x[:, 1:]).abs().sum().item()
                rolled += (model(x[:, :-1], cond_of(c.roll(1, 0))) - x[:, 1:]).abs().sum().item()
                copy += (x[:, :-1] - x[:, 1:]).abs().sum().item()
        results[condition] = {"ratio": own / copy, "rolled_ratio": rolled / copy, "wall_s": wall}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="comma-separated simulator datasets")
    parser.add_argument("--encoders", default="vit64,vit16,vitpool,conv,pixels")
    parser.add_argument("--steps", type=int, default=600, help="predictor training steps per model")
    parser.add_argument("--clip-steps", type=int, default=6, help="steps per training window")
    parser.add_argument("--stride", type=int, default=1, help="stored frames per step")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--max-steps", type=int, default=100, help="steps read per episode")
    parser.add_argument("--mae-steps", type=int, default=400)
    parser.add_argument("--e2e-steps", type=int, default=1500, help="end-to-end encoder training steps")
    parser.add_argument("--e2e-batch", type=int, default=32)
    parser.add_argument("--sigreg", type=float, default=0.1, help="SIGReg weight for the end-to-end encoders")
    parser.add_argument("--no-action-test", action="store_true")
    parser.add_argument("--backbone", action="store_true",
                        help="for trained conv encoders, also probe the conv stack's output before the projector")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    from lavid.core.threads import usable_cores

    torch.set_num_threads(usable_cores())
    from lavid.metrics.state_probe import EpisodeFeatures, format_table, probe_states

    episodes = load_episodes(args.data.split(","), args.holdout, args.max_steps)
    size = episodes[0]["frames"].shape[-1]
    print(f"{len(episodes)} episodes ({sum(e['heldout'] for e in episodes)} held out), "
          f"{sum(len(e['frames']) for e in episodes)} frames of {size}²", flush=True)
    for name in args.encoders.split(","):
        started = time.perf_counter()
        train_frames = torch.cat([e["frames"] for e in episodes if not e["heldout"]])
        encoder = make_encoder(name, size, train_frames, args.mae_steps, episodes, args)
        encoder.eval()
        encode_all(encoder, episodes)
        prep = time.perf_counter() - started
        probe = probe_states([EpisodeFeatures(e["task"], e["features"].flatten(1), e["state"], e["heldout"])
                              for e in episodes])
        summary = probe.summary()
        print(f"\n## {name}: tokens {tuple(episodes[0]['features'].shape[1:])}, encode {prep:.0f}s\n"
              + format_table(probe), flush=True)
        row = {"encoder": name, "data": args.data, "stride": args.stride, "encode_s": prep, **summary}
        if args.backbone and isinstance(encoder, ConvProjector):  # the conv stack's output, before the projector
            backbone = BackboneOf(encoder)
            inner = [dict(e) for e in episodes]
            encode_all(backbone, inner)
            probe = probe_states([EpisodeFeatures(e["task"], e["features"].flatten(1), e["state"], e["heldout"])
                                  for e in inner])
            print(f"\n## {name}, conv stack before the projector: {inner[0]['features'].shape[-1]} features "
                  f"(PCA to 512 for the ridge)\n" + format_table(probe), flush=True)
            row.update({f"backbone/{k}": v for k, v in probe.summary().items()})
        if not args.no_action_test:
            test = true_action_test(episodes, args.clip_steps, args.stride, args.steps, args.batch)
            for condition, values in test.items():
                row.update({f"{condition}/{k}": v for k, v in values.items()})
            d, a = test["deterministic"], test["action"]
            print(f"true-action test ({args.steps} steps): deterministic {d['ratio']:.3f} | action {a['ratio']:.3f} "
                  f"(rolled {a['rolled_ratio']:.3f}) | action/deterministic {a['ratio'] / d['ratio']:.3f} | "
                  f"{d['wall_s'] + a['wall_s']:.0f}s", flush=True)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
