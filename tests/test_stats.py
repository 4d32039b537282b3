"""Seed statistics (nca.analysis.stats) and the report's numbers (nca.analysis.report) against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from nca.analysis.report import build_report, direction, markdown, paper_arm
from nca.analysis.stats import mean_interval, paired_difference, verdict


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
    rel = [-100 / 11, -50 / 11.5, -100 / 13]
    assert diff.relative_percent.mean == pytest.approx(sum(rel) / 3)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_verdicts_say_plainly_when_the_interval_crosses_zero():
    better = paired_difference({0: 9.0, 1: 9.1, 2: 8.9}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert verdict("nca", "scratch", "code", better).startswith("nca beats scratch on code: difference -10.00% [")
    assert verdict("nca", "scratch", "code", better).endswith("3 seeds")
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
    assert owt["final_ppl"]["scratch"]["mean"] == pytest.approx(10.5)
    assert owt["final_ppl"]["scratch"]["paper"] == 14.66 and owt["final_ppl"]["nca-50plus"]["paper"] == 13.82
    diff = owt["differences"][0]
    assert diff["absolute"]["mean"] == pytest.approx(-1.0)
    assert diff["paper_relative_percent"] == pytest.approx(100 * (13.82 - 14.66) / 14.66)
    # seed 0: scratch reaches 10 at step 40; nca reaches 10 at step 30 -> 4/3. seed 1: 11 at 40 vs 30 -> 4/3.
    up = owt["speedup"]["nca-50plus"]
    assert up["per_seed"] == {"0": pytest.approx(4 / 3), "1": pytest.approx(4 / 3)}
    assert up["reached"] == 2 and up["paper"] == 1.49
    assert report["verdicts"] == [diff["verdict"]]
    text = markdown(report)
    for heading in ("## Verdicts", "### Final validation perplexity", "### Paired differences", "### Convergence speed-up"):
        assert heading in text
    assert "nan" not in text.lower()


def test_speedup_never_reached_and_paper_directions():
    curves = {"code": {"scratch": {0: _curve([5, 3, 2])}, "dyck": {0: _curve([6, 5, 4])}}}
    up = build_report(curves, [])["domains"]["code"]["speedup"]["dyck"]
    assert up["per_seed"] == {"0": None} and up["reached"] == 0 and up["interval"] is None
    assert paper_arm("nca-30-40") == "nca" and paper_arm("nca-50plus-reinit_attention") is None
    agree = mean_interval([-2.0, -1.5, -1.8])
    assert direction(agree, -5.7) == "agrees" and direction(agree, 2.0) == "opposite"
    assert direction(mean_interval([-1.0, 1.0]), -5.7).startswith("inconclusive")
    assert build_report(curves, [])["domains"]["code"]["final_ppl"]["dyck"]["low"] is None
