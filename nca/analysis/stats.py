"""Seed statistics for the replication (docs/paper.md §8): mean with a 95% t interval, paired differences
between two arms run with the same seeds, and plain-words verdicts that say when an interval crosses zero.

Per seed, stage 2 of every arm sees the same data order and the same fresh embedding, so the difference
``method - baseline`` is taken seed by seed (a paired test) rather than between two independent means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with a two-sided t interval; ``low``/``high`` are NaN when n < 2."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def defined(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def crosses_zero(self) -> bool:
        """True when zero lies inside the interval, or when there is no interval at all."""
        return not self.defined or self.low <= 0.0 <= self.high

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def format(self, spec: str = ".3f", unit: str = "") -> str:
        if not self.defined:
            return f"{self.mean:{spec}}{unit} (n={self.n}, no interval)"
        return f"{self.mean:{spec}}{unit} [{self.low:{spec}}, {self.high:{spec}}]"


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Sample mean and its t interval (scipy.stats.t, n - 1 degrees of freedom)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_interval needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """``method - baseline`` over the seeds both have: absolute and relative (percent of the baseline)."""

    seeds: list[int]
    absolute: Interval
    relative_percent: Interval

    def as_dict(self) -> dict:
        return {"seeds": self.seeds, "absolute": self.absolute.as_dict(),
                "relative_percent": self.relative_percent.as_dict()}


def paired_difference(method: dict[int, float], baseline: dict[int, float], confidence: float = 0.95) -> PairedDifference:
    """Per-seed differences of two arms' values (seed -> value); only seeds present in both count."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        raise ValueError(f"no seed in common: method has {sorted(method)}, baseline has {sorted(baseline)}")
    diffs = [method[s] - baseline[s] for s in seeds]
    relative = [100.0 * (method[s] - baseline[s]) / baseline[s] for s in seeds]
    return PairedDifference(seeds, mean_interval(diffs, confidence), mean_interval(relative, confidence))


def verdict(method: str, baseline: str, domain: str, difference: PairedDifference, lower_is_better: bool = True) -> str:
    """One line, e.g. 'NCA beats scratch on code: difference -1.2% [-2.0, -0.4], 3 seeds'."""
    rel, n = difference.relative_percent, difference.absolute.n
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    shown = f"difference {rel.format('+.2f', '%')}, {seeds}"
    if not rel.defined:
        return f"{method} vs {baseline} on {domain}: undecided, {shown} (an interval needs >= 2 seeds)"
    if rel.crosses_zero:
        return f"{method} vs {baseline} on {domain}: no clear difference, {shown} (the interval crosses zero)"
    better = (rel.high < 0) == lower_is_better
    return f"{method} {'beats' if better else 'is worse than'} {baseline} on {domain}: {shown}"
