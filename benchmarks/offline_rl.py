"""Step times of offline RL's three learners, and what a budget of ``evals/offline_rl.py`` costs from them.

Usage:
    python benchmarks/offline_rl.py [--device cpu|cuda] [--repeats 3] [--threads 2] [--workers 2[,4,...]]

Times (median of ``--repeats`` runs of ``--steps`` steps, after warm-up) one SAC update, one step of the
latent-action world model and one step of the policy in imagination, at the sizes ``evals/offline_rl.py``
uses (walker-walk: 24-d state, 6-d action; batch 256, hidden 256), and prints the training time of the
smoke and full budgets per seed (SAC, then the two model-based methods, one after the other) -- the
environment and its evaluation episodes not included. ``--workers 2`` also times the model step in two
one-thread processes at once on ``--device``, as ``evals/offline_rl.py --workers 2`` runs its method-seeds,
against this process (on a GPU the small steps are launch-bound, so processes sharing it may overlap).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def timed(step, steps: int, repeats: int, sync) -> float:
    for _ in range(5):
        step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


OBS_DIM, ACTION_DIM, BATCH = 24, 6, 256


def model_step_time(device: torch.device, steps: int, repeats: int, threads: int = 0):
    """(model, median seconds of one latent-action model training step), ``threads`` torch threads (0: as set)."""
    from lavid.offline_rl.state_world_model import StateWorldModel, StateWorldModelConfig
    from lavid.offline_rl.offline_data import Normalizer

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    model = StateWorldModel(OBS_DIM, ACTION_DIM, StateWorldModelConfig(),
                              Normalizer(torch.zeros(OBS_DIM), torch.ones(OBS_DIM))).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    obs, nxt, rew = (torch.randn(BATCH, OBS_DIM, device=device), torch.randn(BATCH, OBS_DIM, device=device),
                     torch.rand(BATCH, device=device))
    act = torch.rand(BATCH, ACTION_DIM, device=device) * 2 - 1

    def model_step():
        loss, _ = model.loss(obs, nxt, rew, (obs, nxt, rew, act))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return model, timed(model_step, steps, repeats, sync)


def _worker_step_time(device: str, steps: int, repeats: int, barrier) -> float:
    torch.set_num_threads(1)
    barrier.wait()  # every process built and ready: they time at once
    return model_step_time(torch.device(device), steps, repeats, threads=1)[1]


def side_by_side(workers: int, steps: int, repeats: int, device: str = "cpu") -> float:
    """Median model step time of ``workers`` one-thread processes timing at once on ``device`` (``--workers``
    of evals/offline_rl.py), each process's median; the slowest is returned."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import Manager, get_context

    context = get_context("spawn")
    with Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
        barrier = manager.Barrier(workers)
        return max(pool.map(_worker_step_time, [device] * workers, [steps] * workers, [repeats] * workers,
                            [barrier] * workers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--workers", default="",
                        help="N[,N...]: also time the model step in N one-thread processes at once, as "
                             "evals/offline_rl.py --workers runs them, against this process's threads")
    args = parser.parse_args(argv)
    try:
        workers = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--workers takes N[,N...], got {args.workers!r}")
    if any(n < 2 for n in workers):
        parser.error(f"--workers counts must be >= 2, got {args.workers!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from lavid.experiments.offline_rl import OfflineRLBudget
    from lavid.experiments.presets import load_preset, preset_names
    from lavid.offline_rl.imagination import LatentPolicy, PolicyConfig, imagine, lambda_returns
    from lavid.offline_rl.sac import SAC, SACConfig

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    obs_dim, action_dim, batch = OBS_DIM, ACTION_DIM, BATCH

    agent = SAC(obs_dim, action_dim, SACConfig(), device=device)
    sac_batch = {"state": torch.randn(batch, obs_dim), "action": torch.rand(batch, action_dim) * 2 - 1,
                 "reward": torch.rand(batch), "next_state": torch.randn(batch, obs_dim)}
    sac_s = timed(lambda: agent.update(sac_batch), args.steps, args.repeats, sync)

    model, model_s = model_step_time(device, args.steps, args.repeats)
    obs = torch.randn(BATCH, OBS_DIM, device=device)

    config = PolicyConfig()
    policy = LatentPolicy(model, config).to(device)
    actor_optim = torch.optim.Adam(policy.actor.parameters(), lr=config.lr)

    def policy_step():  # the imagination rollout and the actor's update, as train_policy does them
        states, rewards, kls = imagine(policy, obs, config.horizon)
        value = policy.critic_target(states).squeeze(-1)
        returns = lambda_returns(rewards, value, config.gamma, config.lam)
        loss = (-returns + config.prior_kl * kls).mean()
        actor_optim.zero_grad(set_to_none=True)
        loss.backward()
        actor_optim.step()
        policy.critic(states[:-1].detach()).pow(2).mean().backward()

    policy_s = timed(policy_step, args.steps, args.repeats, sync)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {batch}: SAC update {sac_s * 1e3:.1f} ms, "
          f"latent-action model step {model_s * 1e3:.1f} ms, policy step {policy_s * 1e3:.1f} ms")
    for n in workers:
        parallel_s = side_by_side(n, args.steps, args.repeats, str(device))
        print(f"{n} one-thread processes at once on {device}: model step {parallel_s * 1e3:.1f} ms each, "
              f"{n * model_s / parallel_s:.2f}x the throughput of one process with "
              f"{torch.get_num_threads()} threads ({model_s * 1e3:.1f} ms)")
    print("| budget | SAC updates | model steps (latent + labeled-only) | policy steps (×2 methods) | "
          "training per seed, min | SAC, min |")
    print("|---|---|---|---|---|---|")
    for name in preset_names("offline_rl"):
        b = load_preset(OfflineRLBudget, "offline_rl", name)
        model_steps = b.model_steps + b.labeled_only_model_steps
        per_seed = (model_steps * model_s + 2 * b.policy_steps * policy_s) / 60
        print(f"| {name} | {b.expert_steps} | {b.model_steps} + {b.labeled_only_model_steps} | "
              f"{b.policy_steps} | {per_seed:.1f} | {b.expert_steps * sac_s / 60:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
