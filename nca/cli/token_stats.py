"""``nca token-stats DIR [DIR ...]``: unigram, gzip and delimiter statistics of token corpora in the shard
format, side by side (the library: nca.analysis.token_stats).

    nca token-stats data/nca-50plus data/text_cache/owt --max_rows 10000 --json stats.json --zipf zipf.png --labels nca-50+ owt
"""

from __future__ import annotations

import json as json_module
from pathlib import Path
from typing import Optional

from nca.cli import parsing
from nca.cli.errors import UsageError, usage_errors


def corpus_statistics(dirs: list[str], max_rows: Optional[int] = None, seed: int = 0, top_k: int = 10,
                      windows: int = 256, window: Optional[int] = None, json: Optional[str] = None,
                      zipf: Optional[str] = None, labels: Optional[list[str]] = None) -> int:
    """Unigram, gzip and delimiter statistics of token corpora (shard format).

    Args:
        dirs: corpus directories holding manifest.json, given first without a flag (or as --dirs).
        max_rows: read a seeded random sample of this many rows of each corpus (default: all).
        seed: seed of the row and window sample.
        top_k: most frequent ids listed per corpus.
        windows: windows measured for the gzip ratio.
        window: ids per window (default: the nca complexity probe, 360).
        json: write all statistics to this new file.
        zipf: a new PNG of the rank-frequency curves with their fitted slopes.
        labels: names of the corpora in the --zipf legend, one per directory (default: directory names).
    """
    from nca.analysis.token_stats import corpus_stats_and_counts, line, zipf_plot

    if labels is not None and len(labels) != len(dirs):
        raise UsageError(f"{len(labels)} --labels for {len(dirs)} corpora; give one label per directory")
    for flag, path in (("--json", json), ("--zipf", zipf)):
        if path is not None and Path(path).exists():  # outputs are never overwritten
            raise UsageError(f"{path} already exists; choose another {flag}")
    with usage_errors(FileNotFoundError, ValueError):
        results = [corpus_stats_and_counts(d, max_rows, seed, top_k, windows, window) for d in dirs]
    stats = [s for s, _ in results]
    for s in stats:
        print(line(s))
    if zipf:
        Path(zipf).parent.mkdir(parents=True, exist_ok=True)
        names = labels or [Path(s["dir"]).name for s, _ in results]
        zipf_plot([(label, s["kind"], c) for label, (s, c) in zip(names, results)], Path(zipf))
        print(f"wrote {zipf}")
    if json:
        Path(json).parent.mkdir(parents=True, exist_ok=True)
        Path(json).write_text(json_module.dumps(stats, indent=2))
        print(f"wrote {json}")
    return 0


def main(argv: list[str]) -> int:
    return parsing.run(corpus_statistics, argv, "nca token-stats", positional="dirs")
