"""``nca curves``: TensorBoard curves of runs on one plot, their final values and the paper's convergence
speed-up over a baseline (the library: nca.analysis.curves).

    nca curves --runs scratch=runs/scratch nca=runs/from_nca --baseline scratch --tag val/ppl --out curves.png
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal, Optional

from nca.cli import parsing
from nca.cli.errors import refuse_existing, usage_errors


def _fmt(v: float | None, spec: str) -> str:
    return "never" if v is None else format(v, spec)


def plot_curves(runs: list[str], baseline: Optional[str] = None, tag: str = "val/ppl",
                x: Literal["step", "tokens"] = "step", out: str = "curves.png",
                y_scale: Literal["auto", "log", "linear"] = "auto") -> int:
    """Plot TensorBoard curves of runs and tabulate final values and speed-ups.

    Args:
        runs: NAME=DIR items, a DIR being runs/<name> (its version_* merged) or runs/<name>/version_N.
        baseline: the run the speed-up is measured against (default: the first).
        tag: the scalar compared (lower is better).
        x: x axis: optimizer steps, or tokens (train/tokens_seen).
        out: the PNG; the table goes to the same name with .json (neither may exist yet).
        y_scale: auto: log for perplexity tags (.../ppl), linear for the rest.
    """
    from nca.analysis import curves as lib

    png = Path(out)
    refuse_existing([png, png.with_suffix(".json")])
    with usage_errors():
        named = lib.parse_runs(runs)
        baseline = baseline or next(iter(named))
        if baseline not in named:
            raise ValueError(f"--baseline {baseline!r} is not one of the --runs names: {', '.join(named)}")
        rows = lib.table(named, baseline, tag)
        png.parent.mkdir(parents=True, exist_ok=True)
        lib.plot(named, baseline, tag, x, png, y_scale)
    print(f"{tag}, speed-up vs {baseline} (steps for {baseline} to reach its final value / steps for the run)")
    print(f"{'run':<16} {'final step':>10} {'final':>10} {'steps to it':>12} {'speed-up':>9}")
    for r in rows:
        print(f"{r['run']:<16} {r['final_step']:>10} {r['final']:>10.4f} "
              f"{_fmt(r['steps_to_baseline_final'], '.1f'):>12} {_fmt(r['speedup'], '.2f'):>9}")
    for r in rows:  # strict JSON has no infinity (a run already below the target at step 0)
        if r["speedup"] is not None and math.isinf(r["speedup"]):
            r["speedup"] = "inf"
    table = png.with_suffix(".json")
    table.write_text(json.dumps({"tag": tag, "baseline": baseline, "x": x, "runs": rows}, indent=2))
    print(f"wrote {png} and {table}")
    return 0


def main(argv: list[str]) -> int:
    return parsing.run(plot_curves, argv, "nca curves")
