"""pass@k against brute-force enumeration of every k-subset of the n samples."""

from __future__ import annotations

import itertools

import pytest

from nca.evaluation.passk import mean_pass_at_k, pass_at_k, powers_of_two


def brute_force(n: int, c: int, k: int) -> float:
    """The share of k-subsets of n samples (c of them correct) that hold at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_equals_enumeration_over_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_1_is_the_fraction_correct_and_extremes():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 6, 5) == 1.0  # fewer than k wrong samples: every k-subset holds a correct one


def test_bad_counts_are_refused():
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_ks_and_mean_over_problems():
    assert powers_of_two(1) == [1]
    assert powers_of_two(8) == [1, 2, 4, 8]
    assert powers_of_two(6) == [1, 2, 4, 6]
    means = mean_pass_at_k([(4, 1), (4, 0), (4, 4)], [1, 2, 8])
    assert set(means) == {1, 2}  # k = 8 cannot be estimated from 4 samples
    assert means[1] == pytest.approx((0.25 + 0 + 1) / 3)
    assert means[2] == pytest.approx((brute_force(4, 1, 2) + 0 + 1) / 3)
    assert mean_pass_at_k([], [1]) == {}
