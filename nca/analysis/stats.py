"""Seed statistics for the replication (docs/paper.md §8, §11): mean with a 95% t interval, paired differences
between two arms run with the same seeds, the minimal detectable effect at the study's seeds and spread, paired
difference curves along training, and plain-words verdicts that say when an interval crosses zero and what is left
of a difference once the study's many comparisons are accounted for (Holm's correction).

Per seed, stage 2 of every arm sees the same data order and the same fresh embedding, so the difference
``method - baseline`` is taken seed by seed (a paired test) rather than between two independent means.
Perplexities and speed-ups are ratios: their intervals are taken on the log scale and mapped back, so a
perplexity interval is never negative and a relative change never falls below -100%.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
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
    """``method - baseline`` over the seeds both have: absolute, relative (percent, from the log ratio), the log
    ratio itself, the minimal detectable effect at these seeds and this spread, and the paired t test's two-sided
    p value of the log ratio (None below 2 seeds or without spread)."""

    seeds: list[int]
    absolute: Interval
    relative_percent: Interval
    log_ratio: Interval
    detectable: Optional["Detectable"] = None
    p_value: Optional[float] = None

    def as_dict(self) -> dict:
        return {"seeds": self.seeds, "absolute": self.absolute.as_dict(),
                "relative_percent": self.relative_percent.as_dict(), "log_ratio": self.log_ratio.as_dict(),
                "detectable": None if self.detectable is None else self.detectable.as_dict(), "p_value": self.p_value}


def paired_difference(method: dict[int, float], baseline: dict[int, float], confidence: float = 0.95) -> PairedDifference:
    """Per-seed differences of two arms' positive values (seed -> value, e.g. perplexity); only seeds present in
    both count. ``relative_percent`` is 100 (exp(mean log ratio) - 1) with its interval mapped the same way,
    ``log_ratio`` the per-seed ln(method / baseline) (for perplexity: the validation-loss difference in nats)."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        raise ValueError(f"no seed in common: method has {sorted(method)}, baseline has {sorted(baseline)}")
    if min(min(method[s], baseline[s]) for s in seeds) <= 0:
        raise ValueError("paired_difference takes positive values (perplexities, speed-ups)")
    diffs = [method[s] - baseline[s] for s in seeds]
    log_ratios = [math.log(method[s] / baseline[s]) for s in seeds]
    logs = mean_interval(log_ratios, confidence)
    return PairedDifference(seeds, mean_interval(diffs, confidence), percent(logs), logs,
                            minimal_detectable_effect(log_ratios), _t_test_p(log_ratios))


def _t_test_p(xs: Sequence[float]) -> Optional[float]:
    if len(xs) < 2 or max(xs) == min(xs):
        return None
    return float(scipy_stats.ttest_1samp(xs, 0.0).pvalue)


