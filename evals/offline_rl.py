"""Offline RL with latent actions from few labeled and many unlabeled episodes, against its baselines.

Usage:
    python evals/offline_rl.py --task walker-walk --out runs/offline_rl              # smoke budget
    python evals/offline_rl.py --task walker-walk --dataset medium --budget full --out DIR
    python evals/offline_rl.py --task walker-walk --data DIR/agent/replay.npz --out DIR2   # given data

Without ``--data`` it first trains a state-based SAC agent (``data_prep/train_expert.py``) into
``OUT/agent`` and takes the dataset ``--dataset`` from it: ``medium-replay`` (its replay buffer, the
default: no rendering), or ``medium`` / ``expert`` / ``random`` (episodes of its milestone policy, with
exploration noise, or of uniform actions, rolled out by ``data_prep/dmc.py``). For every seed the episodes
are split once (``--labeled-fraction`` keep their actions, the rest lose them) and every method trains on
that split: ``latent`` (the latent-action world model over all episodes + a latent policy learned in its
imagination), ``labeled_only`` (the same on the labeled episodes alone, its model trained for its own
step count, ``--labeled-only-model-steps``: a tenth of the data overfits sooner), ``bc`` (behaviour cloning
on the labeled episodes) and ``random``. Scores are return ÷ 10 over ``--eval-episodes`` simulator episodes.
Writes ``results.md``, ``results.csv``, ``results.json`` (one row per method; md and json also pair
``latent`` with each other method seed by seed: the score differences and on how many seeds it is
ahead), ``runs.jsonl`` (one line per method and seed: a rerun with the same data and settings skips what
is there) and ``curves.png`` (the policies' imagined returns while they learn). ``--score-executions
decoder,idm`` scores each trained latent policy executed each way (``PolicyConfig.execute``) on the same
evaluation episodes, paired by seed in results.md and ``executions`` in results.json. Every model-based
method is also scored with its model's prior mean in place of the actor (``prior, no actor``; paired with the
policy in ``actor_over_prior``). ``--workers`` (default 2 on the CPU, 8 on a GPU) method-seed runs go side by
side, each in its own process with a share of the cores. ``--device`` (default: cuda when there is one) is
where SAC, the models and the policies train; the simulator steps on the CPU. Observations are the
simulator's proprioceptive state.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lavid.core.cli import fail, resolve_device, setup_logging  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

BUDGETS = {
    # expert steps, dataset episodes (rolled-out kinds), model steps (latent's; labeled-only's), policy / bc
    # steps, eval episodes, seeds.
    # smoke: SAC's first 40,000 steps (80 episodes); at 20,000 every learned policy scored level with BC
    # on 4 labeled episodes (BENCHMARKS.md, offline RL part 3). Model steps: latent's model on 40,000
    # transitions still improves from 2,000 to 6,000 steps, labeled-only's on 4,000 overfits (it scores best
    # at 2,000 of 1,000 / 2,000 / 6,000; part 6).
    "smoke": {"expert_steps": 40_000, "episodes": 40, "model_steps": 6_000, "labeled_only_model_steps": 2_000,
              "policy_steps": 2_000, "bc_steps": 2_000, "eval_episodes": 20, "seeds": 3},
    # full: labeled-only's model steps scaled from the smoke budget's ratio, not measured
    "full": {"expert_steps": 500_000, "episodes": 200, "model_steps": 50_000, "labeled_only_model_steps": 16_000,
             "policy_steps": 50_000, "bc_steps": 20_000, "eval_episodes": 20, "seeds": 5},
}

REFERENCE = {
    # normalized scores of the control paper (pixels, DMControl; DESIGN.md section 4)
    ("walker-walk", "expert"): 94.3, ("cheetah-run", "expert"): 52.4, ("hopper-stand", "medium"): 65.0,
    ("hopper-stand", "medium-replay"): 46.9,
}

DATASETS = ("medium-replay", "medium", "expert", "random")

MODEL_METRICS = ("dynamics_vs_copy", "latent_gain", "decoder_r2")

MODEL_METHODS = ("latent", "labeled_only")  # the methods with a latent policy, which --score-executions scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="walker-walk", help="DMControl domain-task (default walker-walk)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="medium-replay", choices=DATASETS)
    parser.add_argument("--budget", default="smoke", choices=sorted(BUDGETS))
    parser.add_argument("--data", default="", help="use this replay.npz or trajectory dataset (skips the expert)")
    parser.add_argument("--labeled-fraction", type=float, default=0.1, help="episodes that keep their actions")
    parser.add_argument("--methods", default="latent,labeled_only,bc,random")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default: the budget's)")
    parser.add_argument("--eval-episodes", type=int, default=None)
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument("--model-steps", type=int, default=None)
    parser.add_argument("--labeled-only-model-steps", type=int, default=None,
                        help="model steps of labeled_only (default: the budget's, or --model-steps when that is given)")
    parser.add_argument("--policy-steps", type=int, default=None)
    parser.add_argument("--bc-steps", type=int, default=None)
    parser.add_argument("--expert-steps", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None, help="episodes to roll out for medium/expert/random")
    parser.add_argument("--noise", type=float, default=0.2, help="exploration noise of medium/expert rollouts")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="config overrides, e.g. model.beta=1e-4 policy.horizon=10 (sections: model, policy, bc)")
    parser.add_argument("--score-executions", default="", metavar="MODE[,MODE]",
                        help="also score every trained latent policy executed each of these ways (decoder, idm), "
                             "on the same episodes: paired by seed in results.md (default: only policy.execute)")
    parser.add_argument("--workers", type=int, default=None,
                        help="method-seed runs side by side, in separate processes (default: 2 on the CPU, 8 on a "
                             "GPU, at most one per core)")
    parser.add_argument("--device", default="auto",
                        help="where SAC, the models and the policies train: auto (cuda when there is one), cpu, "
                             "cuda, cuda:N; the simulator steps on the CPU")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def default_workers(device: str) -> int:
    """Runs side by side when ``--workers`` is not given. On 2 CPU cores two one-thread processes get through
    1.25-1.4x the work of one two-thread process; on one H100 eight processes sharing the GPU get through
    4.65x the model steps of one, since these small steps are launch-bound (BENCHMARKS.md, offline RL
    part 7). At most one per core."""
    import os

    return min(8 if device.startswith("cuda") else 2, os.cpu_count() or 1)


def make_config(b: dict, overrides: list[str]):
    """The budget's :class:`OfflineRLConfig` with ``SECTION.KEY=VALUE`` overrides, built and validated by the
    project's config loader (an unknown key or a bad value is a ValueError naming it)."""
    from lavid.offline_rl.methods import OfflineRLConfig
    from lavid.core.config import ConfigError, load_config

    steps = [f"model.steps={b['model_steps']}", f"labeled_only_model_steps={b['labeled_only_model_steps']}",
             f"policy.steps={b['policy_steps']}", f"bc.steps={b['bc_steps']}"]
    try:
        return load_config(OfflineRLConfig, None, steps + list(overrides))
    except ConfigError as error:
        raise ValueError(f"--set SECTION.KEY=VALUE: {error}") from None


