"""Text corpora (C4, OpenWebText, OpenWebMath, CodeParrot, ...) -> tokens -> cached shard sets -> batches.

Documents are tokenised once, each followed by the end-of-text id, and packed into rows of ``seq_len + 1``
ids that overlap by one token (``nca.datamodules.packing``). Each split (train, val, test) is a shard set of its
own under ``cache_dir/<name>-<split>-<key>``, where the key hashes only what that split is made of (its
files with sizes and mtimes or its Hugging Face split, the tokenizer, seq_len, fields, the hold-out
fractions, its cap). So a new validation set never re-tokenises the training corpus; a changed input gives a
new key and a new directory; an existing cache is reused and never overwritten.

Held-out splits come from their own sources (``val_source``, ``test_source``) or are carved out of the
training source by document hash (``text_sources.document_position``): validation takes positions below
``val_fraction``, test the next ``test_fraction``; training keeps the rest. Sources: see
``nca.datamodules.text_sources``.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from nca.datamodules.base import Split, TokenDataModule
from nca.datamodules.packing import Packer, document_batches
from nca.datamodules.shards import ShardWriter, TokenShards
from nca.datamodules.streaming import BatchSource, ShardRows
from nca.datamodules.text_sources import (  # noqa: F401 (re-exported: the text API in one import)
    SOURCE_HELP,
    document_position,
    hf_documents,
    is_hf_name,
    is_validation,
    read_documents,
    resolve_files,
)
from nca.datamodules.tokenizers import TextTokenizer, load_tokenizer

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: one keyed shard set per split
SPLITS: tuple[Split, ...] = ("train", "val", "test")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


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


class TextDataModule(TokenDataModule):
    """Tokenise a corpus once into keyed per-split caches (``prepare_data``), then serve packed rows.

    Training rows stream endlessly, each pass over the corpus in a fresh seeded order (``ShardRows``), as
    numbered batches: a resumed run continues mid-pass instead of replaying it. Stop runs with
    ``trainer.max_steps``. Validation and test read every row of their split once, in order.

    Batches: ``{"input_ids": LongTensor[B, T], "labels": LongTensor[B, T]}``, labels already shifted
    (``labels[:, t]`` is the target of position ``t``); text masks nothing.

    Args:
        source: local file / directory / glob / list of them, or a Hugging Face dataset name (``hf:`` prefix
            optional).
        tokenizer: ``"gpt2"`` or a tokenizer directory (see ``nca.datamodules.tokenizers``).
        seq_len: tokens per sample; rows on disk hold ``seq_len + 1``.
        batch_size: rows per batch and device.
        num_workers: DataLoader worker processes.
        cache_dir: where keyed shard sets are built (``<cache_dir>/<name>-<split>-<key>``).
        text_field: the JSON field / parquet column / HF column holding the text.
        val_source: validation documents (local or HF, split ``hf_val_split``); when None, the documents of
            the source whose hash position falls below ``val_fraction`` are held out instead.
        val_fraction: share of the source's documents held out for validation when no ``val_source``.
        test_source: test documents (local or HF, split ``hf_test_split``); when None, the next
            ``test_fraction`` of the source's documents (by hash) are held out; 0 means no test split.
        test_fraction: share of the source's documents held out for test when no ``test_source``.
        max_tokens: cap on training target tokens (rows * seq_len), e.g. the paper's 164M-token C4 baseline.
        max_val_tokens: cap on validation (and test) target tokens, for huge streamed evaluation splits.
        seed: shuffling seed of the training rows.
        hf_subset, hf_split, hf_val_split, hf_test_split, hf_streaming: how Hugging Face datasets are read.
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
        test_source: str | list[str] | None = None,
        test_fraction: float = 0.01,
        max_tokens: int | None = None,
        max_val_tokens: int | None = None,
        seed: int = 0,
        hf_subset: str | None = None,
        hf_split: str = "train",
        hf_val_split: str = "validation",
        hf_test_split: str = "test",
        hf_streaming: bool = True,
        txt_document: str = "file",
        exclude: list[str] | None = None,
    ):
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        if seq_len < 1:
            raise ValueError(f"data seq_len must be >= 1, got {seq_len}")
        carved = (0.0 if val_source is not None else val_fraction) + (0.0 if test_source is not None else test_fraction)
        if val_source is None and not 0.0 < val_fraction < 0.5:
            raise ValueError(f"data val_fraction must lie in (0, 0.5) when no val_source is given, got {val_fraction}")
        if test_source is None and not 0.0 <= test_fraction < 0.5 or carved >= 0.5:
            raise ValueError(f"data test_fraction must lie in [0, 0.5) and the held-out shares sum below 0.5, "
                             f"got val_fraction {val_fraction}, test_fraction {test_fraction}")
        if txt_document not in ("file", "line"):
            raise ValueError(f"data txt_document must be 'file' or 'line', got {txt_document!r}")
        for name, cap in (("max_tokens", max_tokens), ("max_val_tokens", max_val_tokens)):
            if cap is not None and cap < seq_len:
                raise ValueError(f"data {name}={cap} is less than one row of seq_len={seq_len} tokens")
        self.seq_len, self.seed = seq_len, seed
        self.text_field, self.txt_document, self.exclude = text_field, txt_document, list(exclude or [])
        self.hf = {"subset": hf_subset, "streaming": hf_streaming,
                   "split": {"train": hf_split, "val": hf_val_split, "test": hf_test_split}}
        self.caps = {"train": max_tokens, "val": max_val_tokens, "test": max_val_tokens}

        # Everything that can be wrong with the inputs fails here, before any long work.
        given = {"train": source, "val": val_source, "test": test_source}
        self.inputs = {split: self._resolve(src) for split, src in given.items() if src is not None}
        # Where in [0, 1) each carved split's documents lie (by hash); training keeps the rest.
        self.carve: dict[str, tuple[float, float]] = {}
        start = 0.0
        for split, fraction in (("val", val_fraction), ("test", test_fraction)):
            if split not in self.inputs and fraction > 0:
                self.carve[split] = (start, start + fraction)
                start += fraction
        self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        self.vocab_size: int = self.tokenizer.vocab_size
        slug = self._slug(source)
        self.key_inputs = {split: self._key_inputs(split) for split in self.splits}
        self.paths = {split: Path(cache_dir).expanduser() / f"{slug}-{split}-{self._key(split)}" for split in self.splits}

    @property
    def splits(self) -> list[Split]:
        return [s for s in SPLITS if s == "train" or s in self.inputs or s in self.carve]

    def split_path(self, split: Split) -> Path:
        """The shard set of one split (``manifest.json`` + shards + ``cache.json``)."""
        if split not in self.paths:
            raise ValueError(f"this data has no {split} split: give data.{split}_source, or a {split}_fraction > 0")
        return self.paths[split]

    # -- inputs and keys

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
            return {"hf": source, "subset": self.hf["subset"], "split": self.hf["split"][split]}
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in source]

    def origin(self, split: Split) -> Split:
        """The split whose source a split's documents are read from ("train": the main source)."""
        return split if split in self.inputs else "train"

    def _key_inputs(self, split: Split) -> dict[str, Any]:
        origin = self.origin(split)
        return {
            "version": CACHE_VERSION,
            "split": split,
            "source": self._describe(self.inputs[origin], origin),
            # the training split's documents depend on what is carved out of it; a carved split on its place
            "carve": self.carve if split == "train" else self.carve.get(split),
            "tokenizer": self.tokenizer.name,
            "seq_len": self.seq_len,
            "text_field": self.text_field,
            "txt_document": self.txt_document,
            "max_tokens": self.caps[split],
        }

    def _key(self, split: Split) -> str:
        return hashlib.sha256(json.dumps(self.key_inputs[split], sort_keys=True).encode()).hexdigest()[:16]

    def _slug(self, source: Any) -> str:
        """A readable cache-name prefix: the dataset name, file stem, directory, or a glob's fixed directory."""
        first = str(source if isinstance(source, (str, Path)) else source[0]).removeprefix("hf:")
        if not is_hf_name(first):
            parts = Path(first).expanduser().parts
            fixed = parts[: next((i for i, q in enumerate(parts) if glob.has_magic(q)), len(parts))]
            name = fixed[-1] if fixed else "corpus"
            first = name.split(".")[0] if len(fixed) == len(parts) and Path(first).expanduser().is_file() else name
        return re.sub(r"[^\w.-]+", "_", first).strip("_")[:40] or "corpus"

    def _documents(self, origin: Split, skipped: list) -> Iterator[str]:
        source = self.inputs[origin]
        if isinstance(source, str):
            yield from hf_documents(source, self.hf["subset"], self.hf["split"][origin], self.text_field,
                                    self.hf["streaming"])
            return
        for path in source:
            yield from read_documents(path, self.text_field, self.txt_document, skipped)

    def _split_of(self, text: str) -> Split:
        """Which split of the main source a document belongs to."""
        if not self.carve:
            return "train"
        position = document_position(text)
        return next((s for s, (lo, hi) in self.carve.items() if lo <= position < hi), "train")

    # -- building the caches

    def is_built(self, split: Split) -> bool:
        return (self.split_path(split) / "cache.json").is_file()

    def prepare_data(self) -> None:
        """Build the caches the trainer's stage reads (fit: train + val; validate: val; test: test)."""
        trainer = getattr(self, "trainer", None)  # set by the Trainer (``nca test`` builds the test split)
        stage = trainer.state.fn.value if trainer is not None and trainer.state.fn is not None else "fit"
        self.prepare_splits(STAGE_SPLITS.get(stage, ("train", "val")))

    def prepare_splits(self, splits) -> None:
        """Build the missing caches among ``splits`` (rank 0 only; each written to a temporary directory,
        then renamed): one pass per source feeds every split read from it."""
        missing = [s for s in splits if not self.is_built(s)]
        for split in splits:
            if split not in missing:
                log.info("Reusing token cache %s", self.paths[split])
        for origin in dict.fromkeys(self.origin(s) for s in missing):
            self._build([s for s in missing if self.origin(s) == origin], origin)

    def _build(self, splits: list[Split], origin: Split) -> None:
        from tqdm.auto import tqdm

        tok, T, skipped = self.tokenizer, self.seq_len, []
        meta = {"tokenizer": tok.name, "eot_id": tok.eot_id, "seq_len": T, "row_overlap": 1}
        tmp = {s: self.paths[s].parent / f".{self.paths[s].name}.tmp-{uuid.uuid4().hex[:8]}" for s in splits}
        self.paths[splits[0]].parent.mkdir(parents=True, exist_ok=True)
        try:
            with ExitStack() as stack:
                packers = {}
                for s in splits:
                    writer = stack.enter_context(ShardWriter(tmp[s], T + 1, tok.vocab_size, metadata={**meta, "split": s}))
                    caps = self.caps[s]
                    packers[s] = Packer(writer, T, tok.eot_id, None if caps is None else caps // T)
                bar = stack.enter_context(tqdm(unit="doc", desc=f"tokenising {', '.join(self.paths[s].name for s in splits)}"))
                for texts in document_batches(self._documents(origin, skipped)):
                    groups: dict[str, list[str]] = {s: [] for s in splits}
                    for text in texts:
                        split = self._split_of(text) if origin == "train" else origin
                        if split in groups:
                            groups[split].append(text)
                    for s, chosen in groups.items():
                        if chosen and not packers[s].full:
                            packers[s].add(tok.encode_batch(chosen))
                    bar.update(len(texts))
                    if all(p.full for p in packers.values()):
                        break
                for s, packer in packers.items():
                    if packer.rows == 0:
                        raise ValueError(
                            f"The {s} split of {self._slug(self.hparams.source)} holds fewer than seq_len + 1 = "
                            f"{T + 1} tokens ({packer.tokens_in} read); give more data, a larger {s}_fraction or a "
                            f"{s}_source."
                        )
            for s in splits:
                summary = packers[s].summary()
                manifest = TokenShards(tmp[s]).manifest
                manifest.metadata.update(summary)
                manifest.save(tmp[s])
                (tmp[s] / "cache.json").write_text(json.dumps({"inputs": self.key_inputs[s], **summary,
                                                               "skipped_files": skipped}, indent=2))
                self._publish(tmp[s], self.paths[s])
                if self.caps[s] is not None and packers[s].rows < self.caps[s] // T:
                    log.warning("Corpus exhausted: %d of the %d %s tokens asked for", packers[s].rows * T, self.caps[s], s)
        finally:
            for path in tmp.values():
                if path.exists():
                    shutil.rmtree(path)
        if skipped:
            log.warning("Skipped %d files that are not UTF-8, e.g. %s", len(skipped), skipped[0])

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "cache.json").is_file():
                raise
            log.info("Another process built %s first; using it", final)

    # -- Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", ("train", "val")):
            if not self.is_built(split):
                raise FileNotFoundError(
                    f"No token cache at {self.paths[split]}; call prepare_data() first (trainer.fit does) "
                    "and make cache_dir a path every rank can read."
                )
        if stage in (None, "fit") and len(RowDataset(self.paths["train"])) < self.batch_size:
            raise ValueError(f"{len(RowDataset(self.paths['train']))} training rows cannot fill one batch of "
                             f"{self.batch_size}")

    def source(self, split: Split) -> BatchSource:
        return ShardRows(self.split_path(split), self.batch_size, self.seed)

    def rows(self, split: Split) -> RowDataset:
        return RowDataset(self.split_path(split))

    def eval_loader(self, split: Split) -> DataLoader:
        """Every row of a held-out split once, in order (Lightning shards it across ranks)."""
        return DataLoader(self.rows(split), batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())
