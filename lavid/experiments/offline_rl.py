"""The offline-RL comparison (``evals/offline_rl.py``): latent actions from few labeled and many unlabeled
episodes against its baselines, every method on the same splits and seeds.

Stages, each resumable: the offline data (a state-based SAC agent trained by ``data_prep/train_expert.py``
and its replay buffer or rollouts, or data given); per seed one split of the episodes (``labeled_fraction``
keep their actions) and every method trained and scored on it (:func:`lavid.offline_rl.methods.run_method`),
each finished method-seed appended to ``runs.jsonl`` (:class:`~lavid.experiments.runner.JobLog`); then
``results.{md,csv,json}`` and ``curves.png``. Budgets are presets in ``configs/experiments/offline_rl/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lavid.core.config import check
from lavid.experiments.results import markdown_table, write_results
from lavid.experiments.runner import REPO, JobLog, run_jobs

REFERENCE = {
    # normalized scores of the control paper (pixels, DMControl; docs/reference.md)
    ("walker-walk", "expert"): 94.3, ("cheetah-run", "expert"): 52.4, ("hopper-stand", "medium"): 65.0,
    ("hopper-stand", "medium-replay"): 46.9,
}

DATASETS = ("medium-replay", "medium", "expert", "random")

MODEL_METRICS = ("dynamics_vs_copy", "latent_gain", "decoder_r2")

MODEL_METHODS = ("latent", "labeled_only")  # the methods with a latent policy, which --score-executions scores


@dataclass
class OfflineRLBudget:
    """How much each stage gets (a preset of ``configs/experiments/offline_rl/``).

    Attributes:
        expert_steps: SAC steps of the agent that makes the data. episodes: episodes rolled out for the
        ``medium`` / ``expert`` / ``random`` datasets. model_steps: latent's world model;
        labeled_only_model_steps: labeled-only's. policy_steps / bc_steps: the policies'. eval_episodes:
        simulator episodes per score. seeds: splits and seeds.
    """

    expert_steps: int = 40_000
    episodes: int = 40
    model_steps: int = 6_000
    labeled_only_model_steps: int = 2_000
    policy_steps: int = 2_000
    bc_steps: int = 2_000
    eval_episodes: int = 20
    seeds: int = 3

    def validate(self, prefix: str = "") -> None:
        for key, value in asdict(self).items():
            check(value >= 1, key.replace("_", "-"), f"must be >= 1, got {value}")


@dataclass
class OfflineRLSettings:
    """One comparison: the task, its data and the run's switches (``evals/offline_rl.py``'s arguments)."""

    task: str
    out: str
    dataset: str = "medium-replay"
    budget_name: str = "smoke"
    data: str = ""
    labeled_fraction: float = 0.1
    methods: tuple[str, ...] = ("latent", "labeled_only", "bc", "random")
    action_repeat: int = 2
    noise: float = 0.2
    executions: tuple[str, ...] = ()
    workers: int = 2
    device: str = "cpu"
    progress: bool = True


def default_workers(device: str) -> int:
    """Runs side by side when ``--workers`` is not given. On 2 CPU cores two one-thread processes get through
    1.25-1.4x the work of one two-thread process; on one H100 eight processes sharing the GPU get through
    4.65x the model steps of one, since these small steps are launch-bound (BENCHMARKS.md, offline RL
    part 7). At most one per core."""
    import os

    return min(8 if device.startswith("cuda") else 2, os.cpu_count() or 1)


def make_config(b: OfflineRLBudget, overrides: list[str]):
    """The budget's :class:`OfflineRLConfig` with ``SECTION.KEY=VALUE`` overrides, built and validated by the
    project's config loader (an unknown key or a bad value is a ValueError naming it)."""
    from lavid.core.config import ConfigError, load_config
    from lavid.offline_rl.methods import OfflineRLConfig

    steps = [f"model.steps={b.model_steps}", f"labeled_only_model_steps={b.labeled_only_model_steps}",
             f"policy.steps={b.policy_steps}", f"bc.steps={b.bc_steps}"]
    try:
        return load_config(OfflineRLConfig, None, steps + list(overrides))
    except ConfigError as error:
        raise ValueError(f"--set SECTION.KEY=VALUE: {error}") from None


