"""The ablation's outputs: ``results.md`` (one table, like the paper's, and the action probes per task),
``results.csv``, ``results.json`` and plots (one-step error vs capacity per family, leakage ratios, transfer
ratios, probe R²)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lavid.experiments.results import cell, markdown_table, write_results
from lavid.models import latents

COLUMNS = [  # (key, header, format)
    ("error/one_step", "one-step", "{:.4f}"),
    ("error/copy", "copy", "{:.4f}"),
    ("error/one_step_over_copy", "ratio (one-step / copy)", "{:.3f}"),
    ("error/latent_gain", "latent gain (shuffled / own)", "{:.3f}"),
    ("error/rollout", "rollout", "{:.4f}"),
    ("leak/ratio", "leakage ratio (cut / no cut)", "{:.2f}"),
    ("leak/cut_over_copy", "at cut / copy at cut", "{:.3f}"),
    ("transfer/ratio", "cycle transfer ratio", "{:.3f}"),
    ("probe/r2_mean", "probe R², linear", "{:.3f}"),
    ("probe/ceiling_mean", "linear ceiling (true poses)", "{:.3f}"),
    ("probe/r2_mlp_mean", "probe R², MLP", "{:.3f}"),
    ("probe/ceiling_mlp_mean", "MLP ceiling (true poses)", "{:.3f}"),
    ("pixel/psnr", "PSNR (dB)", "{:.2f}"),
    ("pixel/ssim", "SSIM", "{:.3f}"),
    ("pixel/lpips", "LPIPS", "{:.3f}"),
    ("sample/error_best", "sampled best-of-4", "{:.4f}"),
    ("sample/spread", "sample spread", "{:.4f}"),
]


PROBES = (("r2", "ceiling", "linear"), ("r2_mlp", "ceiling_mlp", "MLP"))
"""The action probes of the per-task table: (key of the probe from z, key of its ceiling, name); the keys are
:func:`lavid.metrics.latent_evals.probe_metrics`' ``probe/{key}/{task}``."""


PROBE_FLOOR = -0.5
"""``probe_r2.png`` cuts bars below this R² (and writes their value): one overfit probe would hide the rest."""


def probe_table(rows: list[dict[str, Any]]) -> str:
    """The action probes per task as a Markdown table (empty when no row has one): one line per run, per
    task and probe (linear, MLP) the held-out R² from z with its ceiling from the true poses in brackets."""
    tasks = sorted({key.split("/", 2)[2] for row in rows for key in row
                    if key.startswith(("probe/r2/", "probe/r2_mlp/"))})
    if not tasks:
        return ""
    headers = ["run", *(f"{task}, {name} [ceiling]" for task in tasks for _, _, name in PROBES)]
    lines = []
    for row in rows:
        if not any(f"probe/{probe}/{task}" in row for task in tasks for probe, _, _ in PROBES):
            continue
        cells = [row["run"]]
        for task in tasks:
            for probe, ceiling, _ in PROBES:
                cells.append(f"{cell(row.get(f'probe/{probe}/{task}'), '{:.3f}')} "
                             f"[{cell(row.get(f'probe/{ceiling}/{task}'), '{:.3f}')}]")
        lines.append(cells)
    return markdown_table(headers, lines) if lines else ""


def write_report(rows: list[dict[str, Any]], out: str | Path, budget_name: str = "") -> dict[str, Path]:
    """Write the table, CSV, JSON and plots for the sweep's ``rows`` into ``out``; returns their paths."""
    out = Path(out)
    columns = [c for c in COLUMNS if any(c[0] in row for row in rows)]
    intro = (f"# Latent-action ablation{f' ({budget_name} budget)' if budget_name else ''}\n\n"
             "Errors are mean L1 in the encoder's representation space on held-out clips (lower is better); "
             "'copy' predicts no change (target vs target); ratio below 1 beats it. Latent gain is the error with "
             "another clip's latents over the error with the clip's own (1.0: the latent is ignored). "
             "Leakage ratio near 1 means the latent leaks the future (paper: "
             "×2.0–×2.5); at cut / copy at cut below 1 means the latent passes part of the jump to the other "
             "clip, 1 none of it; transfer ratio near 1 means latents keep their meaning in another video (paper: "
             "×1.03–×1.34). PSNR/SSIM are of decoded one-step predictions. The action probes give the held-out "
             "R² of the true action from z, linear (ridge) and through a small MLP, each next to its ceiling: the "
             "same probe from the true poses at t and t+1 of the same transitions (where the data stores "
             "simulator states), so read the R² as a fraction of its ceiling, not of 1.\n\n")
    table = markdown_table(
        ["run", "family", "coefficient", *(h for _, h, _ in columns), "status"],
        [[row["run"], row["family"], f"{row['coefficient']}={row['value']}" if row.get("coefficient") else "–",
          *(cell(row.get(k), f) for k, _, f in columns),
          row["status"] if row["status"] != "failed" else f"failed: {row.get('error', '')}"] for row in rows])
    probes = probe_table(rows)
    if probes:
        table += "\n\n## Action probes per task\n\nHeld-out R² from z [its ceiling from the true poses at t and t+1].\n\n" + probes
    keys = ["run", "family", "coefficient", "value", "status", "error"]
    keys += sorted({k for row in rows for k in row} - set(keys))
    paths = write_results(out, intro + table, rows, columns=keys)
    paths.update(write_plots(rows, out / "plots"))
    return paths


