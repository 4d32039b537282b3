"""A fixed pool of accepted rules (the paper's 16,000 train / 2,000 validation rules).

Candidate c of a split has rule id ``modulus * c + residue`` (``SPLITS``): train ids are even, validation
ids 1 mod 4 and test ids 3 mod 4, so the pools are disjoint by construction. Candidates are scanned in order and filtered in
batches; acceptance is a pure function of the id, so the pool does not depend on the batch size.
"""

from __future__ import annotations

import numpy as np
import torch

from nca.automaton.complexity import Band, BandUnreachable, check_reachable, rule_ratios
from nca.automaton.config import NCAConfig

# Rule ids of a split as (modulus, residue): train ids are even, validation ids 1 mod 4, test ids 3 mod 4,
# so the three splits never share a rule, by construction.
SPLITS = {"train": (2, 0), "val": (4, 1), "test": (4, 3)}


def split_code(split: str) -> int:
    """The split's residue; it also keys the split's random streams."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return SPLITS[split][1]


def to_split(values: torch.Tensor, split: str) -> torch.Tensor:
    """Map arbitrary int64 values (hashes) onto rule ids of ``split``."""
    modulus, residue = SPLITS[split]
    return (values & ~(modulus - 1)) | residue


def candidate_ids(start: int, count: int, split: str, device: str | torch.device = "cpu") -> torch.Tensor:
    """Candidates ``start .. start + count - 1`` of a split's fixed scan order."""
    modulus, residue = SPLITS[split]
    return torch.arange(start, start + count, dtype=torch.int64, device=device) * modulus + residue


class RulePool:
    def __init__(
        self,
        size: int,
        cfg: NCAConfig,
        band: Band | None,
        seed: int = 0,
        split: str = "train",
        batch: int = 1024,
        max_candidates: int | None = None,
        device: str | torch.device = "cpu",
    ):
        if size < 1:
            raise ValueError(f"a rule pool needs size >= 1, got {size}")
        self.cfg, self.band, self.seed, self.split = cfg, Band.parse(band), seed, split
        split_code(split)  # validate before any work
        max_candidates = max_candidates or max(200 * size, 100_000)
        ids, kept_ratios, seen = [], [], []
        tried = accepted = 0
        while accepted < size:
            if tried >= max_candidates:
                raise BandUnreachable(
                    f"only {accepted} of {size} rules in band {self.band} after {tried} candidates "
                    f"(acceptance {accepted / tried:.2e}); raise max_candidates or widen the band"
                )
            cand = candidate_ids(tried, batch, split, device)
            if self.band is None:
                ratios = np.full(batch, np.nan)
                keep = np.ones(batch, dtype=bool)
            else:
                ratios = rule_ratios(cand, cfg, seed)
                keep = self.band.contains(ratios)
                seen.append(ratios)
            ids.append(cand.cpu()[torch.from_numpy(keep)])
            kept_ratios.append(ratios[keep])
            tried += batch
            accepted += int(keep.sum())
            if self.band is not None:
                check_reachable(self.band, accepted, tried, np.concatenate(seen))
        self.ids = torch.cat(ids)[:size]
        self.ratios = np.concatenate(kept_ratios)[:size]
        self.candidates_tried = tried
        self.acceptance = accepted / tried

    def __len__(self) -> int:
        return len(self.ids)

    def stats(self) -> dict:
        out = {"rules": len(self), "candidates_tried": self.candidates_tried, "acceptance": self.acceptance}
        if self.band is not None:
            q = np.quantile(self.ratios, [0.05, 0.5, 0.95])
            out.update(band=[self.band.lo, self.band.hi], ratio_q05=q[0], ratio_median=q[1], ratio_q95=q[2])
        return out
