"""The replication report's pictures: validation curves with seed bands and final perplexities, paired difference
curves with their bands and crossovers, and the effect against model size of a ladder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nca.analysis.figures import pyplot, save_figure
from nca.analysis.stats import geometric_interval


def plot_domain(title: str, arms: dict, section: dict, path: Path) -> None:
    """Left: geometric-mean val/ppl per arm with its 95% band over seeds; right: final perplexity with intervals."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for arm, seeds in arms.items():
        steps = sorted(set.intersection(*(set(c[0].tolist()) for c in seeds.values())))
        table = np.array([[dict(zip(c[0].tolist(), c[1].tolist()))[s] for s in steps] for c in seeds.values()])
        bands = [geometric_interval(table[:, i]) for i in range(len(steps))]
        line, = left.plot(steps, [b.mean for b in bands], marker="o", ms=3, label=f"{arm} ({len(seeds)} seeds)")
        if len(seeds) > 1:
            left.fill_between(steps, [b.low for b in bands], [b.high for b in bands], color=line.get_color(), alpha=0.2)
    left.set_xlabel("stage-2 optimizer step")
    left.set_ylabel("validation perplexity")
    left.set_yscale("log")
    left.set_title(f"{title}: validation curves (geometric mean, 95% band over seeds)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    names = list(section["final_ppl"])
    finals = [section["final_ppl"][a] for a in names]
    means = [f["mean"] for f in finals]
    lows = [f["low"] if f["low"] is not None else f["mean"] for f in finals]
    highs = [f["high"] if f["high"] is not None else f["mean"] for f in finals]
    right.bar(range(len(names)), means, yerr=[np.subtract(means, lows), np.subtract(highs, means)], capsize=4,
              color="tab:blue", alpha=0.7)
    right.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    right.set_ylim(min(lows) * 0.98, max(highs) * 1.02)
    right.set_title("final validation perplexity (95% interval)")
    right.grid(alpha=0.3, axis="y")
    save_figure(fig, path, dpi=110)


def plot_differences(title: str, curves: list[dict], path: Path) -> None:
    """Every comparison's paired difference of log perplexity along training, with its band and crossover: one
    panel per baseline, so a study's dozen comparisons stay readable and a large effect (natural text) does not
    flatten the small ones against other baselines."""
    plt = pyplot()
    baselines = list(dict.fromkeys(c["baseline"] for c in curves)) or ["none"]
    cols = 1 if len(baselines) == 1 else 2
    rows = -(-len(baselines) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8 if cols == 1 else 12, 4.5 if rows == 1 else 3.6 * rows),
                             squeeze=False)
    for ax, baseline in zip(axes.flat, baselines):
        for c in (c for c in curves if c["baseline"] == baseline):
            line, = ax.plot(c["steps"], c["mean"], marker="o", ms=3, label=c["method"])
            if all(v is not None for v in c["low"]):
                ax.fill_between(c["steps"], c["low"], c["high"], color=line.get_color(), alpha=0.15)
            if c["crossover"] is not None:
                ax.axvline(c["crossover"], color=line.get_color(), ls=":", lw=1)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_title(f"method - {baseline}", fontsize=10)
        ax.set_xlabel("stage-2 optimizer step")
        ax.set_ylabel("loss difference, nats (< 0: method ahead)", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(baselines):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: paired difference along training (95% band over seeds; dotted: crossover)")
    save_figure(fig, path, dpi=110)


def plot_ladder(series: dict[str, list[tuple[float, dict]]], title: str, path: Path) -> None:
    """Effect against model size: per comparison, (parameters, relative-change interval dict) points."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in series.items():
        points = sorted(points, key=lambda p: p[0])
        xs = [p[0] for p in points]
        means = [p[1]["mean"] for p in points]
        low = [p[1]["mean"] - (p[1]["low"] if p[1]["low"] is not None else p[1]["mean"]) for p in points]
        high = [(p[1]["high"] if p[1]["high"] is not None else p[1]["mean"]) - p[1]["mean"] for p in points]
        ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=4, label=name)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters of the stage-2 model")
    ax.set_ylabel("change in final perplexity, % (95% interval)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)
