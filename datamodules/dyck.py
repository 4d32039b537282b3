"""k-Dyck sequences, the paper's formal-language baseline for pre-pre-training (spec section 6).

A row is ``[BOS]`` followed by complete (balanced) Dyck words, concatenated until the row holds
``seq_len + 1`` ids. Within a word, brackets open with probability ``p_open`` (always when the stack is empty,
never at ``max_depth`` or when the row has no room left to close), the bracket type is uniform over ``k``,
and a close always matches the top of the stack; a word ends when its stack empties, so every word has
nesting depth in ``1..max_depth`` and the last word of a row is closed early rather than cut.

Token ids: open bracket i -> i, close bracket i -> k + i, BOS -> 2k (``vocab_size = 2k + 1``). BOS makes the
balanced part even-length for the default odd row length (1024 + 1); if the row length is even, the row
ends with one more BOS whose label is masked (-100).

Randomness is a function of (seed, split, rank, sample index) only: the sample at index i of a rank's stream
is the same whatever the number of DataLoader workers, workers produce disjoint whole batches, and a resumed
run continues the stream from the number of batches already consumed. The DataModule counts those in its
``on_before_batch_transfer`` hook and saves the count in its ``state_dict`` (Lightning stores it in every
checkpoint); a LightningModule that overrides the same hook would be bypassed (Lightning warns).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules.shards import IGNORE_INDEX, row_to_sample

TRAIN_DOMAIN, VAL_DOMAIN = 0, 1  # separate seed domains: validation never repeats training samples


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


class DyckStream(IterableDataset):
    """Seeded k-Dyck samples of one rank; worker w yields whole batches w, w + W, w + 2W, ... after ``start_batch``.

    The DataLoader hands out batches round-robin over workers, so the batches arrive in stream order.
    ``num_batches=None`` streams forever (training); an int makes a fixed, repeatable set (validation).
    """

    def __init__(self, seq_len: int, batch_size: int, k: int = 64, max_depth: int = 16, p_open: float = 0.5,
                 seed: int = 0, domain: int = TRAIN_DOMAIN, rank: int = 0, start_batch: int = 0,
                 num_batches: int | None = None):
        self.seq_len, self.batch_size, self.k, self.max_depth, self.p_open = seq_len, batch_size, k, max_depth, p_open
        self.seed, self.domain, self.rank = seed, domain, rank
        self.start_batch, self.num_batches = start_batch, num_batches

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.domain, self.rank, index])
        row = dyck_row(rng, self.seq_len + 1, self.k, self.max_depth, self.p_open)
        out = row_to_sample(row)
        if self.seq_len % 2:  # even row length: the final id is padding
            out["labels"][-1] = IGNORE_INDEX
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batch = self.start_batch + worker
        while self.num_batches is None or batch < self.start_batch + self.num_batches:
            for index in range(batch * self.batch_size, (batch + 1) * self.batch_size):
                yield self.sample(index)
            batch += workers


class _ResumingLoader(DataLoader):
    """A DataLoader that moves its stream to the current position each time iteration starts (e.g. new epoch)."""

    def __init__(self, *args: Any, position: Callable[[], int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._position = position

    def __iter__(self):
        self.dataset.start_batch = self._position()
        return super().__iter__()


class DyckDataModule(L.LightningDataModule):
    """Streams k-Dyck rows in the batch contract; ``state_dict`` keeps the stream position for resumption.

    Args:
        seq_len: tokens per sample (rows hold ``seq_len + 1``).
        k: bracket types (paper: 64). max_depth: maximum nesting depth (paper: 16). p_open: paper 0.5.
        val_batches: size of the fixed validation set, in batches (drawn from a separate seed domain).
    """

    def __init__(self, seq_len: int = 1024, batch_size: int = 32, num_workers: int = 2, k: int = 64,
                 max_depth: int = 16, p_open: float = 0.5, seed: int = 0, val_batches: int = 16):
        super().__init__()
        self.save_hyperparameters()
        if seq_len < 2 or batch_size < 1 or num_workers < 0 or val_batches < 0:
            raise ValueError("need seq_len >= 2, batch_size >= 1, num_workers >= 0 and val_batches >= 0")
        if k < 1 or max_depth < 1 or not 0.0 < p_open < 1.0:
            raise ValueError(f"need k >= 1, max_depth >= 1 and 0 < p_open < 1, got {k}, {max_depth}, {p_open}")
        self.seq_len, self.batch_size, self.num_workers = seq_len, batch_size, num_workers
        self.k, self.max_depth, self.p_open, self.seed, self.val_batches = k, max_depth, p_open, seed, val_batches
        self.vocab_size: int = 2 * k + 1
        self.bos_id: int = 2 * k
        self.batches_seen = 0  # training batches this rank consumed (restored from checkpoints)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count consumed training batches: the stream position a checkpoint must resume from."""
        trainer = self.trainer
        if trainer is not None and trainer.training and not trainer.sanity_checking:
            self.batches_seen += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"batches_seen": self.batches_seen, "batch_size": self.batch_size, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(
                f"Checkpoint stream used batch_size {state_dict['batch_size']}, this run {self.batch_size}; "
                "a resumed Dyck stream needs the same batch size."
            )
        self.batches_seen = int(state_dict["batches_seen"])

    def _stream(self, domain: int, num_batches: int | None) -> DyckStream:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return DyckStream(self.seq_len, self.batch_size, self.k, self.max_depth, self.p_open, self.seed,
                          domain=domain, rank=rank, num_batches=num_batches)

    def train_dataloader(self) -> DataLoader:
        return _ResumingLoader(self._stream(TRAIN_DOMAIN, None), batch_size=self.batch_size,
                               num_workers=self.num_workers, position=lambda: self.batches_seen)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._stream(VAL_DOMAIN, self.val_batches), batch_size=self.batch_size,
                          num_workers=min(self.num_workers, max(1, self.val_batches)))
