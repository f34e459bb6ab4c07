"""The latent-action world model: causality, AdaLN-zero, latent families, checkpoint layouts, training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from einops import rearrange

from lavid.core.config import ConfigError, from_dict
from lavid.models.encoder import CheckpointError, EncoderConfig, FrameEncoder, normalize_frames
from lavid.models.latents import FAMILIES, LatentConfig, make_family
from lavid.models.predictor import AdaLNBlock, Predictor, PredictorConfig
from lavid.models.world_model import LatentActionWorldModel, ModelConfig

TINY = {
    "encoder": {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
    "idm": {"dim": 64, "depth": 1, "num_heads": 2},
    "predictor": {"dim": 64, "depth": 2, "num_heads": 2},
    "latent": {"dim": 16, "codebook_size": 32, "fsq_levels": [5, 5, 4]},
}


def tiny_config(family="noisy", **encoder):
    data = {k: dict(v) for k, v in TINY.items()}
    data["latent"]["family"] = family
    data["encoder"].update(encoder)
    return from_dict(ModelConfig, data)


def moving_square_clips(batch=4, frames=6, size=32, seed=0):
    """uint8 clips of a bright square moving with a random constant velocity: real dynamics to learn."""
    generator = torch.Generator().manual_seed(seed)
    clips = torch.zeros(batch, frames, 3, size, size, dtype=torch.uint8)
    for b in range(batch):
        x, y = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        dx, dy = torch.randint(-3, 4, (2,), generator=generator).tolist()
        for t in range(frames):
            cx, cy = (x + dx * t) % (size - 8), (y + dy * t) % (size - 8)
            clips[b, t, :, cy : cy + 8, cx : cx + 8] = 255
    return clips


def test_predictor_is_frame_causal_bit_for_bit():
    torch.manual_seed(0)
    predictor = Predictor(PredictorConfig(dim=32, depth=2, num_heads=2, predict_residual=False), 16, 4, 8).double()
    for p in predictor.parameters():  # leave the zero init so every path carries signal
        torch.nn.init.normal_(p, std=0.2)
    states, cond = torch.randn(2, 5, 4, 16, dtype=torch.float64), torch.randn(2, 5, 8, dtype=torch.float64)
    before = predictor(states, cond)
    changed_states, changed_cond = states.clone(), cond.clone()
    changed_states[:, 3:] += torch.randn_like(changed_states[:, 3:])
    changed_cond[:, 3:] += 1.0
    after = predictor(changed_states, changed_cond)
    assert torch.equal(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3:], after[:, 3:])


def test_adaln_zero_blocks_and_predictor_start_as_identity():
    block = AdaLNBlock(32, 4, 4.0)
    x, cond = torch.randn(2, 12, 32), torch.randn(2, 3, 32)
    mask = torch.ones(12, 12, dtype=torch.bool)
    assert torch.equal(block(x, cond, mask, tokens=4), x)
    predictor = Predictor(PredictorConfig(dim=32, depth=2, num_heads=2), 16, 4, 8)
    states = torch.randn(2, 5, 4, 16)
    assert torch.equal(predictor(states, torch.randn(2, 5, 8)), states)  # ŝ_t+1 = s_t at init
    rolled = predictor.rollout(states[:, :2], torch.randn(2, 4, 8))
    assert rolled.shape == (2, 3, 4, 16) and torch.allclose(rolled, states[:, 1:2].expand(2, 3, 4, 16))


def test_rollout_first_step_matches_teacher_forcing():
    torch.manual_seed(1)
    predictor = Predictor(PredictorConfig(dim=32, depth=2, num_heads=2), 16, 4, 8)
    for p in predictor.parameters():
        torch.nn.init.normal_(p, std=0.1)
    states, cond = torch.randn(1, 4, 4, 16), torch.randn(1, 4, 8)
    teacher = predictor(states, cond)
    rolled = predictor.rollout(states[:, :3], cond)
    assert torch.allclose(rolled[:, 0], teacher[:, 2], atol=1e-5)


@pytest.mark.parametrize("observed", [1, 3])
def test_rollout_over_a_kv_cache_matches_rerunning_the_sequence(observed):
    """Decoding one step per call over cached keys and values gives the same predictions as rerunning the
    whole growing sequence every step (float64: to 1e-10; float32: to 1e-5), and a cached teacher-forced pass
    in two calls matches one call."""
    from lavid.models.predictor import KVCache

    torch.manual_seed(2)
    predictor = Predictor(PredictorConfig(dim=32, depth=3, num_heads=2), 16, 4, 8)
    for p in predictor.parameters():
        torch.nn.init.normal_(p, std=0.2)
    states, latents = torch.randn(3, observed, 4, 16), torch.randn(3, observed - 1 + 5, 8)
    cached, rerun = predictor.rollout(states, latents), predictor.rollout(states, latents, use_cache=False)
    assert cached.shape == (3, 5, 4, 16)
    assert torch.allclose(cached, rerun, atol=1e-5) and not torch.allclose(rerun[:, 0], rerun[:, -1])
    double = predictor.double()
    assert torch.allclose(double.rollout(states.double(), latents.double()),
                          double.rollout(states.double(), latents.double(), use_cache=False), atol=1e-10)
    sequence, cond = torch.randn(2, 6, 4, 16, dtype=torch.float64), torch.randn(2, 6, 8, dtype=torch.float64)
    cache = KVCache()
    parts = torch.cat([double(sequence[:, :2], cond[:, :2], cache), double(sequence[:, 2:], cond[:, 2:], cache)], 1)
    assert cache.steps == 6 and torch.allclose(parts, double(sequence, cond), atol=1e-10)
    short = Predictor(PredictorConfig(dim=32, depth=1, num_heads=2, max_steps=4), 16, 4, 8)
    cache = KVCache()
    short(states[:, :1].expand(3, 3, 4, 16), latents[:, :3], cache)
    with pytest.raises(ValueError, match="max_steps"):  # the cached steps count toward the position table
        short(states[:, :1].expand(3, 2, 4, 16), latents[:, :2], cache)
    assert short.rollout(states[:, :1].expand(3, 3, 4, 16), torch.randn(3, 6, 8)).shape == (3, 4, 4, 16)  # a window


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(3)
    plain = Predictor(PredictorConfig(dim=32, depth=2, num_heads=2), 16, 4, 8).double()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.2)
    checkpointed = Predictor(PredictorConfig(dim=32, depth=2, num_heads=2, checkpoint_activations=True), 16, 4, 8)
    checkpointed = checkpointed.double()
    checkpointed.load_state_dict(plain.state_dict())
    states, cond = torch.randn(2, 5, 4, 16, dtype=torch.float64), torch.randn(2, 5, 8, dtype=torch.float64)
    losses, grads, calls = [], [], []
    for model in (plain, checkpointed):
        model.train()
        count = []
        for block in model.blocks:  # count the block's runs (forward hooks do not see the recomputation)
            block.forward = lambda *args, run=block.forward, **kwargs: count.append(1) or run(*args, **kwargs)
        loss = model(states, cond).pow(2).mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        calls.append(len(count))
    assert torch.allclose(losses[0], losses[1], atol=1e-12) and torch.allclose(grads[0], grads[1], atol=1e-10)
    assert grads[0].abs().sum() > 0
    assert calls == [2, 4]  # every checkpointed block ran again in the backward pass


def test_flex_attention_gives_the_masked_predictions_and_rollouts():
    """``attention: flex`` (a block mask, no dense tensor) against the dense boolean mask, float32, same weights:
    the same outputs to float tolerance and the same cached imagination. (PyTorch's flex_attention has no backward
    pass on the CPU, so the gradients' equivalence waits for a GPU: ``benchmarks/cuda_step.py`` compares the first
    loss of both.)"""
    torch.manual_seed(0)
    dense = Predictor(PredictorConfig(dim=32, depth=2, num_heads=2), 16, 4, 8)
    for p in dense.parameters():
        torch.nn.init.normal_(p, std=0.2)  # AdaLN-zero starts every block as the identity: make attention matter
    flexed = Predictor(PredictorConfig(dim=32, depth=2, num_heads=2, attention="flex"), 16, 4, 8)
    flexed.load_state_dict(dense.state_dict())
    states, cond = torch.randn(3, 6, 4, 16), torch.randn(3, 6, 8)
    with torch.no_grad():
        outs = [model(states, cond) for model in (dense, flexed)]
        assert type(flexed.mask(6, torch.device("cpu"))).__name__ == "BlockMask"
        torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
        assert (outs[0] - states).abs().mean() > 0.1  # the blocks do something: not an identity on both sides
    # a future step changes no earlier prediction under either rule (the block-causal rule, not full attention)
    later = states.clone()
    later[:, 4:] += 1.0
    with torch.no_grad():
        moved = flexed(later, cond)
    torch.testing.assert_close(moved[:, :4], outs[1][:, :4], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(moved[:, 4], outs[1][:, 4], atol=1e-3)
    rolled = [model.rollout(states[:, :2], cond[:, :5]) for model in (dense, flexed)]
    torch.testing.assert_close(rolled[1], rolled[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="attention"):
        PredictorConfig(attention="flash").validate("model.predictor")


def test_noisy_kl_is_zero_at_the_prior_and_sampling_only_in_training():
    family = make_family(LatentConfig(family="noisy", dim=8, beta=1.0))
    raw = torch.zeros(5, 16)  # mean 0, log-variance 0
    family.train()
    z, loss, stats = family(raw)
    assert loss.item() == pytest.approx(0.0, abs=1e-7) and stats["kl"].item() == pytest.approx(0.0, abs=1e-7)
    assert z.std() > 0.5  # sampled
    family.eval()
    z, _, _ = family(torch.cat([torch.ones(5, 8), torch.zeros(5, 8)], -1))
    assert torch.equal(z, torch.ones(5, 8))  # the mean at eval
    _, loss, _ = family(torch.cat([torch.ones(5, 8), torch.zeros(5, 8)], -1))
    assert loss.item() == pytest.approx(0.5 * 8)


def test_noisy_kl_warmup_and_free_bits():
    raw = torch.cat([torch.full((6, 4), 0.5), torch.zeros(6, 4)], -1)  # KL 0.125 nats in each of 4 dims
    warm = make_family(LatentConfig(family="noisy", dim=4, beta=2.0, kl_warmup=0.5)).eval()
    weights = []
    for fraction in (0.0, 0.25, 0.5, 0.9):
        warm.set_progress(fraction)
        _, loss, stats = warm(raw)
        weights.append(loss.item() / (2.0 * 0.5))
        assert stats["kl"].item() == pytest.approx(0.5)  # the true KL is logged whatever the weight
    assert weights == pytest.approx([0.0, 0.5, 1.0, 1.0])
    free = make_family(LatentConfig(family="noisy", dim=4, beta=1.0, free_bits=0.2)).eval()
    _, loss, stats = free(raw)
    assert loss.item() == pytest.approx(4 * 0.2) and stats["kl"].item() == pytest.approx(0.5)
    raw.requires_grad_(True)
    free(raw)[1].backward()
    assert raw.grad.abs().max() == 0  # under the free bits, the KL does not pull z toward the prior
    _, loss, _ = free(torch.cat([torch.full((6, 4), 1.0), torch.zeros(6, 4)], -1))  # 0.5 nats a dim
    assert loss.item() == pytest.approx(2.0)


def test_sparse_energy_warmup_ramps_only_the_per_latent_energy():
    raw = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    full = make_family(LatentConfig(family="sparse", dim=8, l1=0.4, energy_warmup=0.0, energy_scale="sum"))
    _, full_loss, full_stats = full(raw)
    warm = make_family(LatentConfig(family="sparse", dim=8, l1=0.4, energy_warmup=0.5, energy_scale="sum"))
    energy = full_stats["energy"].item()
    batch_terms = full_loss.item() - energy
    for fraction, weight in ((0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.9, 1.0)):
        warm.set_progress(fraction)
        _, loss, stats = warm(raw)
        assert loss.item() == pytest.approx(batch_terms + weight * energy, rel=1e-5)
        assert stats["energy"].item() == pytest.approx(energy)  # the true energy is logged whatever the weight
    with pytest.raises(ConfigError, match="energy_warmup"):
        from_dict(ModelConfig, {"latent": {"family": "sparse", "energy_warmup": 2.0}})
    scaled = make_family(LatentConfig(family="sparse", dim=8, l1=0.4, energy_warmup=0.0, energy_scale="sqrt_dim"))
    _, scaled_loss, scaled_stats = scaled(raw)  # the energy over √D, the batch terms as they were
    assert scaled_stats["energy"].item() == pytest.approx(energy / 8 ** 0.5, rel=1e-5)
    assert scaled_loss.item() == pytest.approx(batch_terms + energy / 8 ** 0.5, rel=1e-5)
    with pytest.raises(ConfigError, match="energy_scale"):
        from_dict(ModelConfig, {"latent": {"family": "sparse", "energy_scale": "mean"}})


def test_vq_straight_through_reaches_the_idm_and_dead_codes_get_reset():
    family = make_family(LatentConfig(family="discrete", dim=4, codebook_size=8, reset_every=10))
    family.train()
    idm = torch.nn.Linear(3, 4)
    z, loss, stats = family(idm(torch.randn(6, 3)))
    (z.sum() + loss).backward()
    assert idm.weight.grad is not None and idm.weight.grad.abs().sum() > 0
    family.zero_grad()
    with torch.no_grad():  # all encoder outputs far from every code: only one code wins, 7 are dead
        family.codebook.data = torch.randn(8, 4) * 0.01
        family.usage.zero_()
        family.seen.zero_()
    far = torch.full((12, 4), 5.0) + torch.randn(12, 4) * 0.1
    before = family.codebook.detach().clone()
    family(far)
    moved = (family.codebook.detach() - before).abs().sum(-1) > 0
    assert moved.sum() >= 6  # dead codes moved onto recent encoder outputs
    assert torch.cdist(family.codebook.detach()[moved], far).min(-1).values.max() < 1e-5
    _, _, stats = family(torch.randn(6, 4))
    assert {"perplexity", "codes_used_fraction"} <= set(stats)


def test_sparse_terms_punish_collapse():
    family = make_family(LatentConfig(family="sparse", dim=16, l1=0.05, energy_warmup=0.0, energy_scale="sum"))
    zero = torch.zeros(32, 16)
    _, zero_loss, zero_stats = family(zero)
    assert zero_stats["energy"].item() == pytest.approx(4.0)  # λ_l2 · √D: the floor forbids z = 0
    constant = torch.zeros(32, 16)
    constant[:, 0] = 4.0  # meets the norm floor, but every latent is the same
    _, constant_loss, constant_stats = family(constant)
    assert constant_stats["variance_term"] > 0.9 and constant_stats["mean_term"] > 0.2
    spread = torch.zeros(32, 16)
    spread[torch.arange(32), torch.arange(32) % 16] = 4.0 * torch.sign(torch.randn(32))  # sparse, varied
    _, spread_loss, _ = family(spread)
    assert spread_loss < constant_loss < zero_loss
    samples = family.sample((64,), torch.Generator().manual_seed(0), steps=200, step_size=0.05)
    assert samples.shape == (64, 16) and samples.norm(dim=-1).mean() > 2.0  # pushed up toward the floor


def test_fsq_codes_are_on_the_grid_and_indices_unique():
    family = make_family(LatentConfig(family="fsq", dim=8, fsq_levels=[8, 5, 3]))
    codes = family.codes(torch.randn(2000, 3) * 3)
    for d, level in enumerate([8, 5, 3]):
        values = codes[:, d].unique()
        assert len(values) == level and values.min() == -(level // 2)
    grid = torch.stack(torch.meshgrid(torch.arange(-4, 4), torch.arange(-2, 3), torch.arange(-1, 2),
                                      indexing="ij"), -1).reshape(-1, 3).float()
    assert family.indices(grid).unique().numel() == 120
    z, loss, stats = family(torch.randn(10, 3, requires_grad=True))
    assert z.shape == (10, 8) and loss.item() == 0 and family.sample((4,)).shape == (4, 8)


def test_deterministic_family_has_no_idm_and_constant_latents():
    model = LatentActionWorldModel(tiny_config("deterministic", mode="frozen"))
    assert model.idm is None
    z, _, _ = model.infer_latents(torch.randn(2, 3, 16, 64))
    assert z.shape == (2, 2, 16) and z.abs().sum() == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_lowers_the_loss_on_a_fixed_batch(family):
    # The residual head starts at the copy-last-step baseline, which takes far more than a unit test's
    # steps to beat; the plain head starts far off, so a falling loss shows gradients reach every part.
    torch.manual_seed(0)
    config = tiny_config(family, mode="frozen")
    config.predictor.predict_residual = False
    model = LatentActionWorldModel(config)
    clips = moving_square_clips()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(25):
        out = model(clips, generator=generator)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses


def test_ema_mode_trains_the_encoder_and_moves_the_target_slowly():
    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config("none", mode="ema", ema_momentum=0.9))
    target_before = [p.clone() for p in model.target_encoder.parameters()]
    online_before = [p.clone() for p in model.encoder.parameters()]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(moving_square_clips())
    optimizer.zero_grad()
    out["loss"].backward()
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    optimizer.step()
    model.update_ema()
    online_step = sum((a - b).abs().sum() for a, b in zip(model.encoder.parameters(), online_before))
    target_step = sum((a - b).abs().sum() for a, b in zip(model.target_encoder.parameters(), target_before))
    assert online_step > 0 and 0 < target_step < 0.2 * online_step


def test_cached_features_give_the_same_loss_as_frames_for_a_frozen_encoder():
    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config("noisy", mode="frozen")).eval()
    clips = moving_square_clips()
    with torch.no_grad():
        from_frames = model(clips)["loss"]
        features = model.encoder(normalize_frames(clips))
        from_features = model(features=features)["loss"]
    assert torch.allclose(from_frames, from_features, atol=1e-6)
    ema = LatentActionWorldModel(tiny_config("noisy", mode="ema"))
    with pytest.raises(ValueError, match="frozen"):
        ema(features=features)


def _source_encoder(tubelet=1):
    torch.manual_seed(3)
    config = EncoderConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, tubelet=tubelet)
    return FrameEncoder(config), config


def test_timm_state_dict_loads_and_reproduces_outputs(tmp_path):
    source, config = _source_encoder()
    path = tmp_path / "timm.pth"
    torch.save({"module." + k: v for k, v in source.vit.state_dict().items()}, path)
    loaded = FrameEncoder(EncoderConfig(**{**config.__dict__, "checkpoint": str(path)}))
    frames = torch.randn(2, 3, 3, 32, 32)
    assert torch.allclose(loaded(frames), source(frames), atol=1e-6)


def test_vjepa2_layout_with_3d_patch_embedding(tmp_path):
    source, config = _source_encoder(tubelet=2)
    state = source.vit.state_dict()
    weight = rearrange(state.pop("patch_embed.proj.weight"), "d (c t) h w -> d c t h w", t=2)  # Conv3d layout
    state.pop("pos_embed")  # V-JEPA 2 uses RoPE: no absolute position table
    wrapped = {f"module.backbone.{k}": v for k, v in state.items()}
    wrapped["module.backbone.patch_embed.proj.weight"] = weight
    torch.save({"encoder": {}, "target_encoder": wrapped, "epoch": 3}, tmp_path / "vjepa2.pt")
    target = FrameEncoder(EncoderConfig(**{**config.__dict__, "checkpoint": str(tmp_path / "vjepa2.pt")}))
    loaded = target.vit.state_dict()
    assert torch.equal(loaded["patch_embed.proj.weight"], source.vit.state_dict()["patch_embed.proj.weight"])
    assert torch.equal(loaded["blocks.1.mlp.fc2.weight"], state["blocks.1.mlp.fc2.weight"])


def test_dinov2_layout_with_class_token_chunked_blocks_and_resized_positions(tmp_path):
    import timm

    torch.manual_seed(4)
    dino = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=56, embed_dim=64, depth=2,
                             num_heads=2, num_classes=0)
    state = {}
    for k, v in dino.state_dict().items():
        k = k.replace("blocks.", "blocks.0.", 1) if k.startswith("blocks.") else k  # FSDP-chunked blocks
        state["backbone." + k] = v
    torch.save({"teacher": state}, tmp_path / "dino.pth")
    config = EncoderConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                           model_kwargs={"init_values": 1e-5}, checkpoint=str(tmp_path / "dino.pth"))
    encoder = FrameEncoder(config)
    loaded = encoder.vit.state_dict()
    assert torch.equal(loaded["blocks.1.attn.qkv.weight"], dino.state_dict()["blocks.1.attn.qkv.weight"])
    assert torch.equal(loaded["blocks.0.ls1.gamma"], dino.state_dict()["blocks.0.ls1.gamma"])
    assert loaded["pos_embed"].shape == (1, 16, 64)  # 4x4 grid resampled from 4x4 + class token
    assert encoder(torch.randn(1, 1, 3, 32, 32)).shape == (1, 1, 16, 64)


def test_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    source, config = _source_encoder()
    torch.save(source.vit.state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="depth"):
        FrameEncoder(EncoderConfig(**{**config.__dict__, "depth": 3, "checkpoint": str(tmp_path / "w.pth")}))
    with pytest.raises(CheckpointError, match="does not fit"):
        FrameEncoder(EncoderConfig(**{**config.__dict__, "embed_dim": 32, "checkpoint": str(tmp_path / "w.pth")}))
    with pytest.raises(CheckpointError, match="does not exist"):
        FrameEncoder(EncoderConfig(**{**config.__dict__, "checkpoint": str(tmp_path / "missing.pth")}))


def test_bad_model_config_names_the_key():
    with pytest.raises(ConfigError, match="latent.family"):
        from_dict(ModelConfig, {"latent": {"family": "gaussian"}})
    with pytest.raises(ConfigError, match="encoder.tubelet"):
        from_dict(ModelConfig, {"encoder": {"tubelet": 3}})
    with pytest.raises(ConfigError, match="unknown config key 'predictor.width'"):
        from_dict(ModelConfig, {"predictor": {"width": 3}})


def test_paper_scale_instantiates_without_running():
    config = from_dict(ModelConfig, {
        "encoder": {"name": "vit_large_patch16_224", "img_size": 256, "patch_size": 16, "embed_dim": 1024,
                    "depth": 24, "num_heads": 16, "tubelet": 2, "mode": "frozen"},
        "idm": {"dim": 1024, "depth": 4, "num_heads": 16},
        "predictor": {"dim": 1024, "depth": 24, "num_heads": 16},
        "latent": {"family": "noisy", "dim": 128},
    })
    with torch.device("meta"):
        model = LatentActionWorldModel(config)
    counts = model.parameter_count()
    assert 290e6 < counts["encoder"] < 320e6  # ViT-L
    assert counts["predictor"] > 300e6  # ViT-L-sized, plus AdaLN modulation
    assert model.encoder.num_tokens == 256


def test_mae_pretraining_lowers_reconstruction_loss_and_saves_a_loadable_encoder(tmp_path):
    from lavid.models.mae import MAEConfig, MaskedAutoencoder

    torch.manual_seed(0)
    config = EncoderConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
    encoder = FrameEncoder(config)
    mae = MaskedAutoencoder(encoder, MAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2))
    optimizer = torch.optim.AdamW(mae.parameters(), lr=2e-3)
    clips, generator = moving_square_clips(batch=4, frames=4), torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = mae(clips, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    torch.save(encoder.vit.state_dict(), tmp_path / "mae.pth")
    loaded = FrameEncoder(EncoderConfig(**{**config.__dict__, "checkpoint": str(tmp_path / "mae.pth")}))
    frames = normalize_frames(clips[:1])
    assert torch.allclose(loaded(frames), encoder(frames), atol=1e-6)


def test_mse_loss_option_squares_the_error_and_still_reports_l1():
    torch.manual_seed(0)
    data = {k: dict(v) for k, v in TINY.items()}
    data["encoder"]["mode"] = "frozen"
    l1_model = LatentActionWorldModel(from_dict(ModelConfig, data)).eval()
    mse_model = LatentActionWorldModel(from_dict(ModelConfig, {**data, "loss": "mse"})).eval()
    mse_model.load_state_dict(l1_model.state_dict())
    torch.manual_seed(1)
    clips = moving_square_clips()
    with torch.no_grad():
        l1, mse = l1_model(clips), mse_model(clips)
    assert torch.allclose(l1["prediction_l1"], mse["prediction_l1"]) and torch.allclose(l1["prediction_loss"], l1["prediction_l1"])
    assert mse["prediction_loss"] >= mse["prediction_l1"] ** 2  # E[e²] >= (E|e|)², equal only if |e| is constant
    assert not torch.allclose(mse["prediction_loss"], mse["prediction_l1"])
    with pytest.raises(ConfigError, match="loss"):
        from_dict(ModelConfig, {**data, "loss": "huber"})


# ------------------------------------------------------------------------- action conditioning, diagnostics


def action_task(batch, generator, weights, frames=8, tubelet=2):
    """Synthetic dynamics where each token's change depends only on the action:
    ``s_t+1 = s_t + W · a_t`` with ``a_t`` the actions of step t's frames. Returns ``(states [B, S, N, D],
    actions [B, T, A])``."""
    from lavid.data.actions import transition_actions

    tokens, dim, _ = weights.shape
    actions = torch.randn(batch, frames, weights.shape[-1] // tubelet, generator=generator)
    start = torch.randn(batch, 1, tokens, dim, generator=generator)
    deltas = torch.einsum("nda,bsa->bsnd", weights, transition_actions(actions, tubelet))
    return torch.cat([start, start + deltas.cumsum(1)], 1), actions


def test_true_action_model_beats_history_alone_where_the_change_depends_only_on_the_action():
    from lavid.data.actions import transition_actions

    torch.manual_seed(0)
    tokens, dim, action_dim, tubelet = 4, 8, 2, 2
    weights = torch.randn(tokens, dim, tubelet * action_dim) * 0.5
    errors = {}
    for condition in ("history", "action"):
        torch.manual_seed(0)
        predictor = Predictor(PredictorConfig(dim=32, depth=1, num_heads=2, max_steps=8), dim, tokens,
                              cond_dim=tubelet * action_dim)
        optimizer = torch.optim.AdamW(predictor.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(1)

        def cond_of(actions):
            cond = transition_actions(actions, tubelet)
            return cond if condition == "action" else torch.zeros_like(cond)

        for _ in range(300):
            states, actions = action_task(32, generator, weights)
            loss = (predictor(states[:, :-1], cond_of(actions)) - states[:, 1:]).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            states, actions = action_task(64, torch.Generator().manual_seed(2), weights)
            cond = cond_of(actions)
            own = (predictor(states[:, :-1], cond) - states[:, 1:]).abs().mean()
            shuffled = (predictor(states[:, :-1], torch.roll(cond, 1, dims=0)) - states[:, 1:]).abs().mean()
            copy = (states[:, :-1] - states[:, 1:]).abs().mean()
        errors[condition] = (own / copy).item(), (shuffled / own).item()
    # history alone cannot predict a change that only the action causes; the true action can
    assert errors["history"][0] > 0.9 and errors["action"][0] < 0.25, errors
    assert errors["action"][1] > 4 and abs(errors["history"][1] - 1) < 1e-6, errors


def test_action_condition_builds_no_idm_and_needs_actions():
    data = {k: dict(v) for k, v in TINY.items()}
    data["encoder"]["mode"] = "frozen"
    model = LatentActionWorldModel(from_dict(ModelConfig, {**data, "condition": "action", "action_dim": 3}),
                                   frame_stride=2)
    assert model.idm is None and model.family is None and model.cond_dim == 1 * 2 * 3
    clips = moving_square_clips(batch=2, frames=4)
    out = model(frames=clips, actions=torch.randn(2, 4, 6))
    assert out["latent_loss"] == 0 and torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="condition=action"):
        model(frames=clips)
    with pytest.raises(ValueError, match="action_dim"):
        model(frames=clips, actions=torch.randn(2, 4, 3))  # actions without the frame stride's grouping
    with pytest.raises(ValueError, match="no latent actions"):
        model.infer_latents(torch.randn(2, 3, 16, 64))
    with pytest.raises(ValueError, match="model.action_dim"):
        LatentActionWorldModel(from_dict(ModelConfig, {"condition": "action"}))  # 0 (auto) was never resolved
    with pytest.raises(ConfigError, match="model.condition"):
        from_dict(ModelConfig, {"condition": "bogus"}, "model")
    with pytest.raises(ConfigError, match="model.action_dim"):
        from_dict(ModelConfig, {"action_dim": -1}, "model")


def test_copy_baseline_compares_target_with_target_in_ema_mode():
    from lavid.training.evaluation import evaluate

    torch.manual_seed(0)
    model = LatentActionWorldModel(tiny_config("noisy", mode="ema")).eval()
    with torch.no_grad():
        for parameter in model.target_encoder.parameters():  # an EMA target that has drifted from the online one
            parameter.add_(torch.randn_like(parameter) * 0.05)
    clips = moving_square_clips()
    with torch.no_grad():
        online, targets = model.encode(clips), model.encode(clips, target=True)
    target_vs_target = (targets[:, :-1] - targets[:, 1:]).abs().mean().item()
    online_vs_target = (online[:, :-1] - targets[:, 1:]).abs().mean().item()
    assert abs(online_vs_target - target_vs_target) > 1e-3  # the two definitions differ for this model
    values = evaluate(model, [{"frames": clips}], horizon=2)
    assert values["eval/copy"] == pytest.approx(target_vs_target, rel=1e-5)
    assert values["eval/copy_mse"] == pytest.approx((targets[:, :-1] - targets[:, 1:]).pow(2).mean().item(), rel=1e-5)
    assert values["eval/ratio"] == pytest.approx(values["eval/one_step"] / values["eval/copy"])
    with torch.no_grad():
        assert model(clips)["copy_baseline"].item() == pytest.approx(target_vs_target, rel=1e-5)


def test_shuffled_latents_change_nothing_for_the_deterministic_family():
    from lavid.training.evaluation import evaluate

    torch.manual_seed(0)
    clips = [{"frames": moving_square_clips(seed=s)} for s in (0, 1)]
    deterministic = LatentActionWorldModel(tiny_config("deterministic", mode="frozen")).eval()
    noisy = LatentActionWorldModel(tiny_config("noisy", mode="frozen")).eval()
    for model in (deterministic, noisy):  # leave the zero init so the condition reaches the output
        for name, parameter in model.named_parameters():
            if name.startswith("predictor."):
                torch.nn.init.normal_(parameter, std=0.1)
    values = evaluate(deterministic, clips, horizon=2)
    assert values["eval/shuffled"] == values["eval/one_step"] and values["eval/latent_gain"] == 1.0
    assert values["latent/spread"] == 0.0  # every transition gets the same (zero) latent
    values = evaluate(noisy, clips, horizon=2)
    assert values["eval/shuffled"] != values["eval/one_step"] and values["latent/spread"] > 0
    assert {"eval/one_step_mse", "eval/copy_mse", "eval/rollout_h2", "eval/ratio"} <= set(values)


def test_sigreg_is_small_for_gaussian_embeddings_and_large_for_collapsed_ones():
    from lavid.models.sigreg import sigreg

    generator = torch.Generator().manual_seed(0)
    gaussian = sigreg(torch.randn(512, 32, generator=generator), generator=generator)
    shrunk = sigreg(0.3 * torch.randn(512, 32, generator=generator), generator=generator)
    constant = sigreg(torch.full((512, 32), 0.2), generator=generator)
    assert gaussian < 1.0 < 20 * gaussian < shrunk < constant, (gaussian, shrunk, constant)
    # its gradient spreads embeddings that started nearly collapsed
    points = (0.01 * torch.randn(256, 8, generator=generator)).requires_grad_()
    optimizer = torch.optim.Adam([points], lr=0.05)
    for _ in range(100):
        loss = sigreg(points, 64, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert 0.5 < points.detach().std(0).mean() < 2.0
    with pytest.raises(ValueError, match="sigreg needs"):
        sigreg(torch.randn(1, 4))


def conv_config(sigreg: float, encoder_extra: dict | None = None, **model):
    return from_dict(ModelConfig, {**{k: dict(v) for k, v in TINY.items()}, **model, "encoder": {
        "arch": "conv", "mode": "e2e", "img_size": 32, "embed_dim": 32, "conv_channels": 8, "conv_hidden": 64,
        "sigreg": sigreg, **(encoder_extra or {})}})


def test_conv_encoder_gives_one_vector_a_step_and_decodes_to_frames():
    from lavid.models.decoder import make_decoder

    model = LatentActionWorldModel(conv_config(0.1))
    clips = moving_square_clips()
    states = model.encode(clips)
    assert states.shape == (4, 6, 1, 32) and model.target_encoder is None
    assert make_decoder(model)(states).shape == clips.shape
    with pytest.raises(ConfigError, match="encoder.checkpoint_layout: a conv encoder loads only a lavid run"):
        from_dict(ModelConfig, {"encoder": {"arch": "conv", "checkpoint": "x.pt", "checkpoint_layout": "timm"}})


def test_a_lavid_runs_encoder_loads_exactly_or_fails_naming_what_differs(tmp_path):
    """``checkpoint_layout=lavid`` (or auto) reads the ``encoder.*`` tensors of a run's model.safetensors,
    BatchNorm statistics included, from the file or from its checkpoint folder; another size is an error."""
    from safetensors.torch import save_file

    from lavid.models.encoder import load_encoder_checkpoint

    torch.manual_seed(0)
    source = LatentActionWorldModel(conv_config(0.1))
    source.encoder.conv.projector[1].running_mean.fill_(0.25)  # statistics a trained run would have
    step = tmp_path / "checkpoints" / "step_00000003"
    step.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(step / "model.safetensors"))
    frozen = conv_config(0.1, {"mode": "frozen"}).encoder
    for where in (step / "model.safetensors", step):
        torch.manual_seed(1)
        encoder = FrameEncoder(dataclasses.replace(frozen, checkpoint=str(where)))
        for name, tensor in source.encoder.state_dict().items():
            assert torch.equal(encoder.state_dict()[name], tensor), name
    # the frozen copy's states are its source's with state_norm=raw; auto layer-norms them (not e2e)
    clips = moving_square_clips()
    source.eval()
    for norm, same in (("raw", True), ("auto", False)):
        copy = LatentActionWorldModel(conv_config(0.1, {"mode": "frozen", "checkpoint": str(step), "state_norm": norm}))
        assert torch.allclose(copy.encode(clips), source.encode(clips), atol=1e-6) == same
    with pytest.raises(CheckpointError, match="does not fit the encoder config"):
        FrameEncoder(dataclasses.replace(frozen, embed_dim=16, checkpoint=str(step)))
    with pytest.raises(CheckpointError, match="has no 'target_encoder' weights"):
        FrameEncoder(dataclasses.replace(frozen, checkpoint=str(step), checkpoint_key="target_encoder"))
    with pytest.raises(CheckpointError, match="without a saved lavid checkpoint"):
        load_encoder_checkpoint(FrameEncoder(frozen), str(tmp_path / "checkpoints"), "lavid")


def test_end_to_end_encoder_collapses_without_sigreg_and_stays_spread_with_it():
    """e2e mode trains the encoder through prediction and target: alone that makes all frames alike."""
    spread = {}
    for weight in (0.0, 0.1):
        torch.manual_seed(0)
        model = LatentActionWorldModel(conv_config(weight, latent={"family": "deterministic"}))
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for step in range(40):
            out = model(moving_square_clips(8, seed=step))
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
        assert ("sigreg" in out) == (weight > 0)
        model.eval()
        with torch.no_grad():  # how much the (layer-normed) states of different frames differ
            states = model.encode(moving_square_clips(8, seed=999))
        spread[weight] = states.flatten(0, 2).std(0).mean().item()
    assert spread[0.0] < 0.2 * spread[0.1], spread


def test_sigreg_change_makes_features_that_are_static_within_a_clip_costly():
    """The states' SIGReg is met by features that differ between clips but not within one; the change term is not."""
    generator = torch.Generator().manual_seed(0)
    per_clip = torch.randn(64, 1, 1, 16, generator=generator)
    static = per_clip.expand(64, 6, 1, 16)  # [B, S, N, D]: one vector a clip, repeated at every step
    walk = per_clip + torch.randn(64, 6, 1, 16, generator=generator).cumsum(1)  # changes ~ N(0, I)
    losses = {}
    for change in (0.0, 0.1):
        model = LatentActionWorldModel(conv_config(0.1, encoder_extra={"sigreg_change": change}))
        torch.manual_seed(0)
        losses[change] = {name: model.spread_loss(x).item() for name, x in (("static", static), ("walk", walk))}
    assert losses[0.1]["static"] - losses[0.0]["static"] > 3.0  # a constant change is far from N(0, I)
    assert losses[0.1]["walk"] - losses[0.0]["walk"] < 0.5
    assert losses[0.0]["static"] < 2.0  # without the term, static features cost little more than moving ones
    with pytest.raises(ConfigError, match="encoder.sigreg_change"):
        from_dict(ModelConfig, {"encoder": {"sigreg_change": -1.0}})