def budget(args: argparse.Namespace) -> dict:
    b = dict(BUDGETS[args.budget])
    for key in ("seeds", "eval_episodes", "model_steps", "labeled_only_model_steps", "policy_steps", "bc_steps",
                "expert_steps", "episodes"):
        if getattr(args, key) is not None:
            b[key] = getattr(args, key)
    if args.model_steps is not None and args.labeled_only_model_steps is None:
        b["labeled_only_model_steps"] = args.model_steps  # --model-steps alone sets both models' steps
    for key, value in b.items():
        if value < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    return b


def run(cmd: list[str]) -> None:
    result = subprocess.run([sys.executable, *cmd], cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed with exit code {result.returncode}")


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_jobs(jobs: list[dict], workers: int, progress: bool = True):
    """Run each job (``run_method``'s keyword arguments) and yield its row as it finishes: one after another
    in this process when ``workers`` is 1, else in ``workers`` spawned processes sharing the cores (the
    models are small: on 2 cores, two one-thread runs side by side get through 1.4x the work of one
    two-thread run; BENCHMARKS.md, offline RL part 6). Results are seeded either way, but the thread count
    changes float reductions, so the scores of ``--workers 1`` and ``--workers 2`` differ by training noise."""
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from lavid.offline_rl.methods import run_method

    if workers <= 1:
        for job in jobs:
            yield run_method(**job, progress=progress)
        return
    if not jobs:
        return
    from tqdm.auto import tqdm

    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked child of a process whose OpenMP pool already ran can hang
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(run_method, **job) for job in jobs]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), disable=not progress, desc="runs",
                               unit="run"):
                yield future.result()
        except BaseException:  # an error or Ctrl-C: drop the queued runs rather than wait for them
            for future in futures:
                future.cancel()
            raise


