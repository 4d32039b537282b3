"""One on-disk token format for every corpus: fixed-length rows in numpy memmaps plus a JSON manifest.

A row holds ``row_len = seq_len + 1`` token ids, so one row gives one training sample
(``input_ids = row[:-1]``, ``labels = row[1:]``) with no cross-row reads. ``mask_first`` label
positions of every row are set to -100 (the NCA layout masks the first frame; text masks nothing).
Written by ``python -m nca generate`` and by the text cache, read by the DataModules.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

MANIFEST = "manifest.json"
IGNORE_INDEX = -100
CHUNK_ROWS = 1 << 14  # rows read at a time when verifying a shard
REBUILD = ("rebuild it: `nca generate --out NEW_DIR ...` for an NCA corpus; for a text cache, remove the cache "
           "directory and the text DataModule writes it again")


class CorpusError(ValueError):
    """A corpus whose files no longer match its manifest (edited, truncated, other dtype, ids out of range)."""


def sha256_file(path: Path) -> str:
    """The shard's SHA-256 (``sha256sum FILE`` prints the same), as recorded in the manifest."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def smallest_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits, else uint32 (halves the disk and page-cache cost of small vocabularies)."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def row_to_sample(row: np.ndarray | torch.Tensor, mask_first: int = 0) -> dict[str, torch.Tensor]:
    """Split one row of ``T + 1`` ids into the batch contract: inputs and already-shifted labels.

    ``labels[t]`` is the target of position ``t`` (no further shift in the loss); -100 is ignored.
    """
    row = torch.as_tensor(np.asarray(row, dtype=np.int64)) if not isinstance(row, torch.Tensor) else row.long()
    labels = row[..., 1:].clone()
    if mask_first:
        labels[..., :mask_first] = IGNORE_INDEX
    return {"input_ids": row[..., :-1].contiguous(), "labels": labels}


@dataclass
class Manifest:
    row_len: int
    dtype: str
    vocab_size: int
    mask_first: int = 0
    rows: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.rows * self.row_len

    def save(self, directory: Path) -> None:
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, directory / MANIFEST)

    @classmethod
    def load(cls, directory: str | Path) -> "Manifest":
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"No token corpus at {directory}: {MANIFEST} is missing. Write one with "
                "`python -m nca generate --out DIR ...` (NCA) or let the text DataModule build its cache."
            )
        try:
            fields = json.loads(path.read_text())
            return cls(**fields)
        except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError; TypeError: missing/extra keys
            what = f"is not valid JSON ({err})" if isinstance(err, json.JSONDecodeError) else f"is not a corpus manifest ({err})"
            raise CorpusError(f"{path} {what}; {REBUILD}") from None


class ShardWriter:
    """Append rows to numbered shards; the manifest is written last, so a crashed write is never read as whole.

    Refuses to write into a directory that already holds a corpus (or anything else): user data is never
    overwritten. Use as a context manager.
    """

    def __init__(
        self,
        directory: str | Path,
        row_len: int,
        vocab_size: int,
        mask_first: int = 0,
        rows_per_shard: int = 1 << 16,
        metadata: dict[str, Any] | None = None,
    ):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise FileExistsError(f"{self.directory} is a file, not a directory; choose a new --out directory")
        if self.directory.exists() and any(self.directory.iterdir()):
            raise FileExistsError(
                f"{self.directory} already exists and is not empty; refusing to overwrite it. "
                "Choose a new --out directory or remove the old corpus yourself."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = smallest_dtype(vocab_size)
        self.rows_per_shard = int(rows_per_shard)
        self.manifest = Manifest(
            row_len=int(row_len), dtype=self.dtype.name, vocab_size=int(vocab_size),
            mask_first=int(mask_first), metadata=dict(metadata or {}),
        )
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    def write(self, rows: np.ndarray | torch.Tensor) -> None:
        rows = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows)
        if rows.ndim != 2 or rows.shape[1] != self.manifest.row_len:
            raise ValueError(f"rows must have shape [N, {self.manifest.row_len}], got {tuple(rows.shape)}")
        if rows.size and (rows.min() < 0 or rows.max() >= self.manifest.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.manifest.vocab_size}), got [{rows.min()}, {rows.max()}]")
        self._buffer.append(rows.astype(self.dtype, copy=False))
        self._buffered += len(rows)
        while self._buffered >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def _flush(self, n: int) -> None:
        data = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        out, rest = data[:n], data[n:]
        name = f"shard_{len(self.manifest.shards):05d}.bin"
        out.tofile(self.directory / name)
        self.manifest.shards.append({"file": name, "rows": int(len(out)), "bytes": int(out.nbytes),
                                     "sha256": hashlib.sha256(np.ascontiguousarray(out).data).hexdigest()})
        self.manifest.rows += int(len(out))
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)

    def close(self, **metadata: Any) -> Manifest:
        if self._buffered:
            self._flush(self._buffered)
        self.manifest.metadata.update(metadata)
        self.manifest.save(self.directory)
        return self.manifest

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()


