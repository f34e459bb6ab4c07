"""The latent evals: leakage, cycle transfer, probe, sampling, pixel decoder and metrics, run loading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lavid.core.config import load_config
from lavid.metrics import leakage, transfer
from lavid.metrics.image_metrics import load_lpips, psnr, ssim
from lavid.metrics.probe import linear_probe, mlp_probe, transition_actions
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


def test_mlp_probe_reads_a_nonlinear_map_of_the_latent_that_the_linear_probe_misses():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(600, 6, generator=g)
    actions = torch.stack([torch.sin(2 * latents[:, 0]), latents[:, 1] * latents[:, 2]], dim=1)
    linear = linear_probe(latents[:450], actions[:450], latents[450:], actions[450:])
    mlp = mlp_probe(latents[:450], actions[:450], latents[450:], actions[450:])
    assert linear["r2_mean"] < 0.2  # no linear trace of either target
    assert mlp["r2_mean"] > 0.8 and len(mlp["r2"]) == 2 and 0 < mlp["steps"] <= 600


def test_mlp_probe_is_near_zero_on_noise_and_the_same_for_the_same_seed():
    g = torch.Generator().manual_seed(1)
    noise, actions = torch.randn(400, 8, generator=g), torch.randn(400, 3, generator=g)
    unrelated = mlp_probe(noise[:300], actions[:300], noise[300:], actions[300:])
    assert unrelated["r2_mean"] < 0.1  # early stopping keeps it from memorizing the noise
    # a fit that trains: the same seed gives the same weights and scores, and leaves the global RNG alone
    target = torch.stack([noise[:, 0].abs(), noise[:, 1] * noise[:, 2]], dim=1)
    state = torch.get_rng_state()
    first = mlp_probe(noise[:300], target[:300], noise[300:], target[300:], max_steps=100, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert first["steps"] > 0 and first["r2_mean"] > 0.2
    assert mlp_probe(noise[:300], target[:300], noise[300:], target[300:], max_steps=100, seed=3) == first
    with pytest.raises(ValueError, match="MLP probe needs >= 5 training"):
        mlp_probe(noise[:4], actions[:4], noise[300:], actions[300:])


def test_mlp_probe_reads_an_input_constant_in_training_as_zero_on_the_test_transitions():
    """A feature that never moves on the training transitions but fires on held-out ones (a unit that only
    a held-out pose turns on) once scored R² -3e8: its std was clamped to 1e-6. It now reads as 0."""
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(400, 4, generator=g)
    actions = latents[:, :2] * 2
    latents = torch.cat([latents, torch.zeros(400, 1)], dim=1)
    latents[300:, 4] = 5.0  # constant 0 in training, 5 on the test transitions
    mlp = mlp_probe(latents[:300], actions[:300], latents[300:], actions[300:])
    assert mlp["r2_mean"] > 0.8


def _reacher_clips(count: int, seed: int, states: bool = True):
    """Clips of random frames whose stored reacher states turn two hinge angles by the clip's actions."""
    from lavid.data.eval_data import EvalClips

    g = torch.Generator().manual_seed(seed)
    start = (torch.rand(count, 1, 2, generator=g) * 2 - 1) * math.pi
    angles = start + (torch.rand(count, 4, 2, generator=g) - 0.5).cumsum(1)  # [clip, frame, joint]
    state = torch.cat([angles, torch.randn(count, 4, 4, generator=g)], dim=2).double()  # position, to_target, velocity
    actions = torch.cat([angles[:, 1:] - angles[:, :-1], torch.zeros(count, 1, 2)], dim=1)  # frame t: t -> t+1
    frames = (torch.rand(count, 4, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    return EvalClips(frames, torch.arange(count) + 1000 * seed, ["reacher-easy"] * count, list(actions),
                     list(state) if states else [])


def test_action_probes_report_linear_and_mlp_beside_their_ceilings_from_the_true_poses(monkeypatch):
    """The angle turned is not linear in the sine and cosine a picture shows (reacher's case): the linear
    ceiling from the true poses stays near 0 where the MLP's reaches 1, so z's R² reads against each."""
    import lavid.metrics.state_probe as state_probe
    from lavid.metrics.latent_evals import encode_clips, format_action_probe, probe_metrics

    # reacher's observation layout, without starting the simulator
    monkeypatch.setattr(state_probe, "observation_layout",
                        lambda task: (("position", 0, 2), ("to_target", 2, 4), ("velocity", 4, 6)))
    model = tiny_model()
    train, heldout = _reacher_clips(120, 0), _reacher_clips(40, 1)
    train_states, heldout_states = encode_clips(model, train.frames)[0], encode_clips(model, heldout.frames)[0]
    result = probe_metrics(model, train, train_states, heldout, heldout_states, tubelet=1)
    for kind in ("r2", "r2_mlp", "ceiling", "ceiling_mlp"):
        assert result[f"probe/{kind}/reacher-easy"] == result[f"probe/{kind}_mean"] <= 1, kind
    assert result["probe/ceiling/reacher-easy"] < 0.2 and result["probe/ceiling_mlp/reacher-easy"] > 0.8
    assert result["probe/r2_mlp/reacher-easy"] < 0.5  # z of random frames knows nothing of the angles

    # without stored states: the probes from z, and no ceiling
    no_states = probe_metrics(model, _reacher_clips(120, 0, states=False), train_states,
                              _reacher_clips(40, 1, states=False), heldout_states, tubelet=1)
    assert set(no_states) == {"probe/r2/reacher-easy", "probe/r2_mean", "probe/r2_mlp/reacher-easy", "probe/r2_mlp_mean"}

    # the training run's table: each z probe next to its ceiling, a dash where there is none, a mean row
    table = format_action_probe({"reacher-easy": {"z": 0.1, "z_mlp": 0.3, "change": 0.2, "ceiling": 0.0,
                                                  "ceiling_mlp": 0.99, "train": 360, "heldout": 120},
                                 "cartpole-swingup": {"z": 0.5, "change": 0.4, "train": 9, "heldout": 3}})
    lines = table.splitlines()
    assert "R² from z, linear | linear ceiling (true poses t, t+1) | R² from z, MLP | MLP ceiling" in lines[0]
    assert lines[2] == "| reacher-easy | 360 / 120 | 0.100 | 0.000 | 0.300 | 0.990 | 0.200 | – | – |"
    assert lines[3] == "| cartpole-swingup | 9 / 3 | 0.500 | – | – | – | 0.400 | – | – |"
    assert lines[4] == "| mean | | 0.300 | 0.000 | 0.300 | 0.990 | 0.300 | – | – |"


def test_conditional_probe_reads_an_action_that_z_codes_only_through_the_state():
    """z = what the action did, which depends on the state (here its sign flips with the pose): from z alone
    the action cannot be read, from z and the pose at t it can; the pose alone says nothing of it."""
    from lavid.metrics.latent_evals import conditional_probes

    g = torch.Generator().manual_seed(0)
    pose_t = torch.rand(1200, 1, generator=g) * 2 - 1
    actions = torch.rand(1200, 2, generator=g) * 2 - 1
    z = torch.cat([actions * torch.sign(pose_t), torch.randn(1200, 2, generator=g)], 1)  # [M, 4]
    poses = torch.cat([pose_t, pose_t + 0.1 * actions[:, :1]], 1)  # pose at t and t+1
    fit, test = slice(0, 900), slice(900, None)
    result = conditional_probes({"t": (z[fit], actions[fit])}, {"t": (z[test], actions[test])},
                                {"t": (poses[fit], actions[fit])}, {"t": (poses[test], actions[test])})["t"]
    assert mlp_probe(z[fit], actions[fit], z[test], actions[test])["r2_mean"] < 0.2
    assert result["pose_mlp"] < 0.1 and result["z_pose_mlp"] > 0.8
    # poses of other transitions than z's: not scored
    assert conditional_probes({"t": (z[fit], actions[fit])}, {"t": (z[test], actions[test])},
                              {"t": (poses[:800], actions[:800])}, {"t": (poses[test], actions[test])}) == {}


def test_ablation_table_shows_each_action_probe_next_to_its_ceiling(tmp_path):
    from lavid.experiments.ablation_report import write_report

    probes = {"probe/r2/reacher-easy": 0.1, "probe/r2_mlp/reacher-easy": 0.4, "probe/ceiling/reacher-easy": 0.02,
              "probe/ceiling_mlp/reacher-easy": 0.74, "probe/r2_mean": 0.1, "probe/r2_mlp_mean": 0.4,
              "probe/ceiling_mean": 0.02, "probe/ceiling_mlp_mean": 0.74}
    rows = [{"run": "noisy-beta_0.001", "family": "noisy", "coefficient": "beta", "value": "0.001", "status": "done",
             "error/one_step": 0.1, "error/copy": 0.2, **probes},
            {"run": "deterministic", "family": "deterministic", "coefficient": "", "value": "", "status": "failed",
             "error": "boom"}]
    write_report(rows, tmp_path)
    text = (tmp_path / "results.md").read_text()
    header, _, first = text.split("\n\n")[2].splitlines()[:3]
    assert ("| probe R², linear | linear ceiling (true poses) | probe R², MLP | MLP ceiling (true poses) |"
            in header)
    assert "| 0.100 | 0.020 | 0.400 | 0.740 |" in first
    assert "## Action probes per task" in text
    assert "| run | reacher-easy, linear [ceiling] | reacher-easy, MLP [ceiling] |" in text
    assert "| noisy-beta_0.001 | 0.100 [0.020] | 0.400 [0.740] |" in text
    assert "| deterministic |" not in text.split("## Action probes per task")[1]  # no probe, no line


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
