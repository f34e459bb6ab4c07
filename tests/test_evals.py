"""The latent evals: leakage, cycle transfer, probe, sampling, pixel decoder and metrics, run loading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lavid.core.config import load_config
from lavid.metrics import leakage, transfer
from lavid.metrics.image_metrics import load_lpips, psnr, ssim
from lavid.metrics.probe import linear_probe, transition_actions
from lavid.metrics.sampling import has_sampler, sample_metrics, sampled_rollouts
from lavid.models.decoder import DecoderConfig, DecoderError, load_decoder, make_decoder, save_decoder
from lavid.models.world_model import LatentActionWorldModel
from lavid.training.fit_decoder import train_decoder
from lavid.training.train_config import TrainConfig

from test_train import TINY

N, D = 4, 8  # tokens per step, channels


def tiny_model(family: str = "noisy") -> LatentActionWorldModel:
    torch.manual_seed(0)
    config = load_config(TrainConfig, None, [*TINY, "model.encoder.mode=frozen", f"model.latent.family={family}"])
    return LatentActionWorldModel(config.model).eval()


def smooth_clips(count: int, steps: int, seed: int, tokens: int = N, dim: int = D) -> torch.Tensor:
    """``[B, S, N, D]``: each clip a distinct scene that drifts slowly (small change per step)."""
    g = torch.Generator().manual_seed(seed)
    scene = torch.randn(count, 1, tokens, dim, generator=g) * 3
    drift = torch.randn(count, 1, tokens, dim, generator=g) * 0.05
    return scene + drift * torch.arange(steps).view(1, steps, 1, 1)


class NextStepOracle(nn.Module):
    """A 'world model' whose latent is the whole next step: it predicts perfectly (up to a fixed offset),
    at a scene cut as well. The extreme case of future leakage."""

    def infer_latents(self, states):
        return states[:, 1:].flatten(2), torch.zeros(()), {}

    def predict(self, states, latents):
        return latents.view(*states.shape) + 0.01


class AdditiveModel(nn.Module):
    """Exact inverse pair: p(s, z) = s + z (per channel); g(s, s') = s' − s. Latents survive any transfer."""

    def infer_latents(self, states):
        return (states[:, 1:] - states[:, :-1]).flatten(2), torch.zeros(()), {}

    def predict(self, states, latents):
        return states + latents.view(*states.shape)

    def rollout(self, context, latents):
        state, out = context[:, -1], []
        for z in latents[:, context.shape[1] - 1 :].unbind(1):
            state = state + z.view(state.shape)
            out.append(state)
        return torch.stack(out, 1)


# ------------------------------------------------------------------------------------------- leakage

def test_leakage_ratio_is_one_for_a_model_that_copies_the_next_step():
    a, b = smooth_clips(6, 6, seed=1), smooth_clips(6, 6, seed=2)
    summary = leakage.summarize(leakage.scene_cut_errors(NextStepOracle(), a, a, b, b, cut=3))
    assert summary["leak/ratio"] == pytest.approx(1.0, abs=0.02)


def test_leakage_ratio_is_large_for_a_real_model_without_the_next_step():
    model = tiny_model("noisy")
    tokens, dim = model.encoder.num_tokens, model.encoder.dim
    a, b = smooth_clips(6, 2, seed=1, tokens=tokens, dim=dim), smooth_clips(6, 2, seed=2, tokens=tokens, dim=dim)
    summary = leakage.summarize(leakage.scene_cut_errors(model, a, a, b, b, cut=1))
    assert summary["leak/ratio"] > 5.0  # a new scene cannot be predicted from a small latent
    assert summary["leak/copy_at_cut"] > summary["leak/error_no_cut"]
    assert summary["leak/cut_over_copy"] == pytest.approx(summary["leak/error_cut"] / summary["leak/copy_at_cut"])


def test_leakage_rejects_a_cut_outside_the_clip():
    a = smooth_clips(2, 4, seed=1)
    with pytest.raises(ValueError, match="cut must be in"):
        leakage.scene_cut_errors(NextStepOracle(), a, a, a, a, cut=4)


def test_partners_come_from_other_episodes():
    episodes = torch.tensor([0, 0, 1, 1, 2])
    partners = leakage.pair_with_other_episodes(episodes, torch.Generator().manual_seed(0))
    assert all(episodes[p] != episodes[i] for i, p in enumerate(partners.tolist()))
    assert leakage.pair_with_other_episodes(torch.tensor([3, 3])).tolist() == [-1, -1]
    tasks = torch.tensor([0, 0, 0, 1, 1])  # episodes 0 and 1 of task 0; 2 and 3 of task 1
    episodes = torch.tensor([0, 0, 1, 2, 3])
    for seed in range(5):
        partners = leakage.pair_with_other_episodes(episodes, torch.Generator().manual_seed(seed), groups=tasks).tolist()
        assert all(tasks[p] == tasks[i] and episodes[p] != episodes[i] for i, p in enumerate(partners))
    lonely = leakage.pair_with_other_episodes(torch.tensor([0, 1]), groups=torch.tensor([0, 1]))
    assert lonely.tolist() == [-1, -1]  # no other episode of the same task


# ------------------------------------------------------------------------------------------ transfer

def test_cycle_transfer_with_identical_a_and_b_gives_ratio_one():
    a = smooth_clips(5, 6, seed=3)
    truth = a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))  # errors > 0
    result = transfer.cycle_transfer(AdditiveModel(), a, truth, a.clone(), horizon=5)
    assert transfer.summarize(result)["transfer/ratio"] == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(result["z_back"], result["z_a"])


def test_cycle_transfer_with_a_real_model_runs_and_identical_pairs_match_their_own_rollout():
    model = tiny_model("noisy")
    a = smooth_clips(3, 2, seed=4, tokens=model.encoder.num_tokens, dim=model.encoder.dim)
    b = smooth_clips(3, 2, seed=5, tokens=model.encoder.num_tokens, dim=model.encoder.dim)
    result = transfer.cycle_transfer(model, a, a, b, horizon=1)
    assert result["b_driven"].shape == a[:, 1:].shape and torch.isfinite(result["cycle"]).all()
    with pytest.raises(ValueError, match="horizon"):
        transfer.cycle_transfer(model, a, a, b, horizon=2)


# --------------------------------------------------------------------------------------------- probe

def test_probe_r2_near_one_on_a_linear_map_of_the_action_and_near_zero_on_noise():
    g = torch.Generator().manual_seed(0)
    actions = torch.randn(400, 3, generator=g)
    mixing = torch.randn(3, 16, generator=g)
    latents = actions @ mixing + 0.01 * torch.randn(400, 16, generator=g)
    linear = linear_probe(latents[:300], actions[:300], latents[300:], actions[300:])
    assert linear["r2_mean"] > 0.99 and len(linear["r2"]) == 3
    noise = torch.randn(400, 16, generator=g)
    unrelated = linear_probe(noise[:300], actions[:300], noise[300:], actions[300:])
    assert unrelated["r2_mean"] < 0.1


def test_transition_actions_group_the_frames_of_each_step():
    actions = torch.arange(8.0).view(1, 8, 1)  # frame t has action t
    assert transition_actions(actions, 1)[0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert transition_actions(actions, 2)[0].tolist() == [[0, 1], [2, 3], [4, 5]]


# ------------------------------------------------------------------------------------------ sampling

@pytest.mark.parametrize("family", ["noisy", "sparse", "discrete", "fsq", "deterministic"])
def test_sampled_latents_drive_rollouts(family):
    model = tiny_model(family)
    if family == "sparse":
        model.family.config.sgld_steps = 5  # a short Langevin chain is enough to exercise it
    context = smooth_clips(2, 1, seed=6, tokens=model.encoder.num_tokens, dim=model.encoder.dim)
    rolled = sampled_rollouts(model, context, horizon=2, samples=3, generator=torch.Generator().manual_seed(0))
    assert rolled.shape == (2, 3, 2, model.encoder.num_tokens, model.encoder.dim)
    metrics = sample_metrics(rolled, context.expand(2, 2, -1, -1))
    assert (metrics["error_best"] <= metrics["error_mean"] + 1e-6).all()


def test_unconstrained_family_has_no_sampler():
    assert not has_sampler(tiny_model("none")) and has_sampler(tiny_model("noisy"))


# ------------------------------------------------------------------------------ decoder and metrics

def test_psnr_and_ssim():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 32, 32, generator=g)
    assert ssim(image, image).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert (psnr(image, image) > 90).all()
    noisy = (image + 0.1 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    assert 15 < psnr(noisy, image).mean() < 25
    assert ssim(noisy, image).mean() < ssim((image + 0.01).clamp(0, 1), image).mean()


def test_lpips_without_weights_is_a_notice_not_a_download(caplog, tmp_path):
    assert load_lpips(None) is None
    assert load_lpips(tmp_path / "missing.pth") is None
    assert "LPIPS not reported" in caplog.text


def test_decoder_learns_and_refuses_another_encoder(tmp_path):
    model = tiny_model("noisy")
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(8, 4, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    decoder, losses = train_decoder(model, lambda epoch: [{"frames": frames[:4]}, {"frames": frames[4:]}],
                                    DecoderConfig(dim=32, depth=1, num_heads=2, steps=30, lr=3e-3), progress=False)
    assert sum(losses[-5:]) / 5 < losses[0] * 0.8
    out = decoder.decode_uint8(model.encode(frames[:2]))
    assert out.shape == (2, 4, 3, 32, 32) and out.dtype == torch.uint8
    path = save_decoder(decoder, tmp_path / "decoder.pt", encoder="abc")
    again = load_decoder(path, "abc")
    torch.testing.assert_close(again(model.encode(frames[:1])), decoder(model.encode(frames[:1])))
    with pytest.raises(DecoderError, match="another|not abc|decodes the features"):
        load_decoder(path, "xyz")
    with pytest.raises(DecoderError, match="no pixel decoder"):
        load_decoder(tmp_path / "none.pt", "abc")
    assert make_decoder(model).geometry["img_size"] == 32
    assert not math.isnan(losses[-1])