def make_data(args: argparse.Namespace, b: dict, out: Path) -> Path:
    """The offline data: ``--data``, or the SAC agent's replay / rollouts (trained and rolled out here)."""
    if args.data:
        return Path(args.data)
    agent = out / "agent"
    milestone = {"medium": "medium", "expert": "expert"}.get(args.dataset)
    summary = agent / "summary.json"
    if args.dataset != "random" and not (summary.exists() and json.loads(summary.read_text())["steps"] >= b["expert_steps"]):
        run(["data_prep/train_expert.py", "--task", args.task, "--out", str(agent), "--steps", str(b["expert_steps"]),
             "--action-repeat", str(args.action_repeat), "--eval-every", str(max(1, b["expert_steps"] // 10)),
             "--device", args.device]
            + (["--no-progress"] if args.no_progress else []))
    if args.dataset == "medium-replay":
        return agent / "replay.npz"
    if args.dataset == "random":
        policy = "random"
    else:
        path = agent / f"{milestone}.pt"
        if not path.exists():
            raise ValueError(f"the SAC agent in {agent} never reached its {milestone} milestone "
                             f"({agent / 'summary.json'}); raise --expert-steps or use --dataset medium-replay")
        policy = f"checkpoint:{path}@{args.noise}"
    data = out / f"data_{args.dataset}"
    run(["data_prep/dmc.py", "--task", args.task, "--policy", policy, "--episodes", str(b["episodes"]),
         "--action-repeat", str(args.action_repeat), "--out", str(data)] + (["--no-progress"] if args.no_progress else []))
    return data


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    import numpy as np

    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        scores = [r["score"] for r in mine]
        table.append({
            "method": method, "score_mean": round(float(np.mean(scores)), 2),
            "score_std": round(float(np.std(scores)), 2), "seeds": len(mine),
            "labeled_transitions": mine[0]["labeled_transitions"],
            "unlabeled_transitions": mine[0]["unlabeled_transitions"],
            "train_s_mean": round(float(np.mean([r["train_s"] for r in mine])), 1),
        })
        for key in MODEL_METRICS:  # the model's held-out checks (lavid/offline_rl/model_evals.py), where trained
            values = [r["model"][key] for r in mine if "model" in r]
            table[-1][key] = round(float(np.mean(values)), 3) if values else ""
        prior = [r["prior_score"] for r in mine if "prior_score" in r]  # the model's prior mean, no actor
        table[-1]["prior_score_mean"] = round(float(np.mean(prior)), 2) if prior else ""
        table[-1]["prior_score_std"] = round(float(np.std(prior)), 2) if prior else ""
    return table


def actor_gains(rows: list[dict]) -> list[dict]:
    """For each model-based method, its policy's score minus its model's prior mean's (``prior_score``: the same
    model and evaluation episodes, no actor), seed by seed: what RL in imagination added to cloning the data's
    behaviour through the model."""
    gains = []
    for method in dict.fromkeys(r["method"] for r in rows if "prior_score" in r):
        mine = sorted((r for r in rows if r["method"] == method and "prior_score" in r), key=lambda r: r["seed"])
        gains.append({"method": method, "seeds": [r["seed"] for r in mine],
                      **diff_stats([r["score"] - r["prior_score"] for r in mine])})
    return gains


def paired_gaps(rows: list[dict], method: str = "latent") -> list[dict]:
    """``method`` against each other method on the seeds both ran (the same split and seed): per-seed score
    differences, their mean and std, and on how many seeds ``method`` was ahead. The issue's comparison is
    paired, and a gap smaller than the seeds' spread shows here as a split win count."""
    mine = {r["seed"]: r["score"] for r in rows if r["method"] == method}
    gaps = []
    for other in dict.fromkeys(r["method"] for r in rows if r["method"] != method):
        theirs = {r["seed"]: r["score"] for r in rows if r["method"] == other}
        seeds = sorted(set(mine) & set(theirs))
        if not seeds:
            continue
        gaps.append({"method": method, "versus": other, "seeds": seeds,
                     **diff_stats([mine[s] - theirs[s] for s in seeds])})
    return gaps


def diff_stats(diff: list[float]) -> dict:
    """Per-seed score differences, rounded, with their mean, std and on how many seeds they are positive."""
    import numpy as np

    return {"diff": [round(d, 2) for d in diff], "diff_mean": round(float(np.mean(diff)), 2),
            "diff_std": round(float(np.std(diff)), 2), "ahead": int(sum(d > 0 for d in diff))}


def execution_gaps(rows: list[dict], configured: str, executions: list[str]) -> list[dict]:
    """For each model-based method, each scored execution against the configured one (``policy.execute``),
    seed by seed: the same trained policy on the same evaluation episodes, so the difference is the
    execution's alone."""
    import numpy as np

    gaps = []
    for method in dict.fromkeys(r["method"] for r in rows if "execute_scores" in r):
        mine = sorted((r for r in rows if r["method"] == method and "execute_scores" in r), key=lambda r: r["seed"])
        for mode in executions:
            if mode == configured:
                continue
            scores = [r["execute_scores"][mode] for r in mine]  # a row's "score" is the configured execution's
            gaps.append({"method": method, "execute": mode, "versus": configured, "seeds": [r["seed"] for r in mine],
                         "score": [round(v, 2) for v in scores], "score_mean": round(float(np.mean(scores)), 2),
                         "score_std": round(float(np.std(scores)), 2),
                         **diff_stats([v - r["score"] for v, r in zip(scores, mine)])})
    return gaps


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for r in rows:
        if r.get("history"):
            ax.plot([h["step"] for h in r["history"]], [h["imagined_return"] for h in r["history"]],
                    label=f"{r['method']} seed {r['seed']}", alpha=0.8)
    ax.set_xlabel("policy steps")
    ax.set_ylabel("imagined λ-return (first step)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(out: Path, table: list[dict], args: argparse.Namespace, b: dict, meta: dict,
                  gaps: list[dict], executions: list[dict] | None = None, actor: list[dict] | None = None) -> None:
    executions, actor = executions or [], actor or []
    reference = REFERENCE.get((args.task, args.dataset))
    (out / "results.json").write_text(json.dumps({"task": args.task, "dataset": args.dataset, "budget": b,
                                                  "reference_score": reference, **meta, "methods": table,
                                                  "paired": gaps, "executions": executions,
                                                  "actor_over_prior": actor}, indent=2))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    lines = [
        f"{args.task}, {args.dataset} data ({meta['episodes']} episodes, {meta['labeled_episodes']} labeled: "
        f"labeled_fraction {args.labeled_fraction}), {args.budget} budget, {b['seeds']} seeds × "
        f"{b['eval_episodes']} evaluation episodes; score = return ÷ 10; observations: proprioceptive state",
        "",
        "| method | score (mean ± std over seeds) | prior, no actor | labeled transitions | unlabeled transitions | "
        "train s | model one-step ÷ copy | latent gain | decoder R² |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['method']} | {r['score_mean']:.1f} ± {r['score_std']:.1f} | "
              + (f"{r['prior_score_mean']:.1f} ± {r['prior_score_std']:.1f}" if r["prior_score_mean"] != "" else "")
              + f" | {r['labeled_transitions']} | {r['unlabeled_transitions']} | {r['train_s_mean']:.0f} | "
              + " | ".join(f"{r[k]:.3f}" if r[k] != "" else "" for k in MODEL_METRICS) + " |" for r in table]
    lines += ["", "Prior, no actor: the same model's prior mean p(z | o), executed like the policy (the data's "
                  "behaviour cloned through the model). Model columns: the latent-action model on the unlabeled "
                  "episodes, their true actions used for scoring only (one-step error ÷ copying the observation; "
                  "error with shuffled latents ÷ with the IDM's; R² of the actions decoded from the IDM's latent)."]
    if gaps:
        lines += ["", "Paired by seed (the same split): score differences, per seed and mean ± std.", "",
                  "| comparison | per seed | mean ± std | ahead on |", "|---|---|---|---|"]
        lines += [f"| {g['method']} − {g['versus']} | {', '.join(f'{d:+.1f}' for d in g['diff'])} | "
                  f"{g['diff_mean']:+.1f} ± {g['diff_std']:.1f} | {g['ahead']} of {len(g['seeds'])} seeds |" for g in gaps]
    if actor:
        lines += ["", "What the actor added: each policy's score minus its model's prior mean's, paired by seed.", "",
                  "| method | actor − prior per seed | mean ± std | ahead on |", "|---|---|---|---|"]
        lines += [f"| {g['method']} | {', '.join(f'{d:+.1f}' for d in g['diff'])} | {g['diff_mean']:+.1f} ± "
                  f"{g['diff_std']:.1f} | {g['ahead']} of {len(g['seeds'])} seeds |" for g in actor]
    if executions:
        lines += ["", f"Executions of the same trained policies (on the same evaluation episodes), against "
                      f"policy.execute={executions[0]['versus']}, paired by seed.", "",
                  "| method | executed | score (mean ± std) | difference per seed | mean ± std | ahead on |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {g['method']} | {g['execute']} | {g['score_mean']:.1f} ± {g['score_std']:.1f} | "
                  f"{', '.join(f'{d:+.1f}' for d in g['diff'])} | {g['diff_mean']:+.1f} ± {g['diff_std']:.1f} | "
                  f"{g['ahead']} of {len(g['seeds'])} seeds |" for g in executions]
    if reference is not None:
        lines += ["", f"The control paper's latent-action score on {args.task} {args.dataset} (pixels, full data): "
                      f"{reference}"]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from lavid.offline_rl.offline_data import OfflineDataError, load_offline, split_labeled
    from lavid.offline_rl.imagination import check_execution
    from lavid.offline_rl.methods import METHODS, check_task_matches, run_method
    from lavid.data.sim import SimError, check_task

    try:
        check_task(args.task)
        b = budget(args)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(METHODS)}")
        if not 0 < args.labeled_fraction <= 1:
            raise ValueError(f"--labeled-fraction must be in (0, 1], got {args.labeled_fraction}")
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        device = resolve_device(args.device)
        workers = args.workers or default_workers(device)
        config = make_config(b, args.set)
        executions = [m.strip() for m in args.score_executions.split(",") if m.strip()]
        for mode in executions:  # before any work
            check_execution(mode, config.model.pseudo > 0, name="--score-executions")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        start = time.time()
        data = make_data(args, b, out)
        episodes = load_offline(data)
        check_task_matches(episodes, args.task, args.action_repeat)
        # a rerun reuses a method-seed only when it was trained the same way on the same data
        signature = json.dumps({"data": str(Path(data).resolve()), "config": asdict(config), "task": args.task,
                                "labeled_fraction": args.labeled_fraction, "eval_episodes": b["eval_episodes"],
                                "action_repeat": args.action_repeat}, sort_keys=True)
        log_path = out / "runs.jsonl"
        rows = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
        rows = [r for r in rows if r.get("signature") == signature and r["seed"] < b["seeds"]
                and (r["method"] not in MODEL_METHODS or set(executions) <= set(r.get("execute_scores", {})))]
        done = {(r["method"], r["seed"]) for r in rows}
        labeled_episodes, jobs = 0, []
        for seed in range(b["seeds"]):
            split = split_labeled(episodes, args.labeled_fraction, seed=seed)
            labeled_episodes = sum(ep.labeled for ep in split)
            # the unlabeled episodes with their actions, to score the models' decoders (never trained on)
            probe = [ep for ep, kept in zip(episodes, split) if not kept.labeled]
            jobs += [{"method": method, "episodes": split, "config": config, "task": args.task, "seed": seed,
                      "eval_episodes": b["eval_episodes"], "action_repeat": args.action_repeat, "probe": probe,
                      "executions": executions, "device": device} for method in methods if (method, seed) not in done]
        for row in run_jobs(jobs, workers, progress=not args.no_progress):
            row["signature"] = signature
            print(f"{row['method']} seed {row['seed']}: score {row['score']:.1f} ({row['train_s']:.0f} s)", flush=True)
            rows.append(row)
            with open(log_path, "a") as f:  # as each run ends: a killed run keeps what finished
                f.write(json.dumps(row) + "\n")
        table = summarise(rows, methods)
        meta = {"episodes": len(episodes), "labeled_episodes": labeled_episodes, "config": asdict(config),
                "wall_s": round(time.time() - start, 1)}
        write_results(out, table, args, b, meta, paired_gaps([r for r in rows if r["method"] in methods]),
                      execution_gaps([r for r in rows if r["method"] in methods], config.policy.execute, executions),
                      actor_gains([r for r in rows if r["method"] in methods]))
        plot_curves(rows, out / "curves.png")
    except (OfflineDataError, SimError, ValueError, RuntimeError) as error:
        return fail(error)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