def test_rollout_loss_scores_the_predictors_own_rollout_and_trains_through_it():
    """model.rollout_loss: from the first rollout_context steps the predictor imagines the rest of the clip from its
    own outputs; the term is that rollout's error, added to the loss with its weight, with gradients."""
    torch.manual_seed(0)
    model = LatentActionWorldModel(conv_config(0.1, latent={"family": "deterministic"}, rollout_loss=0.5,
                                              rollout_context=2))
    for block in model.predictor.blocks:  # AdaLN-zero starts as the identity: open it so rollouts differ from copies
        torch.nn.init.normal_(block.modulation[1].weight, std=0.2)
    torch.nn.init.normal_(model.predictor.head.weight, std=0.2)
    clips = moving_square_clips(4, 6)
    torch.manual_seed(1)
    out = model(clips)
    with torch.no_grad():
        torch.manual_seed(1)
        states = model.encode(clips)
        latents, _, _ = model.conditions(states)
        expected = (model.predictor.rollout(states[:, :2], latents) - states[:, 2:]).abs().mean()
    assert torch.allclose(out["rollout_loss"], expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(out["loss"], out["prediction_loss"] + out["latent_loss"] + out["sigreg"]
                          + 0.5 * out["rollout_loss"], rtol=1e-5)
    imagined = model.predictor.imagine(states[:, :2], latents)
    imagined.abs().mean().backward()
    assert model.predictor.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # imagine keeps gradients
    assert "rollout_loss" not in LatentActionWorldModel(conv_config(0.1))(clips)
    with pytest.raises(ConfigError, match="rollout_context"):
        conv_config(0.1, rollout_context=0)


def test_rollout_loss_reaches_the_encoder_only_with_rollout_encoder():
    """model.rollout_encoder=false (the default): the rollout term trains the predictor on its own errors and leaves
    the features to the one-step loss and SIGReg; true lets its gradient into the encoder (context and targets)."""
    clips = moving_square_clips(4, 6)

    def gradients(weight: float, reach: bool) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = LatentActionWorldModel(conv_config(0.1, latent={"family": "deterministic"}, rollout_loss=weight,
                                                  rollout_encoder=reach))
        for block in model.predictor.blocks:  # open AdaLN-zero so rollouts differ from copies
            torch.nn.init.normal_(block.modulation[1].weight, std=0.2)
        torch.nn.init.normal_(model.predictor.head.weight, std=0.2)
        torch.manual_seed(1)
        model(clips)["loss"].backward()
        flat = lambda module: torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])
        return flat(model.encoder), flat(model.predictor)

    for reach in (False, True):
        encoder_off, predictor_off = gradients(0.0, reach)
        encoder_on, predictor_on = gradients(1.0, reach)
        assert not torch.allclose(predictor_on, predictor_off)  # the predictor always learns from the term
        assert torch.allclose(encoder_on, encoder_off, atol=1e-7) != reach


