"""Seed statistics (nca.analysis.stats) and the report's numbers (nca.analysis.report) against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from nca.analysis.report import build_report, direction, markdown, paper_arm
from nca.analysis.stats import (crossover, geometric_interval, holm, mean_interval, minimal_detectable_effect, paired_curve,
                                paired_difference, verdict)


def test_mean_interval_matches_the_t_formula_and_scipy():
    # mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445 -> half width 2.776445 * sqrt(2.5 / 5) = 1.963243
    ci = mean_interval([1, 2, 3, 4, 5])
    assert ci.mean == pytest.approx(3.0)
    assert (ci.low, ci.high) == pytest.approx((3 - 1.9632431614775572, 3 + 1.9632431614775572))
    assert ci.n == 5 and ci.defined and not ci.crosses_zero
    values = np.random.default_rng(0).normal(0.2, 1.0, size=7)
    expected = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(0.9)
    ci = mean_interval(values, confidence=0.9)
    assert (ci.low, ci.high) == pytest.approx((expected.low, expected.high))


def test_one_value_has_no_interval_and_counts_as_crossing_zero():
    ci = mean_interval([4.2])
    assert ci.mean == 4.2 and not ci.defined and ci.crosses_zero
    assert ci.as_dict()["low"] is None and "no interval" in ci.format()
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1, 2], confidence=1.5)


def test_paired_difference_uses_common_seeds_only():
    method = {0: 10.0, 1: 11.0, 2: 12.0, 7: 99.0}
    baseline = {0: 11.0, 1: 11.5, 2: 13.0, 5: 1.0}
    diff = paired_difference(method, baseline)
    assert diff.seeds == [0, 1, 2]
    # differences -1, -0.5, -1: mean -5/6, sd 0.288675, t(0.975, 2) = 4.302653 -> half 0.717109
    assert diff.absolute.mean == pytest.approx(-5 / 6)
    assert diff.absolute.high == pytest.approx(-5 / 6 + 0.7171088)
    logs = np.log([10 / 11, 11 / 11.5, 12 / 13])
    assert diff.log_ratio.mean == pytest.approx(logs.mean())
    half = 4.302653 * logs.std(ddof=1) / np.sqrt(3)
    assert diff.relative_percent.mean == pytest.approx(100 * np.expm1(logs.mean()))
    assert diff.relative_percent.low == pytest.approx(100 * np.expm1(logs.mean() - half), rel=1e-5)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_verdicts_say_plainly_when_the_interval_crosses_zero():
    better = paired_difference({0: 9.0, 1: 9.1, 2: 8.9}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert verdict("nca", "scratch", "code", better).startswith("nca beats scratch on code: difference -10.00% [")
    assert ", 3 seeds; minimal detectable effect 3.50% at 80% power" in verdict("nca", "scratch", "code", better)
    worse = paired_difference({0: 11.0, 1: 11.1, 2: 10.9}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert "is worse than" in verdict("nca", "scratch", "code", worse)
    mixed = paired_difference({0: 9.0, 1: 11.0, 2: 10.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert "no clear difference" in verdict("nca", "scratch", "code", mixed)
    assert "crosses zero" in verdict("nca", "scratch", "code", mixed)
    single = paired_difference({0: 9.0}, {0: 10.0})
    assert "undecided" in verdict("nca", "scratch", "code", single)


def _curve(values):
    return np.arange(1, len(values) + 1) * 10, np.asarray(values, dtype=float)


def test_build_report_finals_differences_and_speedups():
    curves = {"owt": {
        "scratch": {0: _curve([20, 15, 12, 10]), 1: _curve([21, 16, 12, 11])},
        "nca-50plus": {0: _curve([18, 12, 10, 9]), 1: _curve([19, 13, 11, 10])},
    }}
    report = build_report(curves, [("nca-50plus", "scratch")], {"seeds": "0, 1"})
    owt = report["domains"]["owt"]
    assert owt["final_ppl"]["scratch"]["mean"] == pytest.approx(np.sqrt(10 * 11))  # geometric mean
    assert owt["final_ppl"]["scratch"]["paper"] == 14.66 and owt["final_ppl"]["nca-50plus"]["paper"] == 13.82
    diff = owt["differences"][0]
    assert diff["absolute"]["mean"] == pytest.approx(-1.0)
    assert diff["paper_relative_percent"] == pytest.approx(100 * (13.82 - 14.66) / 14.66)
    # seed 0: scratch reaches 10 at step 40; nca reaches 10 at step 30 -> 4/3. seed 1: 11 at 40 vs 30 -> 4/3.
    up = owt["speedup"]["nca-50plus"]
    assert up["per_seed"] == {"0": pytest.approx(4 / 3), "1": pytest.approx(4 / 3)}
    assert up["reached"] == 2 and up["paper"] == 1.49
    assert report["verdicts"] == [diff["verdict"]]
    curve = owt["curves"][0]
    assert curve["pattern"] == "ahead throughout" and curve["mean"][0] == pytest.approx(np.log(18 * 19 / (20 * 21)) / 2)
    text = markdown(report)
    for heading in ("## Verdicts", "### Final validation perplexity", "### Paired differences", "### Convergence speed-up",
                    "### Difference along training", "minimal detectable effect"):
        assert heading in text
    assert "nan" not in text.lower()


def test_speedup_never_reached_and_paper_directions():
    curves = {"code": {"scratch": {0: _curve([5, 3, 2])}, "dyck": {0: _curve([6, 5, 4])}}}
    up = build_report(curves, [])["domains"]["code"]["speedup"]["dyck"]
    assert up["per_seed"] == {"0": None} and up["reached"] == 0 and up["interval"] is None
    assert paper_arm("nca-30-40") == "nca" and paper_arm("nca-50plus-reinit_attention") is None
    assert paper_arm("nca-50plus-n4") is None  # another alphabet than the paper's
    agree = mean_interval([-2.0, -1.5, -1.8])
    assert direction(agree, -5.7) == "agrees" and direction(agree, 2.0) == "opposite"
    assert direction(mean_interval([-1.0, 1.0]), -5.7).startswith("inconclusive")
    assert build_report(curves, [])["domains"]["code"]["final_ppl"]["dyck"]["low"] is None


def test_ratio_intervals_never_go_below_zero_or_minus_100_percent():
    wide = [5.0, 60.0]  # two seeds far apart: the arithmetic t interval would reach about -320
    assert mean_interval(wide).low < 0
    geo = geometric_interval(wide)
    assert geo.mean == pytest.approx(np.sqrt(5 * 60)) and 0 < geo.low < geo.mean < geo.high
    diff = paired_difference({0: 2.0, 1: 50.0}, {0: 10.0, 1: 10.0})  # -80% and +400%
    assert -100 < diff.relative_percent.low < 0 < diff.relative_percent.high
    with pytest.raises(ValueError, match="positive"):
        geometric_interval([1.0, 0.0])


def test_minimal_detectable_effect_matches_the_power_formula():
    diffs = [0.01, -0.005, 0.02, 0.0, 0.015, 0.005, -0.01, 0.012]
    d = minimal_detectable_effect(diffs)
    sd, n = np.std(diffs, ddof=1), len(diffs)
    expected = (scipy_stats.t.ppf(0.975, n - 1) + scipy_stats.t.ppf(0.8, n - 1)) * sd / np.sqrt(n)
    assert d.n == 8 and d.log_ratio == pytest.approx(expected) and d.percent == pytest.approx(100 * np.expm1(expected))
    # the seeds needed for the observed mean: the first n whose detectable effect is at most |mean|
    need = d.seeds_for_observed
    mde = lambda k: (scipy_stats.t.ppf(0.975, k - 1) + scipy_stats.t.ppf(0.8, k - 1)) * sd / np.sqrt(k)  # noqa: E731
    assert mde(need) <= abs(np.mean(diffs)) < mde(need - 1)
    assert minimal_detectable_effect([0.1]) is None
    line = verdict("nca", "scratch", "web text", paired_difference({s: 10 * np.exp(x) for s, x in enumerate(diffs)},
                                                                    {s: 10.0 for s in range(8)}))
    assert f"minimal detectable effect {abs(d.percent):.2f}% at 80% power" in line


def test_paired_curve_band_crossover_and_area_by_hand():
    steps = np.array([10, 20, 30, 40])
    base = {s: (steps, np.array([20.0, 15.0, 12.0, 10.0])) for s in (0, 1)}
    # the method starts behind and overtakes: log differences +0.1, +0.05, -0.05, -0.1 (seed 0), twice that (seed 1)
    method = {s: (steps, base[s][1] * np.exp(k * np.array([0.1, 0.05, -0.05, -0.1]))) for s, k in ((0, 1.0), (1, 2.0))}
    c = paired_curve(method, base)
    assert c.steps == [10, 20, 30, 40] and c.mean == pytest.approx([0.15, 0.075, -0.075, -0.15])
    assert c.pattern == "overtakes" and c.crossover == pytest.approx(25.0)
    # area / steps per seed: trapezoid of (0.1, 0.05, -0.05, -0.1) over 30 steps = 0
    assert c.area.mean == pytest.approx(0.0, abs=1e-12)
    half = 12.706205 * np.std([0.1, 0.2], ddof=1) / np.sqrt(2)
    assert c.high[0] == pytest.approx(0.15 + half, rel=1e-5)
    assert crossover([1, 2, 3], [-1.0, -0.5, -0.1]) == (None, "ahead throughout")
    assert crossover([1, 2, 3], [1.0, 0.5, 0.1]) == (None, "behind throughout")
    assert crossover([0, 10, 20, 30], [-1.0, 1.0, 1.0, -1.0]) == (pytest.approx(25.0), "overtakes")
    assert crossover([0, 10], [-1.0, 1.0]) == (pytest.approx(5.0), "falls behind")


def test_p_values_are_the_paired_t_test_and_holm_adjusts_a_family():
    method, baseline = {0: 9.0, 1: 9.4, 2: 8.9, 3: 9.8}, {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.0}
    logs = [np.log(method[s] / baseline[s]) for s in range(4)]
    assert paired_difference(method, baseline).p_value == pytest.approx(scipy_stats.ttest_1samp(logs, 0).pvalue)
    assert paired_difference({0: 9.0}, {0: 10.0}).p_value is None  # one seed: no test
    # Holm by hand: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(2 x 0.03, .), max(1 x 0.04, .) = 0.03, 0.06, 0.06
    assert holm([0.04, 0.01, None, 0.03]) == pytest.approx([0.06, 0.03, None, 0.06], nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_a_difference_that_chance_explains_among_many_comparisons_says_so():
    # one real effect (c4), eight null arms, and 'lucky': its interval excludes zero alone (p ~ 0.02), not after Holm
    seeds = range(8)
    scratch = {s: 30.0 + 0.3 * s for s in seeds}
    shifts = {"c4": [-0.07, -0.06, -0.075, -0.065, -0.07, -0.068, -0.072, -0.066],
              "lucky": [-0.03, 0.005, -0.02, -0.01, -0.025, 0.0, -0.015, -0.005],
              **{f"null{i}": [0.01 * (-1) ** (s + i) * (1 + s % 3) for s in seeds] for i in range(8)}}
    arms = {arm: {s: scratch[s] * float(np.exp(x[s])) for s in seeds} for arm, x in shifts.items()}
    curves = {"owt": {arm: {s: _curve([v[s] * 1.5, v[s]]) for s in seeds}
                      for arm, v in {**arms, "scratch": scratch}.items()}}
    report = build_report(curves, [(arm, "scratch") for arm in arms])
    rows = {d["method"]: d for d in report["domains"]["owt"]["differences"]}
    lucky, c4 = rows["lucky"], rows["c4"]
    assert lucky["p_value"] < 0.05 <= lucky["p_holm"] and lucky["relative_percent"]["high"] < 0
    assert "lucky beats scratch" in lucky["verdict"] and "not significant once the study's comparisons" in lucky["verdict"]
    assert "after Holm over 10 comparisons" in lucky["verdict"]
    assert c4["p_holm"] < 0.05 and "not significant" not in c4["verdict"]
    assert "p (Holm)" in markdown(report)
