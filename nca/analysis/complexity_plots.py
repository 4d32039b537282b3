"""Complexity knobs and their pictures (docs/paper.md §3): band pass rates as the alphabet size, grid and
patch change, and the gzip-ratio histogram with each band coloured and named.

A sweep is a dict of knob -> values (``{n_states: [2, 4, 10], grid: [8, 12], patch: [2]}``); every
combination is measured on the same candidate rule ids (``rule_ratios`` of the train scan order) so the
settings differ only in the knobs.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import torch

from nca.automaton.complexity import Band, rule_ratios
from nca.automaton.config import NCAConfig
from nca.analysis.figures import pyplot, save_figure

KNOBS = ("n_states", "grid", "patch")
# One colour per band, in the order given, the same in the histogram and the sweep plot.
BAND_COLOURS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
OUTSIDE = "#bbbbbb"


def band_colour(i: int) -> str:
    return BAND_COLOURS[i % len(BAND_COLOURS)]


def sweep_configs(base: NCAConfig, sweep: dict[str, list[int]]) -> list[NCAConfig]:
    """Every combination of the swept knobs on top of ``base``; all are validated before any is measured."""
    if not sweep:
        raise ValueError("empty sweep: give knob values, e.g. {n_states: [2, 4, 10], grid: [8, 12]}")
    unknown = sorted(set(sweep) - set(KNOBS))
    if unknown:
        raise ValueError(f"cannot sweep {', '.join(unknown)}: the complexity knobs are {', '.join(KNOBS)}")
    for knob, values in sweep.items():
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"sweep {knob} needs a non-empty list of integers, got {values!r}")
    knobs = [k for k in KNOBS if k in sweep]
    configs = []
    for combo in itertools.product(*(sweep[k] for k in knobs)):
        try:
            configs.append(dataclasses.replace(base, **dict(zip(knobs, combo))))
        except ValueError as e:
            raise ValueError(f"sweep setting {dict(zip(knobs, combo))}: {e}") from None
    return configs


def setting_label(cfg: NCAConfig) -> str:
    return f"n={cfg.n_states} grid={cfg.grid} patch={cfg.patch}"


def sweep_pass_rates(configs: list[NCAConfig], bands: list[str], rules: int, seed: int = 0,
                     device: str = "cpu") -> list[dict]:
    """One row per setting: its knobs, gzip-ratio quantiles and the fraction of ``rules`` random rules in each band."""
    parsed = [Band.parse(b) for b in bands]
    rows = []
    for cfg in configs:
        ratios = rule_ratios(torch.arange(rules, device=device) * 2, cfg, seed)
        rows.append({
            "n_states": cfg.n_states, "grid": cfg.grid, "patch": cfg.patch, "label": setting_label(cfg), "rules": rules,
            "median": float(np.median(ratios)), "quantiles_5_50_95": [float(q) for q in np.quantile(ratios, [0.05, 0.5, 0.95])],
            "pass_rate": {t: float(b.contains(ratios).mean()) for t, b in zip(bands, parsed)},
        })
    return rows


def plot_sweep(rows: list[dict], bands: list[str], out: Path) -> None:
    """Grouped bars: per setting, the pass rate of each band."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2))
    width = 0.8 / len(bands)
    x = np.arange(len(rows))
    for i, band in enumerate(bands):
        ax.bar(x + (i - (len(bands) - 1) / 2) * width, [100 * r["pass_rate"][band] for r in rows], width,
               color=band_colour(i), label=f"band {band}")
    ax.set_xticks(x, [r["label"].replace(" ", "\n") for r in rows], fontsize=8)
    ax.set_ylabel(f"rules passing (% of {rows[0]['rules']})")
    ax.set_title("band pass rate by alphabet size, grid and patch")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    save_figure(fig, out)


def plot_histogram(ratios: np.ndarray, bands: list[str], files: dict[str, dict], title: str, out: Path) -> None:
    """Histogram of rule ratios, each bar coloured by the (first) band holding its centre, each band's span
    shaded and named; the medians of measured text files as labelled lines."""
    plt = pyplot()

    parsed = [Band.parse(b) for b in bands]
    # Bins 0.01 wide from 0, so band edges (given to two decimals) are bin edges and each bar lies in one band.
    edges = np.arange(0.0, max(0.8, float(np.max(ratios)) + 0.01) + 1e-9, 0.01)
    counts, edges = np.histogram(ratios, bins=edges)
    centres = (edges[:-1] + edges[1:]) / 2
    colours = [next((band_colour(i) for i, b in enumerate(parsed) if b.contains(np.array([c]))[0]), OUTSIDE) for c in centres]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(centres, counts, width=edges[1] - edges[0], color=colours, edgecolor="white", lw=0.3)
    top = max(counts.max(), 1) * 1.15
    for i, (text, b) in enumerate(zip(bands, parsed)):
        hi = min(b.hi, edges[-1])
        ax.axvspan(b.lo, hi, color=band_colour(i), alpha=0.08, lw=0)
        share = b.contains(ratios).mean()
        ax.text((b.lo + hi) / 2, top * (0.97 - 0.06 * (i % 2)), f"{text}\n{share:.0%}", ha="center", va="top",
                fontsize=7, color=band_colour(i))
    for name, info in files.items():
        ax.axvline(info["median"], color="k", lw=1.2)
        ax.text(info["median"], top * 0.5, " " + Path(name).name, rotation=90, color="k", fontsize=7, va="center")
    ax.set_ylim(0, top * 1.12)
    ax.set_xlabel("gzip ratio (compressed / raw int32 patch ids)")
    ax.set_ylabel("rules")
    ax.set_title(title)
    save_figure(fig, out)
