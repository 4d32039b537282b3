"""``nca band-transfer``: the band-transfer picture and table from labelled stage-2 runs (nca.analysis.band_transfer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from nca.analysis import band_transfer as bt
from nca.cli import parsing
from nca.cli.errors import refuse_existing, usage_errors


def _fmt(summary: dict, scale: float, spec: str) -> str:
    if summary["mean"] is None:
        return "n/a"
    ci = "" if summary["ci95"] is None else f" +- {summary['ci95'] * scale:{spec}}"
    return f"{summary['mean'] * scale:{spec}}{ci}"


def _json_safe(table: dict) -> dict:
    """Strict JSON has no infinity (a run already below scratch's final value at its first point)."""
    for r in table["runs"]:
        if isinstance(r.get("speedup"), float) and math.isinf(r["speedup"]):
            r["speedup"] = "inf"
    return table


def band_transfer(runs: list[str], out: str, tag: str = "val/ppl", corpus_ratio: list[str] = []) -> int:
    """Final-perplexity change and convergence speed-up of stage-2 runs from NCA models of each complexity
    band against scratch runs of the same seed, per domain (PNG + JSON).

    Args:
        runs: DOMAIN/BAND/SEED=DIR items, e.g. code/30-40/0=runs/code_b34_s0 or code/scratch/0=runs/code_scratch_s0
            (BAND scratch: the baseline runs of a domain).
        out: new directory for band_transfer.png and band_transfer.json (existing ones are never overwritten).
        tag: the scalar compared (lower is better).
        corpus_ratio: DOMAIN=FILE_OR_NUMBER items marking a domain corpus's own gzip ratio: a number or
            `nca complexity --file`'s complexity.json.
    """
    folder = Path(out)
    png, js = folder / "band_transfer.png", folder / "band_transfer.json"
    refuse_existing([png, js])
    with usage_errors():
        parsed = bt.parse_runs(runs)
        ratios = bt.parse_corpus_ratios(corpus_ratio)
        unknown = sorted(set(ratios) - {k.domain for k in parsed})
        if unknown:
            raise ValueError(f"--corpus_ratio for {', '.join(unknown)}, which no --runs label names")
        table = bt.transfer_table(parsed, tag)
        folder.mkdir(parents=True, exist_ok=True)
        bt.plot(table, ratios, png)
    table["corpus_ratio"] = ratios
    print(f"{tag} vs scratch of the same seed, mean +- 95% t interval over seeds")
    print(f"{'domain':<10} {'band':<10} {'seeds':>5} {'final change %':>20} {'speed-up':>18}")
    for s in table["summary"]:
        never = f" ({s['never_reached']} never)" if s["never_reached"] else ""
        print(f"{s['domain']:<10} {s['band']:<10} {len(s['seeds']):>5} {_fmt(s['final_change'], 100, '.2f'):>20} "
              f"{_fmt(s['speedup'], 1, '.2f'):>18}{never}")
    js.write_text(json.dumps(_json_safe(table), indent=2))
    print(f"wrote {png} and {js}")
    return 0


def main(argv: list[str]) -> int:
    return parsing.run(band_transfer, argv, "nca band-transfer")
