"""Stage-3 fine-tuning rows shared by GSM8K and BIG-bench Lite: prompt/answer segments -> masked rows.

A row is a list of segments ``(token ids, supervised)``: prompt text is masked (-100), answers are
supervised. Rows hold at most ``seq_len + 1`` ids and are padded to exactly that with masked ids, so batches
have one fixed shape. Labels follow the batch contract (already shifted: ``labels[t]`` is the target of
position ``t``). The DataModule base (on ``nca.datamodules.base.TokenDataModule``) builds rows once in
``setup`` (the sets are small: seconds to tokenise) and streams them as numbered, resumable batches.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from nca.datamodules.base import Split, TokenDataModule
from nca.datamodules.shards import IGNORE_INDEX
from nca.datamodules.streaming import BatchSource, PassOrder
from nca.datamodules.tokenizers import TextTokenizer, load_tokenizer

Segment = tuple[list[int], bool]  # (ids, supervised)


def fit_row(exemplars: Sequence[Sequence[Segment]], target: Sequence[Segment], limit: int) -> list[Segment]:
    """Exemplars then the target, in at most ``limit`` ids: the earliest exemplars are dropped first, then
    the target's oldest ids (its prompt start), so the answer always stays in the row."""
    exemplars = list(exemplars)
    size = lambda parts: sum(len(ids) for seg in parts for ids, _ in seg)  # noqa: E731
    while exemplars and size(exemplars) + size([target]) > limit:
        exemplars.pop(0)
    segments = [s for ex in exemplars for s in ex] + list(target)
    excess = sum(len(ids) for ids, _ in segments) - limit
    while excess > 0:
        ids, supervised = segments[0]
        if len(ids) <= excess:
            segments.pop(0)
            excess -= len(ids)
        else:
            segments[0] = (ids[excess:], supervised)
            excess = 0
    return segments


def pack_row(segments: Sequence[Segment], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """``seq_len + 1`` ids (padded, masked) -> input_ids / shifted labels, loss only on supervised ids."""
    ids = [t for part, _ in segments for t in part]
    keep = [s for part, s in segments for _ in part]
    if len(ids) > seq_len + 1:
        raise ValueError(f"row of {len(ids)} ids exceeds seq_len + 1 = {seq_len + 1}; build it with fit_row")
    pad = seq_len + 1 - len(ids)
    row = torch.tensor(ids + [pad_id] * pad, dtype=torch.long)
    mask = torch.tensor(keep + [False] * pad, dtype=torch.bool)
    labels = torch.where(mask[1:], row[1:], torch.full_like(row[1:], IGNORE_INDEX))
    return {"input_ids": row[:-1].contiguous(), "labels": labels}


class RowList(Dataset):
    def __init__(self, rows: list[dict[str, torch.Tensor]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.rows[index]


class RowBatches(BatchSource):
    """In-memory rows as an endless numbered stream: pass ``e`` is a permutation seeded by (seed, e), so
    every row appears once per pass (as ``ShardRows`` does for shard corpora) and a resumed run continues."""

    def __init__(self, rows: list[dict[str, torch.Tensor]], batch_size: int, seed: int = 0):
        if not rows:
            raise ValueError("no training rows")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self._order = PassOrder(len(rows), seed)

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        return self.rows[self._order(index)]


class SupervisedRowsDataModule(TokenDataModule):
    """Base of the stage-3 DataModules: subclasses implement ``build_rows(split)`` for "train", "val", "test".

    Training rows stream endlessly (one seeded permutation per pass; stop runs with ``trainer.max_steps``);
    validation and test read every row once, in order. ``vocab_size`` is the tokenizer's, so a stage-2
    checkpoint trained with the same tokenizer loads with its embeddings kept (the reference's fine-tuning
    and evaluation disagreed on it).
    """

    def __init__(self, tokenizer: str, seq_len: int, batch_size: int, num_workers: int, seed: int):
        super().__init__(batch_size, num_workers)
        if seq_len < 2:
            raise ValueError(f"data seq_len must be >= 2, got {seq_len}")
        self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        self.vocab_size: int = self.tokenizer.vocab_size
        self.seq_len, self.seed = seq_len, seed
        self.data: dict[str, RowList] = {}

    def build_rows(self, split: str) -> list[dict[str, torch.Tensor]]:
        raise NotImplementedError

    def encode_pair(self, prompt: str, answer: str, close: bool) -> list[Segment]:
        """A masked prompt and a supervised answer (closed by end-of-text when ``close``)."""
        answer_ids = self.tokenizer.encode(answer) + ([self.tokenizer.eot_id] if close else [])
        return [(self.tokenizer.encode(prompt), False), (answer_ids, True)]

    def rows(self, split: str) -> RowList:
        if split not in self.data:
            self.data[split] = RowList(self.build_rows(split))
        return self.data[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "fit", ("train", "val"))
        for split in splits:
            self.rows(split)
        if "train" in splits and len(self.rows("train")) < self.batch_size:
            raise ValueError(f"{len(self.rows('train'))} training rows cannot fill one batch of {self.batch_size}")

    def source(self, split: Split) -> BatchSource:
        return RowBatches(self.rows(split).rows, self.batch_size, self.seed)

    def eval_loader(self, split: Split) -> DataLoader:
        """Every row of a held-out split once, in order (Lightning shards it across ranks)."""
        return DataLoader(self.rows(split), batch_size=self.batch_size, num_workers=self.num_workers)
