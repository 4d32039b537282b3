"""``nca band-transfer``: the band-transfer picture and table from labelled stage-2 runs (nca.analysis.band_transfer)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from nca.analysis import band_transfer as bt


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="nca band-transfer",
        description="Final-perplexity change and convergence speed-up of stage-2 runs from NCA models of each "
                    "complexity band against scratch runs of the same seed, per domain (PNG + JSON).")
    p.add_argument("--runs", nargs="+", required=True, metavar="LABEL=DIR", help=bt.LABEL_HELP)
    p.add_argument("--out", required=True, type=Path, help="new directory for band_transfer.png and band_transfer.json")
    p.add_argument("--tag", default="val/ppl", help="scalar compared (lower is better)")
    p.add_argument("--corpus_ratio", nargs="*", default=[], metavar="DOMAIN=FILE_OR_NUMBER",
                   help="marks the domain corpus's own gzip ratio: a number or `nca complexity --file`'s complexity.json")
    a = p.parse_args(argv)
    png, js = a.out / "band_transfer.png", a.out / "band_transfer.json"
    taken = [str(x) for x in (png, js) if x.exists()]
    if taken:  # outputs are never overwritten
        print(f"error: {', '.join(taken)} already exist(s); choose another --out", file=sys.stderr)
        return 2
    try:
        runs = bt.parse_runs(a.runs)
        ratios = bt.parse_corpus_ratios(a.corpus_ratio)
        unknown = sorted(set(ratios) - {k.domain for k in runs})
        if unknown:
            raise ValueError(f"--corpus_ratio for {', '.join(unknown)}, which no --runs label names")
        table = bt.transfer_table(runs, a.tag)
        a.out.mkdir(parents=True, exist_ok=True)
        bt.plot(table, ratios, png)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    table["corpus_ratio"] = ratios
    print(f"{a.tag} vs scratch of the same seed, mean +- 95% t interval over seeds")
    print(f"{'domain':<10} {'band':<10} {'seeds':>5} {'final change %':>20} {'speed-up':>18}")
    for s in table["summary"]:
        never = f" ({s['never_reached']} never)" if s["never_reached"] else ""
        print(f"{s['domain']:<10} {s['band']:<10} {len(s['seeds']):>5} {_fmt(s['final_change'], 100, '.2f'):>20} "
              f"{_fmt(s['speedup'], 1, '.2f'):>18}{never}")
    js.write_text(json.dumps(_json_safe(table), indent=2))
    print(f"wrote {png} and {js}")
    return 0