def write_plots(rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if r["status"] == "done"]
    paths: dict[str, Path] = {}

    # one-step error vs capacity: each swept family along its own coefficient, baselines as lines; families
    # in the registry's order, with its labels (a family the registry does not know keeps its name)
    known = {spec.name: spec for spec in latents.families()}
    order = {name: i for i, name in enumerate(known)}

    def in_order(names: set[str]) -> list[str]:
        return sorted(names, key=lambda name: (order.get(name, len(order)), name))

    swept = in_order({r["family"] for r in done if r.get("coefficient")})
    baselines = in_order({r["family"] for r in done if not r.get("coefficient")})
    styles = ("--", ":", (0, (5, 1, 1, 1)), (0, (1, 3)))
    figure, axes = plt.subplots(1, max(1, len(swept)), figsize=(4 * max(1, len(swept)), 3.2), squeeze=False)
    for axis, family in zip(axes[0], swept or [None]):
        spec = known.get(family)
        label = spec.label if spec else family
        runs = [r for r in done if r["family"] == family]
        axis.plot(range(len(runs)), [r["error/one_step"] for r in runs], "o-", label=label or "")
        axis.set_xticks(range(len(runs)), [r["value"] for r in runs], rotation=30, fontsize=7)
        coefficient = runs[0]["coefficient"] if runs else ""
        axis.set_xlabel(spec.coefficient_label if spec else coefficient)
        for i, baseline in enumerate(baselines):
            base = known.get(baseline)
            for r in done:
                if r["family"] == baseline:
                    axis.axhline(r["error/one_step"], linestyle=styles[i % len(styles)], color="gray",
                                 label=base.label if base else baseline)
        copies = [r["error/copy"] for r in done]
        if copies:
            axis.axhline(sum(copies) / len(copies), linestyle="-.", color="red", linewidth=0.8, label="copy")
        axis.set_title(label or "no swept family")
        axis.set_ylabel("held-out one-step error (L1)")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    paths["capacity"] = out / "one_step_vs_capacity.png"
    figure.savefig(paths["capacity"], dpi=120)
    plt.close(figure)

    def number(row: dict[str, Any], key: str) -> float | None:
        value = row.get(key)
        return value if isinstance(value, (int, float)) and not math.isnan(value) else None

    for key, name, reference in (("leak/ratio", "leakage_ratio", 1.0), ("transfer/ratio", "transfer_ratio", 1.0)):
        runs = [r for r in done if number(r, key) is not None]
        figure, axis = plt.subplots(figsize=(max(4, 0.5 * len(runs) + 1.5), 3.2))
        axis.bar(range(len(runs)), [r[key] for r in runs], color="tab:blue")
        axis.set_xticks(range(len(runs)), [r["run"] for r in runs], rotation=45, ha="right", fontsize=7)
        axis.axhline(reference, color="gray", linewidth=0.8)
        axis.set_ylabel(key)
        figure.tight_layout()
        paths[name] = out / f"{name}.png"
        figure.savefig(paths[name], dpi=120)
        plt.close(figure)

    # the action probes: linear and MLP R² from z side by side, each with its ceiling from the true poses (a tick)
    # (a run without one of the probes gets no bar for it, not a bar at 0)
    runs = [r for r in done if any(number(r, f"probe/{probe}_mean") is not None for probe, _, _ in PROBES)]
    figure, axis = plt.subplots(figsize=(max(4, 0.7 * len(runs) + 1.5), 3.2))
    width, cut = 0.38, False
    for offset, ((probe, ceiling, label), color) in enumerate(zip(PROBES, ("tab:blue", "tab:orange"))):
        placed = [(i + (offset - 0.5) * width, r) for i, r in enumerate(runs)]
        bars = [(x, v) for x, r in placed if (v := number(r, f"probe/{probe}_mean")) is not None]
        axis.bar([x for x, _ in bars], [max(v, PROBE_FLOOR) for _, v in bars], width, color=color,
                 label=f"{label} probe from z")
        for x, v in bars:  # a probe far below the mean's R² 0 would hide the rest: cut, value written
            if v < PROBE_FLOOR:
                cut = True
                axis.text(x, PROBE_FLOOR, f"{v:.2f}", ha="center", va="bottom", fontsize=6, rotation=90)
        tops = [(x, c) for x, r in placed if (c := number(r, f"probe/{ceiling}_mean")) is not None]
        if tops:
            axis.scatter([x for x, _ in tops], [c for _, c in tops], marker="_", s=200, color="black", zorder=3,
                         label="ceiling (true poses)" if offset == 0 else None)
    axis.set_xticks(range(len(runs)), [r["run"] for r in runs], rotation=45, ha="right", fontsize=7)
    axis.axhline(0.0, color="gray", linewidth=0.8)
    if cut:
        axis.set_ylim(bottom=PROBE_FLOOR * 1.05)
    axis.set_ylabel("held-out action R², mean of tasks")
    if runs:
        axis.legend(fontsize=7)
    figure.tight_layout()
    paths["probe_r2"] = out / "probe_r2.png"
    figure.savefig(paths["probe_r2"], dpi=120)
    plt.close(figure)
    return paths
