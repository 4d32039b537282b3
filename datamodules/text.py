"""Text corpora (C4, OpenWebText, OpenWebMath, CodeParrot, ...) -> tokens -> a cached shard set -> batches.

Documents are tokenised once, each followed by the end-of-text id, and the resulting stream is cut into rows
of ``seq_len + 1`` ids that overlap by one token (row k = stream[k*T : k*T + T + 1]), so every token of the
stream is a target exactly once; the incomplete tail is dropped. Rows go to ``datamodules.shards`` format
under ``cache_dir/<name>-<key>/{train,val}``, where the key hashes every input (files with sizes and mtimes,
tokenizer, seq_len, fields, split, caps). A changed input gives a new key and a new directory; an existing
cache is reused and never overwritten.

Sources: local files, directories or globs (``.jsonl``/``.json`` lines, ``.parquet``, anything else read as
plain text; each optionally ``.gz``/``.xz``/``.bz2``), or a Hugging Face dataset name (needs ``datasets``,
the ``[data]`` extra, and network). Plain-text files are one document each (``txt_document="file"``, e.g. a
directory of ``.py`` files as a code corpus) or one per line (``"line"``).
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import importlib.util
import json
import logging
import lzma
import os
import re
import shutil
import uuid
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.shards import ShardWriter, TokenShards
from datamodules.streaming import NumberedBatches, PositionedLoader, ResumableStreamMixin, ShardRows
from datamodules.tokenizers import TextTokenizer, load_tokenizer

log = logging.getLogger(__name__)

CACHE_VERSION = 1
COMPRESSION = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
JSON_LINES = {".jsonl", ".json", ".ndjson"}
# File kinds picked up when a directory is given (a glob picks up whatever it matches; .json files are often
# not JSON lines, so a directory scan leaves them out).
DIRECTORY_KINDS = {".jsonl", ".ndjson", ".parquet", ".txt", ".py"}
_HF_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
SOURCE_HELP = (
    "give existing local files, a directory or a glob (jsonl / json lines / parquet / txt / .py, optionally .gz/.xz), "
    "or a Hugging Face dataset name (needs `pip install datasets` and network)"
)


# ----------------------------------------------------------------------------------------------- sources


def _kind(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix) of a file name, e.g. ('.jsonl', '.gz')."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSION else ""
    return (suffixes[-1] if suffixes else ""), compression


def is_hf_name(source: Any) -> bool:
    """A string that is no existing path and reads like ``owner/name`` (or has an explicit ``hf:`` prefix)."""
    if not isinstance(source, str):
        return False
    if source.startswith("hf:"):
        return True
    if Path(source).expanduser().exists() or glob.has_magic(source) or source.startswith((".", "~", "/")):
        return False
    return bool(_HF_NAME.match(source)) and _kind(Path(source))[0] not in DIRECTORY_KINDS | JSON_LINES


def resolve_files(source: str | Path | Sequence[str | Path], exclude: Sequence[str] = ()) -> list[Path]:
    """Expand paths, directories and globs into a sorted, de-duplicated file list; a missing path fails here."""
    items = [source] if isinstance(source, (str, Path)) else list(source)
    if not items:
        raise ValueError(f"No data source given; {SOURCE_HELP}.")
    files: list[Path] = []
    for item in items:
        text = os.path.expanduser(str(item))
        path = Path(text)
        if glob.has_magic(text):
            found = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p)[0] in DIRECTORY_KINDS)
        elif path.is_file():
            found = [path]
        else:
            raise FileNotFoundError(f"Corpus path {text!r} does not exist; {SOURCE_HELP}.")
        found = [p for p in found if not any(fnmatch(str(p), pattern) for pattern in exclude)]
        if not found:
            raise FileNotFoundError(f"No corpus files found under {text!r} (after exclude={list(exclude)}); {SOURCE_HELP}.")
        files.extend(found)
    return list(dict.fromkeys(files))


def _open_text(path: Path):
    opener = COMPRESSION.get(_kind(path)[1], open)
    return opener(path, "rt", encoding="utf-8")


def read_documents(path: Path, text_field: str = "text", txt_document: str = "file", skipped: list | None = None) -> Iterator[str]:
    """Documents of one file. Plain-text files that are not UTF-8 are skipped (and listed in ``skipped``)."""
    fmt, compression = _kind(path)
    if fmt in JSON_LINES:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if text_field not in record:
                    raise KeyError(
                        f"{path}:{lineno} has no field {text_field!r} (fields: {sorted(record)}); set text_field."
                    )
                yield record[text_field]
    elif fmt == ".parquet":
        if compression:
            raise ValueError(f"{path}: compressed parquet is not supported; parquet compresses internally.")
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError(f"Reading {path} needs pyarrow: pip install pyarrow (or the [data] extra).") from err
        parquet = pq.ParquetFile(path)
        if text_field not in parquet.schema_arrow.names:
            raise KeyError(f"{path} has no column {text_field!r} (columns: {parquet.schema_arrow.names}); set text_field.")
        for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
            yield from batch.column(0).to_pylist()
    else:
        opener = COMPRESSION.get(compression, open)
        with opener(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if skipped is not None:
                skipped.append(str(path))
            return
        if txt_document == "file":
            yield text
        else:
            yield from text.splitlines()


def hf_documents(name: str, subset: str | None, split: str, text_field: str, streaming: bool) -> Iterator[str]:
    """Documents of a Hugging Face dataset split (streamed by default: nothing is stored beyond our cache)."""
    from datasets import load_dataset

    for record in load_dataset(name.removeprefix("hf:"), subset, split=split, streaming=streaming):
        if text_field not in record:
            raise KeyError(f"{name} ({split}) records have no field {text_field!r} (fields: {sorted(record)}).")
        yield record[text_field]


def is_validation(text: str, fraction: float) -> bool:
    """Deterministic document-level split: a hash of the text, so exact duplicates land on the same side."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


