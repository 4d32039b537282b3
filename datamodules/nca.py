"""The NCA DataModule: on-the-fly trajectories (or a corpus from `python -m nca generate`).

Batches are numbered (see ``datamodules.streaming``): global batch ``q`` holds sequences
``[q * batch_size, (q + 1) * batch_size)`` of the stream, so tokens do not depend on the worker count
and a resumed run continues where it stopped.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from datamodules.shards import TokenShards, row_to_sample
from datamodules.streaming import BatchSource, NumberedBatches, PositionedLoader, ResumableStreamMixin, ShardRows
from nca.automaton.complexity import Band
from nca.automaton.config import NCAConfig
from nca.automaton.pool import RulePool
from nca.automaton.stream import NCAStream
from nca.automaton.tokenize import PatchTokenizer


class StreamSource(BatchSource):
    def __init__(self, stream: NCAStream, batch_size: int, mask_first: int):
        self.stream, self.batch_size, self.mask_first = stream, batch_size, mask_first

    def batches(self, q: list[int]) -> list[dict[str, torch.Tensor]]:
        b = self.batch_size
        index = torch.cat([torch.arange(i * b, (i + 1) * b) for i in q])
        rows = self.stream.rows(index).cpu()  # generate several batches at once: fewer, larger ops
        return [row_to_sample(chunk, self.mask_first) for chunk in rows.split(b)]


class NCADataModule(ResumableStreamMixin, L.LightningDataModule):
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
        generate_group: int = 512,
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
        if torch.device(device).type != "cpu" and num_workers > 0:
            raise ValueError(
                f"device={device!r} generates on the accelerator in the training process, which DataLoader worker "
                "processes cannot share: set num_workers: 0 (or device: cpu to generate in workers)"
            )
        self.num_workers, self.device, self.corpus = num_workers, device, corpus
        self.generate_group = max(1, generate_group // batch_size)
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
                self._train_source = ShardRows(self.corpus, self.batch_size, self.seed)
            else:
                stream = self._stream("train", self.train_rules)
                self._train_source = StreamSource(stream, self.batch_size, self.tokenizer.mask_first)
        if self._val_source is None:
            self._val_source = StreamSource(self._stream("val", self.val_rules), self.batch_size, self.tokenizer.mask_first)

    def _loader(self, dataset: NumberedBatches, position=None) -> DataLoader:
        return PositionedLoader(dataset, position, num_workers=self.num_workers, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        rank, world = self.rank_and_world()
        ds = NumberedBatches(self._train_source, rank, world, group=self.generate_group)
        return self._loader(ds, position=self.train_position)

    def val_dataloader(self) -> DataLoader:
        rank, world = self.rank_and_world()
        batches = max(1, self.val_sequences // (self.batch_size * world))
        return self._loader(NumberedBatches(self._val_source, rank, world, limit=batches, group=self.generate_group))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
