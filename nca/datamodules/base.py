"""The contract every DataModule of the project keeps, in code.

- batches ``{"input_ids": LongTensor[B, T], "labels": LongTensor[B, T]}``: labels **already shifted**
  (``labels[:, t]`` is the target of position ``t``) and ``IGNORE_INDEX`` (-100) where no loss is taken;
- ``vocab_size``, which the CLI links to the model, so the embedding can never be smaller than the ids;
- train, validation and test loaders; the training stream is numbered (``nca.datamodules.streaming``), so its
  position travels in checkpoints and a resumed run continues where it stopped.

A subclass says where batches come from (``source(split)``, a ``BatchSource``) and how many evaluation
batches a split has (``eval_batches``), or replaces ``eval_loader``; the loader body is written once, here.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from nca.datamodules.streaming import BatchSource, NumberedBatches, PositionedLoader

Split = Literal["train", "val", "test"]


class TokenDataModule(L.LightningDataModule):
    """Base of the project's DataModules (see the module docstring for the contract)."""

    vocab_size: int
    batch_size: int
    num_workers: int = 0
    generate_group: int = 1  # batches one worker makes together (generators run faster on larger arrays)
    _start_batch: int = 0

    def __init__(self, batch_size: int, num_workers: int = 0):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"data batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data num_workers must be an integer >= 0, got {num_workers!r}")
        self.batch_size, self.num_workers = batch_size, num_workers

    # -- what a subclass provides
    def source(self, split: Split) -> BatchSource:
        raise NotImplementedError

    def eval_batches(self, split: Split, world_size: int) -> int:
        """Batches of the validation / test split per rank."""
        raise NotImplementedError

    # -- the loaders
    def loader(self, source: BatchSource, *, limit: int | None = None, position=None) -> DataLoader:
        rank, world = self.rank_and_world()
        workers = self.num_workers if limit is None else min(self.num_workers, max(1, limit))
        batches = NumberedBatches(source, rank, world, limit=limit, group=self.generate_group)
        return PositionedLoader(batches, position, num_workers=workers, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.source("train"), position=self.train_position)

    def eval_loader(self, split: Split) -> DataLoader:
        """A fixed held-out set: ``eval_batches`` numbered batches of the split's source per rank."""
        return self.loader(self.source(split), limit=self.eval_batches(split, self.rank_and_world()[1]))

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")

    # -- the resumable position
    def train_position(self) -> int:
        """Training batches this rank has consumed: Lightning's loop counter (restored with the loop on
        resume), or the value loaded from a checkpoint if that is larger."""
        trainer = getattr(self, "trainer", None)
        done = trainer.fit_loop.epoch_loop.batch_progress.total.processed if trainer is not None else 0
        return max(self._start_batch, done)

    def rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"train_batches": self.train_position(), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(
                f"the checkpoint's data stream used batch_size {state['batch_size']}, this run {self.batch_size}: "
                "resuming needs the same batch size (or start a new run with init_from instead)"
            )
        self._start_batch = int(state.get("train_batches", 0))
