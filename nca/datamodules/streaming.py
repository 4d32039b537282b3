"""Numbered batch streams: what makes every training stream (NCA, Dyck, text shards) reproducible and resumable.

Global batch ``q = b * world_size + rank`` is a pure function of ``q`` (a ``BatchSource``). DataLoader
worker ``w`` of ``W`` makes a rank's batches ``b = start + w, start + w + W, ...``; the loader's
round-robin over workers then returns them in order. So the tokens depend only on the seed, the batch
size and the world size (never on the worker count), ranks are disjoint, and a resumed run restarts at
the batch it had reached instead of replaying the stream.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from nca.datamodules.shards import TokenShards, row_to_sample, verify_corpus


class BatchSource:
    """Makes global batches on demand: ``batches([q1, q2, ...])`` -> one batch dict per number.

    A source either implements ``batches`` itself, or ``sample(i)`` (global sample ``i``) and inherits the
    batch of samples ``[q * batch_size, (q + 1) * batch_size)``."""

    batch_size: int

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def batches(self, numbers: list[int]) -> list[dict[str, torch.Tensor]]:
        b, out = self.batch_size, []
        for q in numbers:
            samples = [self.sample(i) for i in range(q * b, (q + 1) * b)]
            out.append({key: torch.stack([s[key] for s in samples]) for key in samples[0]})
        return out


class PassOrder:
    """Position ``i`` of an endless stream over ``rows`` items -> item index: pass ``e`` is a permutation
    seeded by (seed, e), so every item appears once per pass. Caches the current pass's permutation, which
    is not pickled (workers rebuild it)."""

    def __init__(self, rows: int, seed: int = 0):
        self.rows, self.seed = rows, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_perm": None}

    def __call__(self, i: int) -> int:
        epoch, pos = divmod(i, self.rows)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.rows))
        return int(self._perm[1][pos])


class ShardRows(BatchSource):
    """Rows of a shard corpus as an endless stream: pass ``e`` over the corpus is a permutation seeded by
    (seed, e), so every row appears once per pass. The memmaps open lazily in each process, so handing
    this to DataLoader workers copies no corpus data."""

    def __init__(self, directory, batch_size: int, seed: int = 0):
        self.directory, self.batch_size, self.seed = directory, batch_size, seed
        manifest = verify_corpus(directory)  # fail now, not in a worker, if the corpus is missing or changed
        self.rows, self.mask_first = manifest.rows, manifest.mask_first
        if self.rows == 0:
            raise ValueError(f"the corpus at {directory} holds no rows")
        self._shards: TokenShards | None = None
        self._row = PassOrder(self.rows, seed)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_shards": None}

    def batches(self, numbers: list[int]) -> list[dict[str, torch.Tensor]]:
        if self._shards is None:
            self._shards = TokenShards(self.directory)
        b = self.batch_size
        return [row_to_sample(np.stack([self._shards.row(self._row(j)) for j in range(q * b, (q + 1) * b)]),
                              self.mask_first) for q in numbers]


class NumberedBatches(IterableDataset):
    """A rank's batches ``start, start + 1, ...`` (``limit`` of them, or endless), split over workers.

    ``group`` batches of one worker are made together: generators run faster on larger arrays.
    """

    def __init__(self, source: BatchSource, rank: int = 0, world_size: int = 1, start: int = 0,
                 limit: int | None = None, group: int = 1):
        self.source, self.rank, self.world_size = source, rank, world_size
        self.start, self.limit, self.group = start, limit, max(1, group)

    def __len__(self) -> int:
        if self.limit is None:
            raise TypeError("an endless stream has no length")
        return self.limit

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if info:
            torch.set_num_threads(1)  # one process per core beats intra-op threads for these small ops
        end = math.inf if self.limit is None else self.start + self.limit
        b = self.start + worker
        while b < end:
            mine = [b + k * workers for k in range(self.group) if b + k * workers < end]
            yield from self.source.batches([i * self.world_size + self.rank for i in mine])
            b = mine[-1] + workers


class PositionedLoader(DataLoader):
    """Moves its stream to ``position()`` whenever iteration starts (a new epoch or a resumed run)."""

    def __init__(self, dataset: NumberedBatches, position: Callable[[], int] | None = None, **kwargs: Any):
        super().__init__(dataset, batch_size=None, **kwargs)
        self._position = position

    def __iter__(self):
        if self._position is not None:
            self.dataset.start = self._position()
        return super().__iter__()
