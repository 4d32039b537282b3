"""Where text comes from: local files (jsonl / json lines / parquet / plain text, optionally compressed),
directories and globs, or a Hugging Face dataset name; and the hash that assigns documents to splits."""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import hashlib
import json
import lzma
import os
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Iterator, Sequence

COMPRESSION = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
JSON_LINES = {".jsonl", ".json", ".ndjson"}
# File kinds picked up when a directory is given (a glob picks up whatever it matches; .json files are often
# not JSON lines, so a directory scan leaves them out).
DIRECTORY_KINDS = {".jsonl", ".ndjson", ".parquet", ".txt", ".py"}
_HF_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}")  # .jsonl, .gz, .zst, .parquet; not a version's ".2"
SOURCE_HELP = (
    "give existing local files, a directory or a glob (jsonl / json lines / parquet / txt / .py, optionally .gz/.xz), "
    "or a Hugging Face dataset name (needs `pip install datasets` and network)"
)


def _kind(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix) of a file name, e.g. ('.jsonl', '.gz')."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSION else ""
    return (suffixes[-1] if suffixes else ""), compression


def looks_local(source: str) -> bool:
    """A path meant as local: it starts with ``.``, ``/`` or ``~``, has a file suffix (``.jsonl``, ``.zst``...),
    or more separators than a Hugging Face ``owner/name``. Such a path that does not exist is an error on the
    spot, never a Hugging Face look-up (which needs the network)."""
    if source.startswith((".", "~", "/")) or source.count("/") > 1 or (os.sep != "/" and os.sep in source):
        return True
    return bool(_FILE_SUFFIX.fullmatch(Path(source).suffix))


def is_hf_name(source: Any) -> bool:
    """A string that is no existing path, does not look like a local one and reads like ``owner/name`` (or has
    an explicit ``hf:`` prefix)."""
    if not isinstance(source, str):
        return False
    if source.startswith("hf:"):
        return True
    if Path(source).expanduser().exists() or glob.has_magic(source) or looks_local(source):
        return False
    return bool(_HF_NAME.match(source))


def hf_offline() -> bool:
    """Whether HF_HUB_OFFLINE or HF_DATASETS_OFFLINE forbids the network (then nothing may try it)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


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
            hf = f" (a Hugging Face dataset is written hf:{item})" if not looks_local(str(item)) else ""
            raise FileNotFoundError(f"Corpus path {text!r} does not exist{hf}; {SOURCE_HELP}.")
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

    with _offline_libraries():
        try:
            records = load_dataset(name.removeprefix("hf:"), subset, split=split, streaming=streaming)
        except ConnectionError as err:  # offline mode or no network: one line, not the hub client's traceback
            mode = "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set" if hf_offline() else "the hub cannot be reached"
            raise FileNotFoundError(
                f"{name!r} is no local path and, as a Hugging Face dataset, is not in the local cache while "
                f"{mode}; {SOURCE_HELP}"
            ) from err
        for record in records:
            if text_field not in record:
                raise KeyError(f"{name} ({split}) records have no field {text_field!r} (fields: {sorted(record)}).")
            yield record[text_field]


@contextlib.contextmanager
def _offline_libraries() -> Iterator[None]:
    """huggingface_hub and datasets read HF_HUB_OFFLINE / HF_DATASETS_OFFLINE once, when first imported (here,
    often by an import chain long before the data): when the environment says offline now, tell them now."""
    if not hf_offline():
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
         huggingface_hub.constants.HF_HUB_OFFLINE) = saved


def document_position(text: str) -> float:
    """A document's place in [0, 1), a hash of its text: splits cut this interval, so exact duplicates
    always land in the same split and the assignment never depends on reading order."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def is_validation(text: str, fraction: float) -> bool:
    """Deterministic document-level hold-out: the documents whose position falls below ``fraction``."""
    return document_position(text) < fraction