def test_an_idm_that_sees_the_change_tells_small_changes_apart():
    from lavid.models.idm import IDMConfig, InverseDynamics

    current = torch.randn(1, 1, 4, 16).expand(6, 1, 4, 16)
    following = current + 0.04 * torch.randn(6, 1, 4, 16)  # six transitions whose change is ~4 % of the features

    def spread(idm):  # spread ÷ norm of the raw latents across the transitions
        raw = idm(current, following)[:, 0]
        return ((raw - raw.mean(0)).norm(dim=-1).mean() / raw.norm(dim=-1).mean()).item()

    torch.manual_seed(0)
    pair = spread(InverseDynamics(IDMConfig(dim=32, depth=1, num_heads=2, input="pair"), 16, 4, 8))
    torch.manual_seed(0)
    change = spread(InverseDynamics(IDMConfig(dim=32, depth=1, num_heads=2, input="change"), 16, 4, 8))
    assert pair < 0.03 and change > 0.1  # at init: the pair IDM gives almost one z, the change IDM six


def test_a_history_idm_reads_the_previous_change_and_only_that():
    from lavid.models.idm import IDMConfig, InverseDynamics

    torch.manual_seed(0)
    idm = InverseDynamics(IDMConfig(dim=32, depth=1, num_heads=2, input="history"), 16, 4, 8).eval()
    states = torch.randn(2, 4, 4, 16)  # two clips of 4 steps: 3 transitions each
    states[1, 2:] = states[0, 2:]  # the same last transition (s_2 -> s_3), reached from another s_1
    with torch.no_grad():
        raw = idm(states[:, :-1], states[:, 1:])
        alone = idm(states[:, 2:3], states[:, 3:4])  # that transition as a clip of its own: no history
    assert raw.shape == (2, 3, 8)
    assert torch.allclose(alone[0], alone[1], atol=1e-6)
    assert not torch.allclose(raw[0, 2], raw[1, 2], atol=1e-3)  # same pair, different previous change
    with torch.no_grad():  # transition k only sees steps k-1..k+1: a later step leaves it unchanged
        later = states.clone()
        later[:, 3] += 1.0
        assert torch.allclose(idm(later[:, :-1], later[:, 1:])[:, :2], raw[:, :2], atol=1e-6)


