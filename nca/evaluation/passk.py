"""The unbiased pass@k estimator (Chen et al., 2021), docs/paper.md §7.

With ``n`` samples of a problem of which ``c`` are correct, pass@k = 1 - C(n-c, k) / C(n, k): the chance that
at least one of ``k`` samples drawn without replacement from the ``n`` is correct. Averaged over problems.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k), as the numerically stable product 1 - prod_{i=n-c+1}^{n} (1 - k/i)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def powers_of_two(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to ``n`` (and ``n`` itself, the largest k that n samples can estimate)."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return ks


def mean_pass_at_k(counts: Iterable[tuple[int, int]], ks: Iterable[int]) -> dict[int, float]:
    """Mean over problems of pass@k for each k, given (samples, correct) per problem; a k above a problem's
    sample count cannot be estimated and is left out."""
    counts = list(counts)
    if not counts:
        return {}
    smallest = min(n for n, _ in counts)
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks if 1 <= k <= smallest}
