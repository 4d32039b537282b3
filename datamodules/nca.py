"""The NCA DataModule: on-the-fly trajectories (or a corpus from `python -m nca generate`).

Batches are numbered. Global batch ``q = b * world_size + rank`` holds sequences
``[q * batch_size, (q + 1) * batch_size)`` of the stream; DataLoader worker ``w`` of ``W`` makes
batches ``b = start + w, start + w + W, ...`` so the loader's round-robin returns them in order.
The tokens therefore depend only on (seed, batch_size, world size), never on the worker count,
and a resumed run starts at the saved batch instead of replaying the stream.
"""

from __future__ import annotations

import math
from typing import Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules.shards import TokenShards, row_to_sample
from nca.complexity import Band
from nca.config import NCAConfig
from nca.pool import RulePool
from nca.stream import NCAStream
from nca.tokenize import PatchTokenizer


class BatchSource:
    """Something that can make global batch ``q`` (a dict of [B, T] tensors) on demand."""

    batch_size: int

    def batches(self, q: list[int]) -> list[dict[str, torch.Tensor]]:
        raise NotImplementedError


class StreamSource(BatchSource):
    def __init__(self, stream: NCAStream, batch_size: int, mask_first: int):
        self.stream, self.batch_size, self.mask_first = stream, batch_size, mask_first

    def batches(self, q: list[int]) -> list[dict[str, torch.Tensor]]:
        b = self.batch_size
        index = torch.cat([torch.arange(i * b, (i + 1) * b) for i in q])
        rows = self.stream.rows(index).cpu()  # generate several batches at once: fewer, larger ops
        return [row_to_sample(chunk, self.mask_first) for chunk in rows.split(b)]


