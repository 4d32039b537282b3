"""Scalar curves from the TensorBoard logs of runs, and the paper's convergence speed-up (docs/paper.md §8).

A run is ``runs/<name>/`` (its ``version_*`` subdirectories are merged, because a resumed run writes a
new version) or one ``version_N/`` directory. The speed-up of a method over a baseline is

    steps for the baseline to reach its own final value / steps for the method to reach that value,

with both step counts read off the logged curves by linear interpolation.

``nca curves`` (nca/cli/curves.py) draws and tabulates them from the command line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

EVENTS = "events.out.tfevents"
TOKENS_TAG = "train/tokens_seen"
Curve = tuple[np.ndarray, np.ndarray]


def version_dirs(run_dir: str | Path) -> list[Path]:
    """The directories holding a run's event files, oldest version first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    versions = [d for d in run_dir.glob("version_*") if d.is_dir() and re.fullmatch(r"version_\d+", d.name)]
    versions.sort(key=lambda d: int(d.name.split("_")[1]))
    dirs = [d for d in versions + [run_dir] if any(d.glob(EVENTS + "*"))]
    if not dirs:
        raise FileNotFoundError(
            f"no TensorBoard event files ({EVENTS}*) in {run_dir} or its version_*/ directories; "
            "pass a run directory written by the TensorBoardLogger, e.g. runs/stage1 or runs/stage1/version_0"
        )
    return dirs


def _read(directory: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})  # 0 = keep every point
    acc.Reload()
    return acc


def load_scalars(run_dir: str | Path, tag: str) -> Curve:
    """(steps, values) of one tag, sorted by step, over all versions of a run.

    A later version replaces the earlier ones from its first logged step on: a resume from an older
    checkpoint abandons the rest of the old curve, and re-logged steps take the newer value.
    """
    points: dict[int, float] = {}
    tags: set[str] = set()
    for d in version_dirs(run_dir):
        acc = _read(d)
        tags.update(acc.Tags()["scalars"])
        if tag not in acc.Tags()["scalars"]:
            continue
        events = acc.Scalars(tag)
        if events:
            first = min(e.step for e in events)
            points = {s: v for s, v in points.items() if s < first}
        for e in events:  # in file order: a duplicate step keeps its last value
            points[int(e.step)] = float(e.value)
    if not points:
        raise KeyError(f"tag {tag!r} not found in {run_dir}; its scalar tags are: {', '.join(sorted(tags)) or 'none'}")
    steps = np.array(sorted(points), dtype=np.int64)
    return steps, np.array([points[s] for s in steps], dtype=np.float64)