# ----------------------------------------------------------------------------------------------- packing


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


def _batches(documents: Iterable[str], max_chars: int = 1 << 21, max_docs: int = 4096) -> Iterator[list[str]]:
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


# ----------------------------------------------------------------------------------------------- dataset


class RowDataset(Dataset):
    """Map-style view of a shard set; opens the memmaps lazily so that pickling to workers copies no data."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._shards: TokenShards | None = None
        self._len = len(TokenShards(self.directory))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._shards is None:
            self._shards = TokenShards(self.directory)
        return self._shards.sample(int(index))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_shards": None}


# ----------------------------------------------------------------------------------------------- module


class TextDataModule(ResumableStreamMixin, L.LightningDataModule):
    """Tokenise a corpus once into a keyed cache (``prepare_data``), then serve shuffled packed rows.

    Training rows stream endlessly, each pass over the corpus in a fresh seeded order (``ShardRows``), as
    numbered batches: a resumed run continues mid-pass instead of replaying it. Stop runs with
    ``trainer.max_steps``.

    Batches: ``{"input_ids": LongTensor[B, T], "labels": LongTensor[B, T]}``, labels already shifted
    (``labels[:, t]`` is the target of position ``t``); text masks nothing.

    Args:
        source: local file / directory / glob / list of them, or a Hugging Face dataset name (``hf:`` prefix
            optional).
        tokenizer: ``"gpt2"`` or a tokenizer directory (see ``datamodules.tokenizers``).
        seq_len: tokens per sample; rows on disk hold ``seq_len + 1``.
        cache_dir: where keyed shard sets are built (``<cache_dir>/<name>-<key>``).
        text_field: the JSON field / parquet column / HF column holding the text.
        val_source: validation documents (local or HF, split ``hf_val_split``); when None, a deterministic
            ``val_fraction`` of the source's documents (by text hash) is held out instead.
        max_tokens: cap on training target tokens (rows * seq_len), e.g. the paper's 164M-token C4 baseline.
        max_val_tokens: cap on validation target tokens (needed for huge streamed validation splits).
        seed: shuffling seed of the training rows.
        txt_document: plain-text files are one document per ``"file"`` or per ``"line"``.
        exclude: fnmatch patterns on file paths to leave out (e.g. ``"*/site-packages/*"``).
    """

    def __init__(
        self,
        source: str | list[str],
        tokenizer: str = "gpt2",
        seq_len: int = 1024,
        batch_size: int = 8,
        num_workers: int = 2,
        cache_dir: str = "data/text_cache",
        text_field: str = "text",
        val_source: str | list[str] | None = None,
        val_fraction: float = 0.01,
        max_tokens: int | None = None,
        max_val_tokens: int | None = None,
        seed: int = 0,
        hf_subset: str | None = None,
        hf_split: str = "train",
        hf_val_split: str = "validation",
        hf_streaming: bool = True,
        txt_document: str = "file",
        exclude: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if seq_len < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(f"seq_len and batch_size must be >= 1 and num_workers >= 0, got {seq_len}, {batch_size}, {num_workers}")
        if val_source is None and not 0.0 < val_fraction < 0.5:
            raise ValueError(f"val_fraction must lie in (0, 0.5) when no val_source is given, got {val_fraction}")
        if txt_document not in ("file", "line"):
            raise ValueError(f"txt_document must be 'file' or 'line', got {txt_document!r}")
        for name, cap in (("max_tokens", max_tokens), ("max_val_tokens", max_val_tokens)):
            if cap is not None and cap < seq_len:
                raise ValueError(f"{name}={cap} is less than one row of seq_len={seq_len} tokens")
        self.seq_len, self.batch_size, self.num_workers, self.seed = seq_len, batch_size, num_workers, seed
        self.text_field, self.txt_document, self.exclude = text_field, txt_document, list(exclude or [])
        self.val_fraction, self.max_tokens, self.max_val_tokens = val_fraction, max_tokens, max_val_tokens
        self.hf = {"subset": hf_subset, "split": hf_split, "val_split": hf_val_split, "streaming": hf_streaming}

        # Everything that can be wrong with the inputs fails here, before any long work.
        self.train_input = self._resolve(source)
        self.val_input = None if val_source is None else self._resolve(val_source)
        self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        self.vocab_size: int = self.tokenizer.vocab_size
        self.key_inputs = self._key_inputs()
        key = hashlib.sha256(json.dumps(self.key_inputs, sort_keys=True).encode()).hexdigest()[:16]
        self.cache_path = Path(cache_dir).expanduser() / f"{self._slug(source)}-{key}"
        self.train_data: RowDataset | None = None
        self.val_data: RowDataset | None = None

    # -- inputs and key

    def _resolve(self, source: Any) -> list[Path] | str:
        if is_hf_name(source):
            if importlib.util.find_spec("datasets") is None:
                raise ImportError(
                    f"{source!r} is no existing path, so it was read as a Hugging Face dataset name, but `datasets` "
                    f"is not installed (pip install datasets, the [data] extra). Otherwise {SOURCE_HELP}."
                )
            return source.removeprefix("hf:")
        return resolve_files(source, self.exclude)

    def _describe(self, source: list[Path] | str, split: str) -> Any:
        if isinstance(source, str):
            return {"hf": source, "subset": self.hf["subset"], "split": split}
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in source]

    def _key_inputs(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "train": self._describe(self.train_input, self.hf["split"]),
            "val": None if self.val_input is None else self._describe(self.val_input, self.hf["val_split"]),
            "val_fraction": None if self.val_input is not None else self.val_fraction,
            "tokenizer": self.tokenizer.name,
            "seq_len": self.seq_len,
            "text_field": self.text_field,
            "txt_document": self.txt_document,
            "max_tokens": self.max_tokens,
            "max_val_tokens": self.max_val_tokens,
        }

    def _slug(self, source: Any) -> str:
        """A readable cache-name prefix: the dataset name, file stem, directory, or a glob's fixed directory."""
        first = str(source if isinstance(source, (str, Path)) else source[0]).removeprefix("hf:")
        if not is_hf_name(first):
            parts = Path(first).expanduser().parts
            fixed = parts[: next((i for i, q in enumerate(parts) if glob.has_magic(q)), len(parts))]
            name = fixed[-1] if fixed else "corpus"
            first = name.split(".")[0] if len(fixed) == len(parts) and Path(first).expanduser().is_file() else name
        return re.sub(r"[^\w.-]+", "_", first).strip("_")[:40] or "corpus"

    def _documents(self, source: list[Path] | str, split: str, skipped: list) -> Iterator[str]:
        if isinstance(source, str):
            yield from hf_documents(source, self.hf["subset"], split, self.text_field, self.hf["streaming"])
            return
        for path in source:
            yield from read_documents(path, self.text_field, self.txt_document, skipped)

    # -- Lightning hooks

    def prepare_data(self) -> None:
        """Build the cache unless it exists (rank 0 only; written to a temporary directory, then renamed)."""
        if (self.cache_path / "cache.json").is_file():
            log.info("Reusing token cache %s", self.cache_path)
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.parent / f".{self.cache_path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            summary = self._build(tmp)
            (tmp / "cache.json").write_text(json.dumps({"inputs": self.key_inputs, **summary}, indent=2))
            try:
                os.rename(tmp, self.cache_path)
            except OSError:
                if not (self.cache_path / "cache.json").is_file():
                    raise
                log.info("Another process built %s first; using it", self.cache_path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    def _build(self, out: Path) -> dict[str, Any]:
        from tqdm.auto import tqdm

        tok, T = self.tokenizer, self.seq_len
        meta = {"tokenizer": tok.name, "eot_id": tok.eot_id, "seq_len": T, "row_overlap": 1}
        max_rows = None if self.max_tokens is None else self.max_tokens // T
        max_val_rows = None if self.max_val_tokens is None else self.max_val_tokens // T
        skipped: list[str] = []
        with ShardWriter(out / "train", T + 1, tok.vocab_size, metadata={**meta, "split": "train"}) as train_w, \
                ShardWriter(out / "val", T + 1, tok.vocab_size, metadata={**meta, "split": "val"}) as val_w:
            train = Packer(train_w, T, tok.eot_id, max_rows)
            val = Packer(val_w, T, tok.eot_id, max_val_rows)
            bar = tqdm(total=self.max_tokens, unit="tok", unit_scale=True, desc=f"tokenising {self.cache_path.name}")
            for texts in _batches(self._documents(self.train_input, self.hf["split"], skipped)):
                if self.val_input is None:
                    held = [is_validation(t, self.val_fraction) for t in texts]
                    val.add(tok.encode_batch([t for t, h in zip(texts, held) if h]))
                    texts = [t for t, h in zip(texts, held) if not h]
                before = train.rows
                train.add(tok.encode_batch(texts))
                bar.update((train.rows - before) * T)
                if train.full:
                    break
            if self.val_input is not None:
                for texts in _batches(self._documents(self.val_input, self.hf["val_split"], skipped)):
                    val.add(tok.encode_batch(texts))
                    if val.full:
                        break
            bar.close()
            for name, packer in (("train", train), ("validation", val)):
                if packer.rows == 0:
                    raise ValueError(
                        f"The {name} split of {self.cache_path.name} holds fewer than seq_len + 1 = {T + 1} tokens "
                        f"({packer.tokens_in} read); give more data, a larger val_fraction or a val_source."
                    )
            summary = {"train": train.summary(), "val": val.summary(), "skipped_files": skipped}
            train_w.manifest.metadata.update(summary["train"])
            val_w.manifest.metadata.update(summary["val"])
        if skipped:
            log.warning("Skipped %d files that are not UTF-8, e.g. %s", len(skipped), skipped[0])
        if max_rows is not None and train.rows < max_rows:
            log.warning("Corpus exhausted: %d of the max_tokens=%d training tokens", train.rows * T, self.max_tokens)
        return summary

    def setup(self, stage: str | None = None) -> None:
        if not (self.cache_path / "cache.json").is_file():
            raise FileNotFoundError(
                f"No token cache at {self.cache_path}; call prepare_data() first (trainer.fit does) "
                "and make cache_dir a path every rank can read."
            )
        self.train_data = RowDataset(self.cache_path / "train")
        self.val_data = RowDataset(self.cache_path / "val")
        if len(self.train_data) < self.batch_size:
            raise ValueError(f"{len(self.train_data)} training rows cannot fill one batch of {self.batch_size}")

    def train_dataloader(self) -> DataLoader:
        if self.train_data is None:
            raise RuntimeError("call setup() before asking for dataloaders")
        rank, world = self.rank_and_world()
        rows = ShardRows(self.cache_path / "train", self.batch_size, self.seed)
        return PositionedLoader(NumberedBatches(rows, rank, world), position=self.train_position,
                                num_workers=self.num_workers, pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        if self.val_data is None:
            raise RuntimeError("call setup() before asking for dataloaders")
        return DataLoader(self.val_data, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())
