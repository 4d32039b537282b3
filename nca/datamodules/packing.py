"""Packing: documents -> token ids joined by end-of-text -> rows of ``seq_len + 1`` ids that overlap by one."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from nca.datamodules.shards import ShardWriter


class Packer:
    """Join token lists with EOT and cut the stream into rows of ``seq_len + 1`` that overlap by one id."""

    def __init__(self, writer: ShardWriter, seq_len: int, eot_id: int, max_rows: int | None = None):
        self.writer, self.seq_len, self.eot_id, self.max_rows = writer, seq_len, eot_id, max_rows
        self.buffer = np.empty(0, dtype=np.int64)
        self.rows = self.documents = self.tokens_in = 0

    @property
    def full(self) -> bool:
        return self.max_rows is not None and self.rows >= self.max_rows

    def add(self, documents: Iterable[list[int]]) -> None:
        if self.full:
            return
        flat: list[int] = []
        for ids in documents:
            flat.extend(ids)
            flat.append(self.eot_id)
            self.documents += 1
        self.tokens_in += len(flat)
        self.buffer = np.concatenate([self.buffer, np.asarray(flat, dtype=np.int64)])
        T = self.seq_len
        n = (len(self.buffer) - 1) // T
        if self.max_rows is not None:
            n = min(n, self.max_rows - self.rows)
        if n <= 0:
            return
        rows = np.lib.stride_tricks.sliding_window_view(self.buffer, T + 1)[::T][:n]
        self.writer.write(np.ascontiguousarray(rows))
        self.rows += n
        self.buffer = self.buffer[n * T:].copy()

    def summary(self) -> dict[str, int]:
        return {
            "documents": self.documents, "rows": self.rows, "target_tokens": self.rows * self.seq_len,
            "tokens_read": self.tokens_in, "dropped_tokens": max(0, self.tokens_in - self.rows * self.seq_len),
        }


def document_batches(documents: Iterable[str], max_chars: int = 1 << 21, max_docs: int = 4096) -> Iterator[list[str]]:
    """Group documents so that each encode call gets enough text to keep tiktoken's threads busy."""
    batch, chars = [], 0
    for text in documents:
        if not text or not text.strip():
            continue
        batch.append(text)
        chars += len(text)
        if chars >= max_chars or len(batch) >= max_docs:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch
