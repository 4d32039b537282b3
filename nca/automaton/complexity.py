"""gzip complexity of rules (docs/paper.md §3) and band filtering by batched rejection sampling.

ratio = len(gzip -9 of the int32 patch ids, delimiters removed) / len(those bytes), measured on a
10-frame rollout after burn-in. A rule is kept when lo < ratio < hi. Uniform random ids give
~0.67, a frozen frame ~0.12, a constant grid ~0.02.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import numpy as np
import torch

from nca.automaton.config import NCAConfig
from nca.automaton.rng import Domain, hash_keys
from nca.automaton.rules import sample_rules
from nca.automaton.simulate import Simulator
from nca.automaton.tokenize import PatchTokenizer

COMPLEXITY_FRAMES = 10
PAPER_BAND = "0.5-1.0"  # the reference launch's band (docs/paper.md §3)
PAPER_BANDS = ["20-30", "30-40", "40-50", "50+"]  # the bands the paper compares


def gzip_ratio(data: bytes | np.ndarray) -> float:
    """Compressed/raw length of bytes (or of an int array written as little-endian int32)."""
    if not isinstance(data, (bytes, bytearray)):
        data = np.ascontiguousarray(data, dtype="<i4").tobytes()
    if not data:
        raise ValueError("cannot measure the gzip ratio of empty data")
    return len(gzip.compress(data, compresslevel=9, mtime=0)) / len(data)


def gzip_ratios(patch_ids: torch.Tensor) -> np.ndarray:
    """One ratio per row of [R, ...] patch ids."""
    arr = patch_ids.reshape(len(patch_ids), -1).to("cpu", torch.int32).numpy().astype("<i4", copy=False)
    return np.array([gzip_ratio(row.tobytes()) for row in arr])


@dataclass(frozen=True)
class Band:
    """Open interval (lo, hi) of gzip ratios; parse from [0.5, 1.0], "0.5-1.0", "50+" or "30-40"."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.lo < self.hi):
            raise ValueError(f"impossible band ({self.lo}, {self.hi}): need 0 <= lo < hi (ratios, e.g. [0.5, 1.0])")

    @classmethod
    def parse(cls, band) -> "Band | None":
        if band is None or isinstance(band, Band):
            return band
        if isinstance(band, str):
            text = band.replace("%", "").replace(" ", "")
            try:
                if text.endswith("+"):
                    lo_f, hi_f = float(text[:-1]), None
                else:
                    lo_s, _, hi_s = text.partition("-")
                    lo_f, hi_f = float(lo_s), float(hi_s)
            except ValueError:
                raise ValueError(f"cannot read band {band!r}: write it as '0.5-1.0', '30-40' (percent) or '50+'") from None
            if lo_f > 1 or (hi_f or 0) > 1:  # given in percent
                lo_f, hi_f = lo_f / 100, None if hi_f is None else hi_f / 100
            return cls(lo_f, 1.0 if hi_f is None else hi_f)
        lo, hi = band
        return cls(float(lo), float("inf") if hi is None else float(hi))

    def contains(self, ratios: np.ndarray) -> np.ndarray:
        return (ratios > self.lo) & (ratios < self.hi)

    def __str__(self) -> str:
        return f"({self.lo:g}, {self.hi:g})"


class BandUnreachable(RuntimeError):
    pass


def rule_ratios(rule_ids: torch.Tensor, cfg: NCAConfig, seed: int) -> np.ndarray:
    """gzip ratio of each rule on its own probe rollout (a pure function of seed and rule id)."""
    rules = sample_rules(rule_ids, cfg, seed)
    frames = Simulator(rules, cfg).rollout(hash_keys(seed, Domain.COMPLEXITY_PROBE, rules.ids), COMPLEXITY_FRAMES)
    return gzip_ratios(PatchTokenizer.from_config(cfg).patch_ids(frames))


def check_reachable(band: Band, accepted: int, tried: int, ratios: np.ndarray) -> None:
    """Raise a clear error once enough candidates were tried to call a band unreachable."""
    if accepted == 0 and tried >= 4096:
        q = np.quantile(ratios, [0.0, 0.5, 1.0]) if len(ratios) else [float("nan")] * 3
        raise BandUnreachable(
            f"no rule of {tried} candidates has a gzip ratio in {band} (ratios seen: min {q[0]:.3f}, "
            f"median {q[1]:.3f}, max {q[2]:.3f}). Widen the band, or change temperature / n_states; "
            "`python -m nca complexity` shows the distribution."
        )
