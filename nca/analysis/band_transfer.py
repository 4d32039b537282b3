"""Which complexity band transfers best to which domain, and whether the corpus's own gzip ratio predicts it
(docs/paper.md §3 and §10): stage-2 runs started from NCA models of different gzip bands, compared with
scratch runs of the same seed as §11 asks (paired per seed, 95% t interval; speed-up as in §8).

A run is labelled ``DOMAIN/BAND/SEED`` (``code/30-40/0``, ``web/50+/1``) or ``DOMAIN/scratch/SEED``. For each
band run the comparison is paired by seed (same seed = same stage-2 data order and init):

    change in final perplexity = final(band, seed) / final(scratch, seed) - 1
    convergence speed-up       = nca.analysis.curves.speedup(scratch seed run, band seed run)

and each (domain, band) reports the mean over seeds with a 95% t interval (none with one seed).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nca.analysis.curves import load_scalars, speedup, split_pair, version_dirs
from nca.automaton.complexity import Band
from nca.analysis.figures import pyplot, save_figure

SCRATCH = "scratch"
LABEL_HELP = "DOMAIN/BAND/SEED=DIR, e.g. code/30-40/0=runs/code_b34_s0 or code/scratch/0=runs/code_scratch_s0"
TOP_BAND_DRAWN_TO = 0.7  # the open top band (50+ = (0.5, 1.0)) is drawn up to here: random ids give ~0.67


@dataclass(frozen=True, order=True)
class RunLabel:
    domain: str
    band: str  # "scratch" or the band text as given ("30-40", "50+", "0.3-0.4")
    seed: int

    @property
    def is_scratch(self) -> bool:
        return self.band == SCRATCH

    def __str__(self) -> str:
        return f"{self.domain}/{self.band}/{self.seed}"


def parse_label(text: str) -> RunLabel:
    """``DOMAIN/BAND/SEED`` -> RunLabel; the band must be 'scratch' or readable by ``Band.parse``."""
    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"run label {text!r} is not DOMAIN/BAND/SEED ({LABEL_HELP})")
    domain, band, seed = parts
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", domain):
        raise ValueError(f"domain {domain!r} in {text!r}: use letters, digits, '_', '.' or '-' (e.g. code, web, math)")
    if not re.fullmatch(r"\d+", seed):
        raise ValueError(f"seed {seed!r} in {text!r} is not a non-negative integer")
    if band != SCRATCH:
        Band.parse(band)  # raises with the accepted spellings
    return RunLabel(domain, band, int(seed))


def parse_runs(items: list[str]) -> dict[RunLabel, Path]:
    """``LABEL=DIR`` items -> {label: dir}, checked before any curve is read: syntax, duplicates (also one band
    spelt two ways), existing directories with event files, and a scratch run for every band run's seed."""
    runs: dict[RunLabel, Path] = {}
    seen: dict[tuple, RunLabel] = {}
    for item in items:
        label_text, sep, directory = item.partition("=")
        if not sep or not directory:
            raise ValueError(f"--runs item {item!r} is not {LABEL_HELP}")
        label = parse_label(label_text)
        key = (label.domain, band_key(label.band), label.seed)
        if key in seen:
            raise ValueError(f"run {label} given twice in --runs (as {seen[key]} and {label})")
        seen[key] = label
        version_dirs(directory)  # raises when the directory is missing or holds no event files
        runs[label] = Path(directory)
    scratch = {(k.domain, k.seed) for k in runs if k.is_scratch}
    missing = sorted({f"{k.domain}/scratch/{k.seed}" for k in runs if not k.is_scratch and (k.domain, k.seed) not in scratch})
    if missing:
        raise ValueError(f"band runs are compared with the scratch run of the same seed; add {', '.join(missing)}=DIR to --runs")
    return runs


def band_key(band: str) -> tuple[float, float] | str:
    if band == SCRATCH:
        return band
    b = Band.parse(band)
    return (b.lo, b.hi)


def corpus_ratio(spec: str) -> float:
    """A number, or the median gzip ratio of a file in ``nca complexity --file ...``'s complexity.json
    (``FILE.json`` when it measured one file, ``FILE.json#measured/file`` to pick one of several)."""
    try:
        value = float(spec)
    except ValueError:
        pass
    else:
        if not 0 < value < 1:
            raise ValueError(f"corpus ratio {spec} is not a gzip ratio in (0, 1)")
        return value
    path, _, name = spec.partition("#")
    if not Path(path).is_file():
        raise FileNotFoundError(f"corpus ratio {spec!r}: {path} is neither a number nor an existing complexity.json")
    files = json.loads(Path(path).read_text()).get("files") or {}
    if not files:
        raise ValueError(f"{path} measured no text file; run `nca complexity --file CORPUS_SAMPLE --out DIR` first")
    if not name and len(files) > 1:
        raise ValueError(f"{path} measured {len(files)} files ({', '.join(files)}); pick one as {path}#FILE")
    name = name or next(iter(files))
    if name not in files:
        raise ValueError(f"{path} has no file {name!r}; it measured: {', '.join(files)}")
    return float(files[name]["median"])


