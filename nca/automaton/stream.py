"""The deterministic NCA sequence stream: sequence index -> one training row of seq_len + 1 ids.

Each row is a pure function of (seed, split, index), so any worker or rank can produce any slice,
streams are disjoint when their index sets are, and a resumed run continues from a saved index.
Two modes: a fresh band-filtered rule per sequence (``pool=None``), or trajectories of the rules
of a fixed ``RulePool`` (epoch e reshuffles the pool and gives every rule a fresh initial state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nca.automaton.complexity import PAPER_BAND, Band, BandUnreachable, check_reachable, rule_ratios
from nca.automaton.config import NCAConfig
from nca.automaton.pool import RulePool, split_code, to_split
from nca.automaton.rng import Domain, hash_keys
from nca.automaton.rules import sample_rules
from nca.automaton.simulate import Simulator
from nca.automaton.tokenize import PatchTokenizer



@dataclass
class Batch:
    rows: torch.Tensor  # [B, seq_len + 1] int64
    rule_ids: torch.Tensor  # [B]
    ratios: np.ndarray  # [B] gzip ratio of each row's rule (nan when unfiltered)
    candidates: int  # rules drawn to find these (the filter's work)


class NCAStream:
    def __init__(
        self,
        cfg: NCAConfig,
        seq_len: int = 1024,
        band: Band | str | list | None = PAPER_BAND,
        seed: int = 0,
        split: str = "train",
        pool: RulePool | None = None,
        device: str | torch.device = "cpu",
        max_attempts: int = 100_000,
    ):
        self.cfg, self.seq_len, self.seed, self.split = cfg, int(seq_len), int(seed), split
        self.band = Band.parse(band)
        self.code = split_code(split)
        self.pool = pool
        if pool is not None and pool.split != split:
            raise ValueError(f"a {pool.split!r} rule pool cannot feed the {split!r} stream")
        self.device = torch.device(device)
        self.max_attempts = max_attempts
        self.tokenizer = PatchTokenizer.from_config(cfg)
        self.frames = self.tokenizer.frames_for(self.seq_len)
        self._perm: tuple[int, torch.Tensor] | None = None  # the permutation of the last epoch used

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    # -- rules ---------------------------------------------------------------------------------
    def _fresh_rules(self, index: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, int]:
        """The first accepted candidate j = 0, 1, ... of each sequence (independent of batching)."""
        n = len(index)
        if self.band is None:
            ids = to_split(hash_keys(self.seed, Domain.FRESH_RULE, self.code, index, 0), self.split)
            return ids, np.full(n, np.nan), n
        rule = torch.zeros(n, dtype=torch.int64, device=index.device)
        ratio = np.full(n, np.nan)
        pending = torch.arange(n, device=index.device)
        start, tried, seen = 0, 0, []
        while len(pending):
            if start >= self.max_attempts:
                raise BandUnreachable(f"{len(pending)} sequences found no rule in band {self.band} after {start} attempts each")
            width = 1 if len(pending) >= 32 else 4  # a few attempts at once only for the last stragglers
            j = torch.arange(start, start + width, device=index.device)
            cand = to_split(hash_keys(self.seed, Domain.FRESH_RULE, self.code, index[pending][:, None], j[None, :]), self.split)
            r = rule_ratios(cand.reshape(-1), self.cfg, self.seed).reshape(len(pending), width)
            ok = self.band.contains(r)
            tried += r.size
            seen.append(r.reshape(-1))
            hit = ok.any(1)
            if hit.any():
                first = ok.argmax(1)
                rows = np.nonzero(hit)[0]
                rows_t = torch.from_numpy(rows).to(index.device)
                rule[pending[rows_t]] = cand[rows_t, torch.from_numpy(first[rows]).to(index.device)]
                ratio[pending[rows_t].cpu().numpy()] = r[rows, first[rows]]
            pending = pending[torch.from_numpy(~hit).to(index.device)]
            start += width
            check_reachable(self.band, n - len(pending), tried, np.concatenate(seen))
        return rule, ratio, tried

    def _pool_rules(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(self.pool)
        epoch, pos = index // size, index % size
        slot = torch.empty_like(index)
        for e in epoch.unique().tolist():
            if self._perm is None or self._perm[0] != e:
                g = torch.Generator().manual_seed(int(hash_keys(self.seed, Domain.POOL_PERMUTATION, self.code, e)) & (2**63 - 1))
                self._perm = (e, torch.randperm(size, generator=g))
            sel = epoch == e
            slot[sel] = self._perm[1].to(index.device)[pos[sel]]
        return self.pool.ids.to(index.device)[slot], slot

    # -- rows ----------------------------------------------------------------------------------
    def batch(self, index) -> Batch:
        index = torch.as_tensor(index, dtype=torch.int64, device=self.device).reshape(-1)
        if (index < 0).any():
            raise ValueError("sequence indices must be >= 0")
        if self.pool is None:
            rule_ids, ratios, tried = self._fresh_rules(index)
            traj = hash_keys(self.seed, Domain.FRESH_TRAJECTORY, self.code, index)
        else:
            rule_ids, slot = self._pool_rules(index)
            ratios, tried = self.pool.ratios[slot.cpu().numpy()], 0
            traj = hash_keys(self.seed, Domain.POOL_TRAJECTORY, rule_ids, index // len(self.pool))
        frames = Simulator(sample_rules(rule_ids, self.cfg, self.seed), self.cfg).rollout(traj, self.frames)
        return Batch(self.tokenizer.rows(frames, self.seq_len), rule_ids, ratios, tried)

    def rows(self, index) -> torch.Tensor:
        return self.batch(index).rows
