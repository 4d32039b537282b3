"""k-Dyck sequences, the paper's formal-language baseline for pre-pre-training (docs/paper.md §6).

A row is ``[BOS]`` followed by complete (balanced) Dyck words, concatenated until the row holds
``seq_len + 1`` ids. Within a word, brackets open with probability ``p_open`` (always when the stack is empty,
never at ``max_depth`` or when the row has no room left to close), the bracket type is uniform over ``k``,
and a close always matches the top of the stack; a word ends when its stack empties, so every word has
nesting depth in ``1..max_depth`` and the last word of a row is closed early rather than cut.

Token ids: open bracket i -> i, close bracket i -> k + i, BOS -> 2k (``vocab_size = 2k + 1``). BOS makes the
balanced part even-length for the default odd row length (1024 + 1); if the row length is even, the row
ends with one more BOS whose label is masked (-100).

Randomness is a function of (seed, split, sample index) only, and batches are numbered across ranks and
workers (``nca.datamodules.streaming``): the stream is the same whatever the number of DataLoader workers, ranks
get disjoint batches, and a resumed run continues from the batches already consumed.
"""

from __future__ import annotations

import numpy as np
import torch

from nca.datamodules.base import TokenDataModule
from nca.datamodules.shards import IGNORE_INDEX, row_to_sample
from nca.datamodules.streaming import BatchSource

DOMAINS = {"train": 0, "val": 1, "test": 2}  # separate seed domains: no split repeats another's samples
TRAIN_DOMAIN = DOMAINS["train"]


def dyck_row(rng: np.random.Generator, length: int, k: int = 64, max_depth: int = 16, p_open: float = 0.5) -> np.ndarray:
    """One row of ``length`` ids: BOS, then balanced words (padded with a final BOS if the length is even)."""
    bos = 2 * k
    body = length - 1 - (length - 1) % 2  # balanced words need an even number of ids
    coins = (rng.random(body) < p_open).tolist()
    kinds = rng.integers(0, k, size=body).tolist()
    out = [bos]
    stack: list[int] = []
    for t in range(body):
        depth = len(stack)
        # open when the stack is empty; close at max depth or when only the closes still fit; else a coin.
        if depth == 0 or (depth < max_depth and body - t > depth and coins[t]):
            stack.append(kinds[t])
            out.append(kinds[t])
        else:
            out.append(k + stack.pop())
    out.extend([bos] * (length - len(out)))
    return np.asarray(out, dtype=np.int64)


def split_words(row: np.ndarray | list[int], k: int) -> list[list[int]]:
    """Cut a row's bracket ids into words (maximal balanced runs); BOS ids are skipped. For checks and analysis."""
    words, current, depth = [], [], 0
    for token in map(int, row):
        if token == 2 * k:
            continue
        current.append(token)
        depth += 1 if token < k else -1
        if depth == 0:
            words.append(current)
            current = []
    if current:
        words.append(current)
    return words


class DyckSource(BatchSource):
    """Seeded k-Dyck samples: sample ``i`` of a domain is a pure function of (seed, domain, i)."""

    def __init__(self, seq_len: int, batch_size: int, k: int = 64, max_depth: int = 16, p_open: float = 0.5,
                 seed: int = 0, domain: int = TRAIN_DOMAIN):
        self.seq_len, self.batch_size, self.k, self.max_depth, self.p_open = seq_len, batch_size, k, max_depth, p_open
        self.seed, self.domain = seed, domain

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.domain, index])
        row = dyck_row(rng, self.seq_len + 1, self.k, self.max_depth, self.p_open)
        out = row_to_sample(row)
        if self.seq_len % 2:  # even row length: the final id is padding
            out["labels"][-1] = IGNORE_INDEX
        return out


class DyckDataModule(TokenDataModule):
    """Streams k-Dyck rows in the batch contract; the stream position is saved in checkpoints.

    Args:
        seq_len: tokens per sample (rows hold ``seq_len + 1``).
        batch_size: rows per batch and device.
        num_workers: DataLoader worker processes.
        k: bracket types (paper: 64).
        max_depth: maximum nesting depth (paper: 16).
        p_open: probability of opening a bracket where both moves are allowed (paper: 0.5).
        seed: the stream's seed.
        val_batches, test_batches: sizes of the fixed validation and test sets, in batches (each drawn from a
            seed domain of its own, so no split repeats another's samples).
    """

    def __init__(self, seq_len: int = 1024, batch_size: int = 32, num_workers: int = 2, k: int = 64,
                 max_depth: int = 16, p_open: float = 0.5, seed: int = 0, val_batches: int = 16,
                 test_batches: int = 16):
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        if seq_len < 2 or val_batches < 1 or test_batches < 1:
            raise ValueError(f"data needs seq_len >= 2, val_batches >= 1 and test_batches >= 1, got "
                             f"{seq_len}, {val_batches}, {test_batches}")
        if k < 1 or max_depth < 1 or not 0.0 < p_open < 1.0:
            raise ValueError(f"data needs k >= 1, max_depth >= 1 and 0 < p_open < 1, got {k}, {max_depth}, {p_open}")
        self.seq_len, self.k, self.max_depth, self.p_open, self.seed = seq_len, k, max_depth, p_open, seed
        self.eval_sizes = {"val": val_batches, "test": test_batches}
        self.vocab_size: int = 2 * k + 1
        self.bos_id: int = 2 * k

    def source(self, split: str) -> DyckSource:
        return DyckSource(self.seq_len, self.batch_size, self.k, self.max_depth, self.p_open, self.seed, DOMAINS[split])

    def eval_batches(self, split: str, world_size: int) -> int:
        return self.eval_sizes[split]
