"""Statistics of token corpora in the shared shard format, to set NCA bands side by side with text.

Per corpus: rows and tokens read, distinct ids, unigram entropy (bits), the most frequent ids, the gzip
ratio of windows (``nca.automaton.complexity.gzip_ratio``, windows as long as the ``nca complexity`` probe, NCA
delimiters removed, so the numbers compare with the bands), for NCA corpora the delimiter fraction, and the
Zipf slope: the least-squares slope of log frequency against log rank over ranks ``ZIPF_RANKS`` (10 to 1000,
clipped to the ids seen; the head and the long tail of singletons bend away from a power law). Natural text
sits near -1; ``--zipf PNG`` draws the rank-frequency curves of all corpora on one log-log plot.

``nca token-stats`` (nca/cli/token_stats.py) prints them from the command line:

    nca token-stats data/nca-50plus data/text_cache/owt --max_rows 10000 --json stats.json --zipf zipf.png --labels nca-50+ owt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nca.datamodules.shards import TokenShards
from nca.automaton.complexity import COMPLEXITY_FRAMES, gzip_ratio
from nca.automaton.config import NCAConfig
from nca.automaton.tokenize import PatchTokenizer
from nca.analysis.figures import pyplot, save_figure

_CHUNK = 1024  # rows counted per bincount
ZIPF_RANKS = (10, 1000)  # ranks (1 = most frequent id) the Zipf slope is fitted over


def rank_frequency(counts: np.ndarray) -> np.ndarray:
    """Relative frequencies of the ids seen, most frequent first (rank r = index r - 1)."""
    counts = np.asarray(counts, dtype=np.float64)
    seen = np.sort(counts[counts > 0])[::-1]
    return seen / seen.sum() if len(seen) else seen


def zipf_slope(freqs: np.ndarray, ranks: tuple[int, int] = ZIPF_RANKS) -> tuple[float | None, list[int]]:
    """Least-squares slope of log10 frequency on log10 rank over ranks [lo, hi] (clipped to the ids seen);
    None when fewer than 3 ranks fall in the range. Returns the slope and the ranks actually used."""
    lo, hi = ranks
    if not 1 <= lo < hi:
        raise ValueError(f"Zipf rank range must be 1 <= lo < hi, got {ranks}")
    hi = min(hi, len(freqs))
    if hi - lo + 1 < 3:
        return None, [lo, hi]
    r = np.arange(lo, hi + 1)
    slope = np.polyfit(np.log10(r), np.log10(freqs[lo - 1 : hi]), 1)[0]
    return float(slope), [lo, int(hi)]


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
    return corpus_stats_and_counts(directory, max_rows, seed, top_k, windows, window)[0]


def corpus_stats_and_counts(directory: str | Path, max_rows: int | None = None, seed: int = 0, top_k: int = 10,
                            windows: int = 256, window: int | None = None) -> tuple[dict, np.ndarray]:
    """``corpus_stats`` and the id counts behind it (for the rank-frequency plot)."""
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
    stats["zipf_slope"], stats["zipf_ranks"] = zipf_slope(rank_frequency(counts))
    return stats, counts


def zipf_plot(corpora: list[tuple[str, str, np.ndarray]], out: Path) -> None:
    """Rank-frequency curves of (label, kind, counts) on log-log axes, NCA solid and text dashed, each
    labelled with its fitted slope; the fitted rank range is shaded."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, kind, counts in corpora:
        freqs = rank_frequency(counts)
        slope, _ = zipf_slope(freqs)
        fit = "no fit" if slope is None else f"slope {slope:.2f}"
        ax.loglog(np.arange(1, len(freqs) + 1), freqs, ls="-" if kind == "nca" else "--", lw=1.4,
                  label=f"{label} [{kind}] ({fit})")
    ax.axvspan(*ZIPF_RANKS, color="k", alpha=0.06, lw=0, label=f"fit ranks {ZIPF_RANKS[0]}-{ZIPF_RANKS[1]}")
    ax.set_xlabel("rank of token id (1 = most frequent)")
    ax.set_ylabel("relative frequency")
    ax.set_title("rank-frequency (Zipf) of token corpora")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, out)


def line(s: dict) -> str:
    gz = "n/a" if s["gzip_median"] is None else f"{s['gzip_median']:.3f} ({s['gzip_windows']} x {s['gzip_window']})"
    top = " ".join(f"{t['id']}:{t['freq']:.3f}" for t in s["top"][:5])
    delim = "" if s["delimiter_frac"] is None else f" delimiters {s['delimiter_frac']:.2%}"
    return (f"{s['dir']} [{s['kind']}]: rows {s['rows']:,}/{s['corpus_rows']:,} tokens {s['tokens']:,} "
            f"distinct {s['distinct']:,}/{s['vocab_size']:,} entropy {s['entropy_bits']:.3f} bits "
            f"gzip {gz}{delim} zipf {'n/a' if s['zipf_slope'] is None else format(s['zipf_slope'], '.2f')} top {top}")