def test_random_shift_moves_each_clip_as_a_whole():
    from lavid.data.augment import random_shift

    frames = torch.zeros(8, 3, 3, 16, 16, dtype=torch.uint8)
    frames[:, :, :, 6:10, 6:10] = 200  # a square, the same in every frame
    frames[:, 1] = 0
    frames[:, 1, :, 6:10, 7:11] = 200  # ... but one pixel further right in frame 1
    shifted = random_shift(frames, 3, torch.Generator().manual_seed(0))
    assert shifted.shape == frames.shape and shifted.dtype == torch.uint8
    rows = [(s[0, 0] > 0).nonzero()[:, 0].min().item() for s in shifted]
    assert len(set(rows)) > 1  # clips moved by different amounts
    for clip in shifted:  # every frame of a clip moved alike: the square still moves by one pixel in frame 1
        first, second = (clip[0, 0] > 0).nonzero(), (clip[1, 0] > 0).nonzero()
        assert torch.equal(second[:, 0].unique(), first[:, 0].unique())
        assert second[:, 1].min() == first[:, 1].min() + 1
    assert torch.equal(random_shift(frames, 0), frames)


def test_training_shifts_clips_and_evaluation_does_not():
    model = LatentActionWorldModel(tiny_config("none", mode="e2e", arch="conv", img_size=32, random_shift=4))
    frames = torch.randint(0, 255, (2, 4, 3, 32, 32), dtype=torch.uint8)

    def loss(seed):  # the generator draws the shifts; SIGReg's directions come from the global RNG
        torch.manual_seed(0)
        return model(frames, generator=torch.Generator().manual_seed(seed))["prediction_loss"]

    model.eval()
    assert torch.equal(loss(0), loss(1))
    model.train()
    assert not torch.equal(loss(0), loss(1)) and torch.equal(loss(0), loss(0))