def steps_to_reach(steps: np.ndarray, values: np.ndarray, target: float) -> float | None:
    """First step at which the curve is <= target, interpolated linearly between logged points; None if never."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if steps.ndim != 1 or steps.shape != values.shape or not len(steps):
        raise ValueError(f"steps and values must be non-empty 1-d arrays of one length, got {steps.shape} and {values.shape}")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be strictly increasing (load_scalars returns them sorted)")
    hit = np.flatnonzero(values <= target)  # NaN never counts as reached
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0 or not math.isfinite(values[i - 1]):
        return float(steps[i])
    (s0, s1), (v0, v1) = steps[i - 1 : i + 1], values[i - 1 : i + 1]
    return float(s0 + (v0 - target) / (v0 - v1) * (s1 - s0))  # v0 > target >= v1


def _curve(run: str | Path | Curve, tag: str) -> Curve:
    return run if isinstance(run, tuple) else load_scalars(run, tag)


def speedup(baseline_run: str | Path | Curve, method_run: str | Path | Curve, tag: str = "val/ppl") -> float | None:
    """Paper's convergence speed-up of a method over a baseline; None when the method never gets there.

    Runs are directories (or ready (steps, values) curves). Lower is better for the tag (loss, ppl).
    """
    b_steps, b_values = _curve(baseline_run, tag)
    target = float(b_values[-1])
    base = steps_to_reach(b_steps, b_values, target)
    method = steps_to_reach(*_curve(method_run, tag), target)
    if method is None:
        return None
    return math.inf if method == 0 else base / method


def tokens_at(run_dir: str | Path, steps: np.ndarray) -> np.ndarray:
    """train/tokens_seen at the given steps (linear between logged points, extended along the end segments)."""
    t_steps, tokens = load_scalars(run_dir, TOKENS_TAG)
    if len(t_steps) == 1:
        return np.full(len(steps), tokens[0])
    out = np.interp(steps, t_steps, tokens)
    lo, hi = steps < t_steps[0], steps > t_steps[-1]
    out[lo] = tokens[0] + (steps[lo] - t_steps[0]) * (tokens[1] - tokens[0]) / (t_steps[1] - t_steps[0])
    out[hi] = tokens[-1] + (steps[hi] - t_steps[-1]) * (tokens[-1] - tokens[-2]) / (t_steps[-1] - t_steps[-2])
    return out


def table(runs: dict[str, str | Path], baseline: str, tag: str) -> list[dict]:
    """One row per run: final step and value, steps to reach the baseline's final value, speed-up."""
    curves = {name: load_scalars(d, tag) for name, d in runs.items()}
    target = float(curves[baseline][1][-1])
    rows = []
    for name, (steps, values) in curves.items():
        rows.append({
            "run": name, "dir": str(runs[name]), "final_step": int(steps[-1]), "final": float(values[-1]),
            "steps_to_baseline_final": steps_to_reach(steps, values, target),
            "speedup": speedup(curves[baseline], (steps, values), tag),
        })
    return rows


def y_scale(tag: str, choice: str = "auto") -> str:
    """Perplexity is drawn on a log axis (its changes are ratios); other tags on a linear one, unless chosen."""
    if choice not in ("auto", "log", "linear"):
        raise ValueError(f"y scale must be auto, log or linear, got {choice!r}")
    if choice != "auto":
        return choice
    return "log" if tag.rsplit("/", 1)[-1] in ("ppl", "perplexity") else "linear"


def figure(runs: dict[str, str | Path], baseline: str, tag: str, x: str = "step", scale: str = "auto"):
    """The curves of all runs on one axis, the baseline's final value dashed; returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, d in runs.items():
        steps, values = load_scalars(d, tag)
        xs = tokens_at(d, steps) if x == "tokens" else steps
        ax.plot(xs, values, marker="o", ms=3, lw=1.5, label=name)
    ax.axhline(load_scalars(runs[baseline], tag)[1][-1], color="k", ls="--", lw=0.8, label=f"{baseline} final")
    ax.set_yscale(y_scale(tag, scale))
    if ax.get_yscale() == "log":  # plain numbers (14, 20, 30), not 2x10^1, on the major and minor ticks
        from matplotlib.ticker import FuncFormatter

        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("tokens seen" if x == "tokens" else "step")
    ax.set_ylabel(tag + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def plot(runs: dict[str, str | Path], baseline: str, tag: str, x: str, out: Path, scale: str = "auto") -> None:
    import matplotlib.pyplot as plt

    fig = figure(runs, baseline, tag, x, scale)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def split_pair(item: str, flag: str, form: str, example: str) -> tuple[str, str]:
    """``KEY=VALUE`` of a command-line item, or one error naming the flag, the expected form and an example."""
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise ValueError(f"{flag} takes {form} items, got {item!r} (e.g. {example})")
    return key, value


def parse_runs(items: list[str]) -> dict[str, str]:
    runs: dict[str, str] = {}
    for item in items:
        name, d = split_pair(item, "--runs", "NAME=DIR", "scratch=runs/scratch")
        if name in runs:
            raise ValueError(f"run name {name!r} given twice in --runs")
        runs[name] = d
    return runs
