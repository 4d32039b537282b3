"""Statistics of token corpora in the shared shard format, to set NCA bands side by side with text.

Per corpus: rows and tokens read, distinct ids, unigram entropy (bits), the most frequent ids, the gzip
ratio of windows (``nca.automaton.complexity.gzip_ratio``, windows as long as the ``nca complexity`` probe, NCA
delimiters removed, so the numbers compare with the bands) and, for NCA corpora, the delimiter fraction.

    python -m analysis.token_stats data/nca-50plus data/text_cache/owt --max-rows 10000 --json stats.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from datamodules.shards import TokenShards
from nca.automaton.complexity import COMPLEXITY_FRAMES, gzip_ratio
from nca.automaton.config import NCAConfig
from nca.automaton.tokenize import PatchTokenizer

_CHUNK = 1024  # rows counted per bincount


def nca_tokenizer(metadata: dict) -> PatchTokenizer | None:
    """The patch tokenizer of an NCA corpus (its manifest metadata has "nca"), else None."""
    if "nca" not in metadata:
        return None
    cfg = metadata["nca"]
    try:
        return PatchTokenizer(int(cfg["n_states"]), int(cfg["grid"]), int(cfg["patch"]))
    except (KeyError, TypeError) as e:
        raise ValueError(f"manifest metadata 'nca' lacks n_states/grid/patch ({e!r}); was it written by `nca generate`?") from None


def corpus_stats(directory: str | Path, max_rows: int | None = None, seed: int = 0, top_k: int = 10,
                 windows: int = 256, window: int | None = None) -> dict:
    """Statistics of one corpus; with ``max_rows`` a seeded random sample of rows is read instead of all."""
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if windows < 0 or top_k < 0:
        raise ValueError(f"windows and top_k must be >= 0, got {windows} and {top_k}")
    shards = TokenShards(directory)
    m = shards.manifest
    if len(shards) == 0:
        raise ValueError(f"corpus {directory} has no rows")
    tok = nca_tokenizer(m.metadata)
    if window is None:  # as long as the complexity probe of `nca complexity` (360 ids by default)
        window = COMPLEXITY_FRAMES * (tok or PatchTokenizer.from_config(NCAConfig())).patches_per_frame
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")

    rng = np.random.default_rng(seed)
    n = len(shards)
    index = np.arange(n) if max_rows is None or max_rows >= n else np.sort(rng.choice(n, max_rows, replace=False))

    counts = np.zeros(m.vocab_size, dtype=np.int64)
    for start in range(0, len(index), _CHUNK):
        rows = np.stack([shards.row(int(i)) for i in index[start : start + _CHUNK]])
        counts += np.bincount(rows.ravel().astype(np.int64), minlength=m.vocab_size)
    total = int(counts.sum())
    p = counts[counts > 0] / total
    order = np.lexsort((np.arange(len(counts)), -counts))[: min(top_k, int((counts > 0).sum()))]  # by count, then id

    ratios = []
    for i in rng.choice(index, min(windows, len(index)), replace=False) if windows else []:
        row = shards.row(int(i)).astype(np.int64)
        if tok is not None:
            row = row[row < tok.start_id]  # the bands are measured on patch ids without delimiters
        if len(row) > window:
            off = int(rng.integers(0, len(row) - window + 1))
            row = row[off : off + window]
        if len(row):
            ratios.append(gzip_ratio(row))

    stats = {
        "dir": str(directory), "kind": "nca" if tok is not None else "text",
        "rows": len(index), "corpus_rows": n, "tokens": total, "vocab_size": m.vocab_size,
        "distinct": int((counts > 0).sum()), "entropy_bits": float(-(p * np.log2(p)).sum()),
        "top": [{"id": int(i), "count": int(counts[i]), "freq": float(counts[i] / total)} for i in order],
        "gzip_window": window, "gzip_windows": len(ratios),
        "gzip_median": float(np.median(ratios)) if ratios else None,
        "gzip_mean": float(np.mean(ratios)) if ratios else None,
        "delimiter_frac": None,
    }
    if tok is not None:
        stats["delimiter_frac"] = float(counts[tok.start_id : tok.end_id + 1].sum() / total)
    return stats


def line(s: dict) -> str:
    gz = "n/a" if s["gzip_median"] is None else f"{s['gzip_median']:.3f} ({s['gzip_windows']} x {s['gzip_window']})"
    top = " ".join(f"{t['id']}:{t['freq']:.3f}" for t in s["top"][:5])
    delim = "" if s["delimiter_frac"] is None else f" delimiters {s['delimiter_frac']:.2%}"
    return (f"{s['dir']} [{s['kind']}]: rows {s['rows']:,}/{s['corpus_rows']:,} tokens {s['tokens']:,} "
            f"distinct {s['distinct']:,}/{s['vocab_size']:,} entropy {s['entropy_bits']:.3f} bits "
            f"gzip {gz}{delim} top {top}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nca token-stats",
                                description="Unigram, gzip and delimiter statistics of token corpora (shard format).")
    p.add_argument("dirs", nargs="+", type=Path, help="corpus directories holding manifest.json")
    p.add_argument("--max-rows", type=int, default=None, help="read a random sample of this many rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the row and window sample")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--windows", type=int, default=256, help="windows measured for the gzip ratio")
    p.add_argument("--window", type=int, default=None, help="ids per window (default: the nca complexity probe, 360)")
    p.add_argument("--json", type=Path, default=None, help="write all statistics here")
    a = p.parse_args(argv)
    if a.json is not None and a.json.exists():  # outputs are never overwritten
        print(f"error: {a.json} already exists; choose another --json", file=sys.stderr)
        return 2
    try:
        stats = [corpus_stats(d, a.max_rows, a.seed, a.top_k, a.windows, a.window) for d in a.dirs]
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in stats:
        print(line(s))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(stats, indent=2))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