def run_script(cmd: list[str]) -> None:
    """A repository script (``data_prep/...``) in a process of its own, from the repository root."""
    result = subprocess.run([sys.executable, *cmd], cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed with exit code {result.returncode}")


def make_data(s: OfflineRLSettings, b: OfflineRLBudget) -> Path:
    """The offline data: ``s.data``, or the SAC agent's replay / rollouts (trained and rolled out here)."""
    if s.data:
        return Path(s.data)
    out = Path(s.out)
    agent = out / "agent"
    milestone = {"medium": "medium", "expert": "expert"}.get(s.dataset)
    summary = agent / "summary.json"
    quiet = [] if s.progress else ["--no-progress"]
    if s.dataset != "random" and not (summary.exists() and json.loads(summary.read_text())["steps"] >= b.expert_steps):
        run_script(["data_prep/train_expert.py", "--task", s.task, "--out", str(agent), "--steps", str(b.expert_steps),
                    "--action-repeat", str(s.action_repeat), "--eval-every", str(max(1, b.expert_steps // 10)),
                    "--device", s.device] + quiet)
    if s.dataset == "medium-replay":
        return agent / "replay.npz"
    if s.dataset == "random":
        policy = "random"
    else:
        path = agent / f"{milestone}.pt"
        if not path.exists():
            raise ValueError(f"the SAC agent in {agent} never reached its {milestone} milestone "
                             f"({agent / 'summary.json'}); raise --expert-steps or use --dataset medium-replay")
        policy = f"checkpoint:{path}@{s.noise}"
    data = out / f"data_{s.dataset}"
    run_script(["data_prep/dmc.py", "--task", s.task, "--policy", policy, "--episodes", str(b.episodes),
                "--action-repeat", str(s.action_repeat), "--out", str(data)] + quiet)
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


def format_markdown(s: OfflineRLSettings, b: OfflineRLBudget, table: list[dict], meta: dict, gaps: list[dict],
                    executions: list[dict], actor: list[dict]) -> str:
    """``results.md``: the methods' table, then the paired comparisons."""
    reference = REFERENCE.get((s.task, s.dataset))
    lines = [
        f"{s.task}, {s.dataset} data ({meta['episodes']} episodes, {meta['labeled_episodes']} labeled: "
        f"labeled_fraction {s.labeled_fraction}), {s.budget_name} budget, {b.seeds} seeds × "
        f"{b.eval_episodes} evaluation episodes; score = return ÷ 10; observations: proprioceptive state",
        "",
        markdown_table(
            ["method", "score (mean ± std over seeds)", "prior, no actor", "labeled transitions",
             "unlabeled transitions", "train s", "model one-step ÷ copy", "latent gain", "decoder R²"],
            [[r["method"], f"{r['score_mean']:.1f} ± {r['score_std']:.1f}",
              f"{r['prior_score_mean']:.1f} ± {r['prior_score_std']:.1f}" if r["prior_score_mean"] != "" else "",
              r["labeled_transitions"], r["unlabeled_transitions"], f"{r['train_s_mean']:.0f}",
              *(f"{r[k]:.3f}" if r[k] != "" else "" for k in MODEL_METRICS)] for r in table]),
        "", "Prior, no actor: the same model's prior mean p(z | o), executed like the policy (the data's "
            "behaviour cloned through the model). Model columns: the latent-action model on the unlabeled "
            "episodes, their true actions used for scoring only (one-step error ÷ copying the observation; "
            "error with shuffled latents ÷ with the IDM's; R² of the actions decoded from the IDM's latent)."]

    def per_seed(g: dict) -> list[str]:
        return [", ".join(f"{d:+.1f}" for d in g["diff"]), f"{g['diff_mean']:+.1f} ± {g['diff_std']:.1f}",
                f"{g['ahead']} of {len(g['seeds'])} seeds"]

    if gaps:
        lines += ["", "Paired by seed (the same split): score differences, per seed and mean ± std.", "",
                  markdown_table(["comparison", "per seed", "mean ± std", "ahead on"],
                                 [[f"{g['method']} − {g['versus']}", *per_seed(g)] for g in gaps])]
    if actor:
        lines += ["", "What the actor added: each policy's score minus its model's prior mean's, paired by seed.", "",
                  markdown_table(["method", "actor − prior per seed", "mean ± std", "ahead on"],
                                 [[g["method"], *per_seed(g)] for g in actor])]
    if executions:
        lines += ["", f"Executions of the same trained policies (on the same evaluation episodes), against "
                      f"policy.execute={executions[0]['versus']}, paired by seed.", "",
                  markdown_table(["method", "executed", "score (mean ± std)", "difference per seed", "mean ± std",
                                  "ahead on"],
                                 [[g["method"], g["execute"], f"{g['score_mean']:.1f} ± {g['score_std']:.1f}",
                                   *per_seed(g)] for g in executions])]
    if reference is not None:
        lines += ["", f"The control paper's latent-action score on {s.task} {s.dataset} (pixels, full data): "
                      f"{reference}"]
    return "\n".join(lines) + "\n"


def run_offline_rl(s: OfflineRLSettings, b: OfflineRLBudget, overrides: list[str] = ()) -> Path:
    """Run (or finish) the comparison into ``s.out``; returns the path of ``results.md``.

    Args:
        s: the task, data and switches. b: the budget. overrides: ``SECTION.KEY=VALUE`` of
            :class:`~lavid.offline_rl.methods.OfflineRLConfig`.

    Raises:
        ValueError (a bad setting, before any work), OfflineDataError, SimError, RuntimeError (a stage failed).
    """
    from lavid.offline_rl.imagination import check_execution
    from lavid.offline_rl.methods import METHODS, check_task_matches, run_method
    from lavid.offline_rl.offline_data import load_offline, split_labeled

    unknown = sorted(set(s.methods) - set(METHODS))
    if unknown or not s.methods:
        raise ValueError(f"unknown method(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(METHODS)}")
    if not 0 < s.labeled_fraction <= 1:
        raise ValueError(f"--labeled-fraction must be in (0, 1], got {s.labeled_fraction}")
    if s.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {s.workers}")
    config = make_config(b, list(overrides))
    for mode in s.executions:  # before any work
        check_execution(mode, config.model.pseudo > 0, name="--score-executions")
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    data = make_data(s, b)
    episodes = load_offline(data)
    check_task_matches(episodes, s.task, s.action_repeat)
    # a rerun reuses a method-seed only when it was trained the same way on the same data
    log = JobLog(out / "runs.jsonl", {"data": str(Path(data).resolve()), "config": asdict(config), "task": s.task,
                                      "labeled_fraction": s.labeled_fraction, "eval_episodes": b.eval_episodes,
                                      "action_repeat": s.action_repeat})
    rows = [r for r in log.rows() if r["seed"] < b.seeds
            and (r["method"] not in MODEL_METHODS or set(s.executions) <= set(r.get("execute_scores", {})))]
    done = {(r["method"], r["seed"]) for r in rows}
    labeled_episodes, jobs = 0, []
    for seed in range(b.seeds):
        split = split_labeled(episodes, s.labeled_fraction, seed=seed)
        labeled_episodes = sum(ep.labeled for ep in split)
        # the unlabeled episodes with their actions, to score the models' decoders (never trained on)
        probe = [ep for ep, kept in zip(episodes, split) if not kept.labeled]
        jobs += [{"method": method, "episodes": split, "config": config, "task": s.task, "seed": seed,
                  "eval_episodes": b.eval_episodes, "action_repeat": s.action_repeat, "probe": probe,
                  "executions": list(s.executions), "device": s.device}
                 for method in s.methods if (method, seed) not in done]
    for row in run_jobs(run_method, jobs, s.workers, progress=s.progress):
        print(f"{row['method']} seed {row['seed']}: score {row['score']:.1f} ({row['train_s']:.0f} s)", flush=True)
        rows.append(log.append(row))
    mine = [r for r in rows if r["method"] in s.methods]
    table = summarise(rows, list(s.methods))
    meta = {"episodes": len(episodes), "labeled_episodes": labeled_episodes, "config": asdict(config),
            "wall_s": round(time.time() - start, 1)}
    gaps = paired_gaps(mine)
    executions = execution_gaps(mine, config.policy.execute, list(s.executions))
    actor = actor_gains(mine)
    payload = {"task": s.task, "dataset": s.dataset, "budget": asdict(b),
               "reference_score": REFERENCE.get((s.task, s.dataset)), **meta, "methods": table, "paired": gaps,
               "executions": executions, "actor_over_prior": actor}
    paths = write_results(out, format_markdown(s, b, table, meta, gaps, executions, actor), table, payload)
    plot_curves(rows, out / "curves.png")
    return paths["md"]