def check_layout(directory: Path, m: Manifest) -> np.dtype:
    """The cheap checks (no data read): a known dtype wide enough for the vocabulary, row counts that add up,
    and every shard file present with exactly ``rows * row_len * itemsize`` bytes."""
    try:
        dtype = np.dtype(m.dtype)
    except TypeError:
        raise CorpusError(f"corpus {directory}: {MANIFEST} names an unknown dtype {m.dtype!r}; {REBUILD}") from None
    if dtype.kind != "u" or m.vocab_size > np.iinfo(dtype).max + 1:
        raise CorpusError(f"corpus {directory}: dtype {m.dtype} cannot hold ids of a {m.vocab_size}-token "
                          f"vocabulary; {REBUILD}")
    if m.rows != sum(s["rows"] for s in m.shards):
        raise CorpusError(f"corpus {directory}: {MANIFEST} says {m.rows} rows but its shards add up to "
                          f"{sum(s['rows'] for s in m.shards)}; {REBUILD}")
    for shard in m.shards:
        path = directory / shard["file"]
        expected = shard["rows"] * m.row_len * dtype.itemsize
        if not path.is_file():
            raise CorpusError(f"corpus {directory}: shard {shard['file']} is missing; {REBUILD}")
        size = path.stat().st_size
        if size != expected:
            raise CorpusError(
                f"corpus {directory}: {shard['file']} has {size} bytes, its manifest entry {expected} ({shard['rows']} "
                f"rows x {m.row_len} ids x {dtype.itemsize} bytes): truncated, edited or of another dtype; {REBUILD}")
    return dtype


def verify_corpus(directory: str | Path) -> Manifest:
    """Check a corpus against its manifest before training on it: the layout (``check_layout``), each shard's
    SHA-256 where the manifest records one (written by ``ShardWriter``), and every id inside the vocabulary.
    Reads every byte once; raises ``CorpusError`` naming the file and the fix."""
    directory = Path(directory)
    m = Manifest.load(directory)
    dtype = check_layout(directory, m)
    for shard in m.shards:
        path = directory / shard["file"]
        if shard.get("sha256") and sha256_file(path) != shard["sha256"]:
            raise CorpusError(f"corpus {directory}: {shard['file']} does not match the SHA-256 in {MANIFEST} "
                              f"(the file changed after it was written); {REBUILD}")
        if not shard["rows"]:
            continue
        data = np.memmap(path, dtype=dtype, mode="r", shape=(shard["rows"], m.row_len))
        top = max(int(data[i:i + CHUNK_ROWS].max()) for i in range(0, shard["rows"], CHUNK_ROWS))
        if top >= m.vocab_size:
            raise CorpusError(f"corpus {directory}: {shard['file']} holds id {top}, outside the manifest's vocabulary "
                              f"of {m.vocab_size} ids; {REBUILD}")
    return m


class TokenShards:
    """Random access to the rows of a corpus, memory-mapped (reading never loads a whole shard).
    Opening checks the layout against the manifest; ``verify_corpus`` also checks the contents."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.manifest = Manifest.load(self.directory)
        m = self.manifest
        check_layout(self.directory, m)
        self._maps = [
            np.memmap(self.directory / s["file"], dtype=np.dtype(m.dtype), mode="r", shape=(s["rows"], m.row_len))
            for s in m.shards
        ]
        self._starts = np.cumsum([0] + [s["rows"] for s in m.shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def row(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for a corpus of {len(self)} rows")
        shard = int(np.searchsorted(self._starts, index, side="right") - 1)
        return np.asarray(self._maps[shard][index - self._starts[shard]])

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        return row_to_sample(self.row(index), self.manifest.mask_first)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.row(i)