def parse_corpus_ratios(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        domain, spec = split_pair(item, "--corpus_ratio", "DOMAIN=FILE_OR_NUMBER", "code=cx/complexity.json or code=0.34")
        out[domain] = corpus_ratio(spec)
    return out


def mean_ci(values: list[float], level: float = 0.95) -> dict:
    """Mean and the half-width of its t interval (None for fewer than two values). None and infinite values
    (a speed-up never reached, or reached at the first logged point) are left out; ``n`` counts the rest."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not len(x):
        return {"n": 0, "mean": None, "ci95": None}
    half = None
    if len(x) > 1:
        half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"n": int(len(x)), "mean": float(x.mean()), "ci95": half}


def transfer_table(runs: dict[RunLabel, Path], tag: str = "val/ppl") -> dict:
    """Per run: final value and, for band runs, the paired change and speed-up; per (domain, band): summaries."""
    curves = {label: load_scalars(d, tag) for label, d in runs.items()}
    scratch = {(k.domain, k.seed): k for k in runs if k.is_scratch}
    rows = []
    def order(k: RunLabel) -> tuple:  # per domain: scratch first, then the bands by their interval, then seeds
        return (k.domain, not k.is_scratch, (0.0, 0.0) if k.is_scratch else band_key(k.band), k.seed)

    for label in sorted(runs, key=order):
        steps, values = curves[label]
        row = {"label": str(label), "domain": label.domain, "band": label.band, "seed": label.seed,
               "dir": str(runs[label]), "final_step": int(steps[-1]), "final": float(values[-1])}
        if not label.is_scratch:
            base = curves[scratch[(label.domain, label.seed)]]
            row["final_change"] = float(values[-1] / base[1][-1] - 1)
            row["speedup"] = speedup(base, (steps, values), tag)
        rows.append(row)
    summary = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["band"] != SCRATCH:
            groups.setdefault((r["domain"], band_key(r["band"])), []).append(r)
    for (domain, (lo, hi)), members in sorted(groups.items()):
        speedups = [m["speedup"] for m in members]
        summary.append({
            "domain": domain, "band": members[0]["band"], "lo": lo, "hi": hi, "seeds": [m["seed"] for m in members],
            "final_change": mean_ci([m["final_change"] for m in members]),
            "speedup": mean_ci([s for s in speedups if s is not None]),
            "never_reached": sum(s is None for s in speedups),
        })
    return {"tag": tag, "runs": rows, "summary": summary}


def band_x(lo: float, hi: float) -> float:
    """Where a band sits on the plot's gzip-ratio axis: the middle of its (drawn) interval."""
    return (lo + min(hi, max(TOP_BAND_DRAWN_TO, lo + 0.05))) / 2


def plot(table: dict, corpus_ratios: dict[str, float], out: Path) -> None:
    """Per domain (columns): change in final perplexity (top) and speed-up (bottom) against the band,
    seed 95% intervals as error bars, the band's extent shaded, the corpus's own ratio as a line."""
    plt = pyplot()

    domains = sorted({s["domain"] for s in table["summary"]})
    if not domains:
        raise ValueError("no band runs to plot: --runs needs DOMAIN/BAND/SEED runs besides the scratch ones")
    fig, axes = plt.subplots(2, len(domains), figsize=(3.6 * len(domains) + 0.6, 5.6), squeeze=False, sharex="col")
    for col, domain in enumerate(domains):
        rows = [s for s in table["summary"] if s["domain"] == domain]
        xs = [band_x(s["lo"], s["hi"]) for s in rows]
        half_width = [(x - s["lo"]) for x, s in zip(xs, rows)]
        for ax, key, scale, base, ylabel in ((axes[0, col], "final_change", 100.0, 0.0, f"final {table['tag']} vs scratch (%)"),
                                             (axes[1, col], "speedup", 1.0, 1.0, "convergence speed-up (x)")):
            ys = [np.nan if s[key]["mean"] is None else s[key]["mean"] * scale for s in rows]
            err = [0.0 if s[key]["ci95"] is None else s[key]["ci95"] * scale for s in rows]
            for i, (x, hw) in enumerate(zip(xs, half_width)):  # each band's extent on the ratio axis, alternately shaded
                ax.axvspan(x - hw, x + hw, color="#1f77b4", alpha=0.10 if i % 2 == 0 else 0.03, lw=0)
            ax.errorbar(xs, ys, yerr=err, fmt="o", color="#1f77b4", ecolor="#1f77b4", capsize=3, lw=1.2)
            for x, y, s in zip(xs, ys, rows):
                if key == "speedup" and s["never_reached"]:
                    ax.annotate(f"{s['never_reached']} never", (x, y if np.isfinite(y) else base), fontsize=7,
                                textcoords="offset points", xytext=(4, 4), color="#d62728")
            ax.axhline(base, color="k", lw=0.8, ls="--", label="scratch")
            if domain in corpus_ratios:
                ax.axvline(corpus_ratios[domain], color="#d62728", lw=1.2, label=f"{domain} corpus ratio")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(ylabel)
        axes[0, col].set_title(domain)
        axes[0, col].legend(fontsize=7, loc="best")
        axes[1, col].set_xticks(xs, [s["band"] for s in rows], fontsize=8)
        axes[1, col].set_xlabel("complexity band (gzip ratio)")
    save_figure(fig, out)