class ShardSource(BatchSource):
    """Rows of a written corpus, in a fresh seeded permutation every pass over it."""

    def __init__(self, shards: TokenShards, batch_size: int, seed: int):
        self.shards, self.batch_size, self.seed = shards, batch_size, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def _row(self, i: int) -> int:
        n = len(self.shards)
        epoch, pos = divmod(i, n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        return int(self._perm[1][pos])

    def batches(self, q: list[int]) -> list[dict[str, torch.Tensor]]:
        b, m = self.batch_size, self.shards.manifest.mask_first
        out = []
        for i in q:
            rows = np.stack([self.shards.row(self._row(j)) for j in range(i * b, (i + 1) * b)])
            out.append(row_to_sample(rows, m))
        return out


class NumberedBatches(IterableDataset):
    """Yields batches ``start, start + 1, ...`` of one rank, split over DataLoader workers."""

    def __init__(self, source: BatchSource, rank: int, world_size: int, start: int = 0,
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
        torch.set_num_threads(1) if info else None  # one worker per core beats intra-op threads here
        end = math.inf if self.limit is None else self.start + self.limit
        b = self.start + worker
        while b < end:
            mine = [b + k * workers for k in range(self.group) if b + k * workers < end]
            global_ids = [i * self.world_size + self.rank for i in mine]
            yield from self.source.batches(global_ids)
            b = mine[-1] + workers


class _PositionedLoader(DataLoader):
    """Re-reads the data position each time iteration starts (a new epoch or a resumed run)."""

    def __init__(self, dataset: NumberedBatches, position=None, **kwargs):
        super().__init__(dataset, **kwargs)
        self._position = position

    def __iter__(self):
        if self._position is not None:
            self.dataset.start = self._position()
        return super().__iter__()


class NCADataModule(L.LightningDataModule):
    """NCA token batches ``{"input_ids", "labels"}``: labels already shifted, first frame masked (-100).

    ``train_rules=None`` draws a fresh band-filtered rule for every sequence; an int draws that
    many rules once (the paper: 16,000) and samples fresh trajectories of them each epoch.
    Validation always uses held-out rules (odd rule ids; training uses even ones).
    """

    def __init__(
        self,
        seq_len: int = 1024,
        batch_size: int = 32,
        band: list[float] | str | None = (0.5, 1.0),
        n_states: int = 10,
        grid: int = 12,
        patch: int = 2,
        hidden: tuple[int, int] = (4, 16),
        temperature: float = 1e-4,
        identity_bias: float = 0.0,
        burn_in: int = 10,
        train_rules: int | None = None,
        val_rules: int | None = 2000,
        val_sequences: int = 256,
        seed: int = 0,
        num_workers: int = 0,
        corpus: str | None = None,
        generate_group: int = 256,
        device: str = "cpu",
    ):
        super().__init__()
        self.cfg = NCAConfig(n_states=n_states, grid=grid, patch=patch, hidden=tuple(hidden),
                             temperature=temperature, identity_bias=identity_bias, burn_in=burn_in)
        self.band = Band.parse(band)
        self.tokenizer = PatchTokenizer.from_config(self.cfg)
        if seq_len < self.tokenizer.frame_len:
            raise ValueError(f"seq_len ({seq_len}) must hold at least one frame ({self.tokenizer.frame_len} tokens)")
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.train_rules, self.val_rules, self.val_sequences = train_rules, val_rules, val_sequences
        self.num_workers, self.device, self.corpus = num_workers, device, corpus
        self.generate_group = max(1, generate_group // batch_size)
        self._start_batch = 0
        self._train_source: BatchSource | None = None
        self._val_source: BatchSource | None = None
        if corpus is not None:  # fail before any long work if the corpus does not fit this config
            shards = TokenShards(corpus)
            m = shards.manifest
            if m.row_len != seq_len + 1 or m.vocab_size != self.vocab_size:
                raise ValueError(
                    f"corpus {corpus} has rows of {m.row_len} ids over {m.vocab_size} tokens, but this config needs "
                    f"{seq_len + 1} over {self.vocab_size}: regenerate it with the same seq_len/n_states/patch"
                )

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def _stream(self, split: str, pool_size: int | None) -> NCAStream:
        pool = None
        if pool_size:
            pool = RulePool(pool_size, self.cfg, self.band, seed=self.seed, split=split, device=self.device)
            rank_zero_info(f"NCA {split} rule pool: {pool.stats()}")
        return NCAStream(self.cfg, self.seq_len, self.band, seed=self.seed, split=split, pool=pool, device=self.device)

    def setup(self, stage: str | None = None) -> None:
        if self._train_source is None and stage in (None, "fit"):
            if self.corpus is not None:
                self._train_source = ShardSource(TokenShards(self.corpus), self.batch_size, self.seed)
            else:
                stream = self._stream("train", self.train_rules)
                self._train_source = StreamSource(stream, self.batch_size, self.tokenizer.mask_first)
        if self._val_source is None:
            self._val_source = StreamSource(self._stream("val", self.val_rules), self.batch_size, self.tokenizer.mask_first)

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, dataset: NumberedBatches, position=None) -> DataLoader:
        return _PositionedLoader(dataset, position, batch_size=None, num_workers=self.num_workers,
                                 persistent_workers=False, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        ds = NumberedBatches(self._train_source, rank, world, start=self._start_batch, group=self.generate_group)
        return self._loader(ds, position=self._train_position)

    def _train_position(self) -> int:
        """Batches this rank has consumed: the restored checkpoint value or the loop's own count."""
        done = self.trainer.fit_loop.epoch_loop.batch_progress.total.processed if self.trainer else 0
        return max(self._start_batch, done)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        batches = max(1, self.val_sequences // (self.batch_size * world))
        return self._loader(NumberedBatches(self._val_source, rank, world, limit=batches, group=self.generate_group))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # -- resuming: the data position travels in the checkpoint -----------------------------------
    def state_dict(self) -> dict:
        return {"train_batches": self._train_position()}

    def load_state_dict(self, state: dict) -> None:
        self._start_batch = int(state.get("train_batches", 0))