def holm(p_values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjustment of a family of p values (None stays None and is not counted): a study makes
    many comparisons, and an unadjusted 5% test among a dozen of them finds a 'difference' by chance alone."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted


def percent(log_interval: Interval) -> Interval:
    """A log-ratio interval as a relative change in percent: 100 (exp(x) - 1) of each end (never below -100%)."""
    f = lambda x: 100.0 * math.expm1(x) if math.isfinite(x) else math.nan  # noqa: E731
    return Interval(f(log_interval.mean), f(log_interval.low), f(log_interval.high), log_interval.n,
                    log_interval.confidence)


def geometric_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Geometric mean of positive values (perplexities, speed-ups) with the t interval of their logs, mapped
    back: positive by construction."""
    if min(values) <= 0:
        raise ValueError(f"geometric_interval takes positive values, got {list(values)}")
    logs = mean_interval([math.log(v) for v in values], confidence)
    f = lambda x: math.exp(x) if math.isfinite(x) else math.nan  # noqa: E731
    return Interval(f(logs.mean), f(logs.low), f(logs.high), logs.n, confidence)


@dataclass(frozen=True)
class Detectable:
    """The smallest true effect a paired study of ``n`` seeds with this spread detects with the given power at
    the 5% level: (t(0.975, n-1) + t(power, n-1)) sd / sqrt(n); ``seeds_for_observed`` is the number of seeds that
    would give that power for the effect actually observed (None: no spread, or more than 1,000 seeds)."""

    log_ratio: float          # in the units of the differences (nats for log perplexity)
    n: int
    sd: float
    power: float
    seeds_for_observed: Optional[int]

    @property
    def percent(self) -> float:
        return 100.0 * math.expm1(self.log_ratio)

    def as_dict(self) -> dict:
        return {**asdict(self), "percent": self.percent}


def _mde(sd: float, n: int, power: float, alpha: float = 0.05) -> float:
    t = scipy_stats.t
    return (float(t.ppf(1 - alpha / 2, n - 1)) + float(t.ppf(power, n - 1))) * sd / math.sqrt(n)


def minimal_detectable_effect(differences: Sequence[float], power: float = 0.8) -> Optional[Detectable]:
    """``Detectable`` of paired differences (None below 2 values)."""
    xs = [float(x) for x in differences]
    n = len(xs)
    if n < 2:
        return None
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    needed = None
    if sd > 0 and mean != 0:
        needed = next((k for k in range(2, 1001) if _mde(sd, k, power) <= abs(mean)), None)
    return Detectable(_mde(sd, n, power), n, sd, power, needed)


def verdict(method: str, baseline: str, domain: str, difference: PairedDifference, lower_is_better: bool = True,
            family: Optional[tuple[float, int]] = None) -> str:
    """One line, e.g. 'nca beats scratch on code: difference -1.2% [-2.0, -0.4], 8 seeds; minimal detectable
    effect 0.9% at 80% power; p = 0.004, 0.048 after Holm over 12 comparisons'. ``family``: this comparison's
    Holm-adjusted p value and the number of comparisons it was adjusted over; a difference whose interval
    excludes zero but whose adjusted p is 0.05 or more says so."""
    rel, n = difference.relative_percent, difference.absolute.n
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    d = difference.detectable
    seeds += "" if d is None else f"; minimal detectable effect {abs(d.percent):.2f}% at 80% power"
    if difference.p_value is not None:
        seeds += f"; p = {difference.p_value:.3g}"
        if family is not None and family[1] > 1:
            seeds += f", {family[0]:.3g} after Holm over {family[1]} comparisons"
    shown = f"difference {rel.format('+.2f', '%')}, {seeds}"
    if not rel.defined:
        return f"{method} vs {baseline} on {domain}: undecided, {shown} (an interval needs >= 2 seeds)"
    if rel.crosses_zero:
        return f"{method} vs {baseline} on {domain}: no clear difference, {shown} (the interval crosses zero)"
    better = (rel.high < 0) == lower_is_better
    chance = family is not None and family[1] > 1 and family[0] >= 0.05
    return (f"{method} {'beats' if better else 'is worse than'} {baseline} on {domain}: {shown}"
            + (" (not significant once the study's comparisons are accounted for)" if chance else ""))


# ------------------------------------------------------------------------------------ paired curves
@dataclass(frozen=True)
class PairedCurve:
    """``log(method) - log(baseline)`` at every evaluation step both arms of a seed logged (for perplexity: the
    validation-loss difference in nats), with its mean and t band over seeds; the crossover and the area."""

    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: list[int]
    crossover: Optional[float]    # step where the mean difference last changes sign (interpolated); None if never
    pattern: str                  # 'ahead throughout', 'behind throughout', 'overtakes', 'falls behind', 'even'
    area: Interval                # mean over seeds of the area between the curves / the steps spanned (nats)

    def as_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in ("steps", "mean", "low", "high", "seeds", "crossover", "pattern")},
                "area": self.area.as_dict()}


def crossover(steps: Sequence[float], mean: Sequence[float]) -> tuple[Optional[float], str]:
    """The step where a difference curve (negative = the method ahead) last crosses zero, linearly interpolated,
    and the pattern in words."""
    signs = [(-1 if m < 0 else 1 if m > 0 else 0) for m in mean]
    if all(s < 0 for s in signs):
        return None, "ahead throughout"
    if all(s > 0 for s in signs):
        return None, "behind throughout"
    if all(s == 0 for s in signs):
        return None, "even"
    last = None
    for i in range(1, len(mean)):
        if signs[i] != signs[i - 1] and signs[i] != 0:
            x0, x1, y0, y1 = steps[i - 1], steps[i], mean[i - 1], mean[i]
            last = float(x0 if y0 == 0 else x0 + (0 - y0) * (x1 - x0) / (y1 - y0))
    return last, ("overtakes" if signs[-1] < 0 else "falls behind" if signs[-1] > 0 else "even")


def paired_curve(method: dict[int, tuple], baseline: dict[int, tuple], confidence: float = 0.95) -> PairedCurve:
    """Seed -> (steps, positive values) of two arms -> their paired log-difference curve (steps all seeds share)."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        raise ValueError(f"no seed in common: method has {sorted(method)}, baseline has {sorted(baseline)}")
    as_map = lambda c: dict(zip((int(x) for x in c[0]), (float(v) for v in c[1])))  # noqa: E731
    pairs = {s: (as_map(method[s]), as_map(baseline[s])) for s in seeds}
    steps = sorted(set.intersection(*(set(m) & set(b) for m, b in pairs.values())))
    if not steps:
        raise ValueError("the two arms share no evaluation step")
    diffs = {s: [math.log(m[k] / b[k]) for k in steps] for s, (m, b) in pairs.items()}
    bands = [mean_interval([diffs[s][i] for s in seeds], confidence) for i in range(len(steps))]
    span = steps[-1] - steps[0]
    area = [float(np.trapezoid(diffs[s], steps)) / span if span else diffs[s][0] for s in seeds]
    cross, pattern = crossover(steps, [b.mean for b in bands])
    nan = lambda x: None if not math.isfinite(x) else x  # noqa: E731
    return PairedCurve(steps, [b.mean for b in bands], [nan(b.low) for b in bands], [nan(b.high) for b in bands],
                       seeds, cross, pattern, mean_interval(area, confidence))
