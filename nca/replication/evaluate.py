"""Induction and in-context-learning scores of every finished run (``nca.analysis.induction``, ``nca.analysis.icl``),
for the report: the top prefix-matching score after stage 1 and after stage 2, and the windowed ICL score after
stage 2 on the domain's validation rows, with its per-run standard error. Scores are stored beside each run
(``replicate-eval.json``, keyed by the run's hash and the evaluation settings) so a second call does not
recompute them.

ICL (Olsson et al. 2022; docs/paper.md §10): mean loss over positions 450-550 minus the mean over 40-60, per
validation row, averaged over rows; its standard error is over rows (one run's measurement noise). Rows shorter
than 551 tokens scale both windows by the same factor (``icl_windows``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nca.analysis.stats import mean_interval
from nca.replication.config import Study, rung_studies
from nca.replication.plan import Run

EVAL_FILE = "replicate-eval.json"


def scaled_windows(windows: list[list[int]], length: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The ICL windows (positions t of loss_t, inclusive) fitted to rows giving loss_t for t = 1..length: both
    scaled by length / (end of the late window) when the rows are shorter; None when they cannot be told apart."""
    (a, b), (c, d) = windows
    scale = min(1.0, length / d)
    early = (max(1, round(a * scale)), max(1, round(b * scale)))
    late = (max(1, round(c * scale)), min(length, max(1, round(d * scale))))
    return (early, late) if early[1] < late[0] else None


def windowed_icl(losses, early: tuple[int, int], late: tuple[int, int]) -> dict:
    """Per row: mean loss_t over the late window - over the early one; mean and standard error over rows."""
    late_mean = losses[:, late[0] - 1 : late[1]].nanmean(1)
    early_mean = losses[:, early[0] - 1 : early[1]].nanmean(1)
    per_row = (late_mean - early_mean).double()
    n = len(per_row)
    se = float(per_row.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return {"icl": float(per_row.mean()), "se": se, "rows": n, "early": list(early), "late": list(late)}


def uniform_floor(block_len: int) -> float:
    """Prefix-matching score of uniform attention on a block repeated twice: query i of the second copy (0-based)
    spreads its mass over i + 1 keys, one of them the target."""
    return sum(1.0 / (i + 1) for i in range(block_len, 2 * block_len)) / block_len


def _scores(run: Run, out: Path, study: Study) -> dict:
    import torch

    from nca.analysis import icl, induction
    from nca.lit_modules.checkpoint import load_model

    seq_len = (study.stage1 if run.stage == 1 else study.stage2).seq_len
    block_len = max(2, min(32, seq_len // 2))
    windows = scaled_windows(study.evaluation.icl_windows, seq_len)
    settings = {"hash": run.hash, "version": 2, "block_len": block_len, "sequences": study.evaluation.induction_sequences,
                "icl": windows, "documents": study.evaluation.icl_documents}
    path = run.directory(out) / EVAL_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("settings") == json.loads(json.dumps(settings)):
            return stored["scores"]
    torch.manual_seed(0)
    loaded = load_model(run.directory(out) / "checkpoints" / "last.ckpt", "cpu", torch.float32)
    model = loaded.model
    candidates = induction.candidate_ids(model.config.vocab_size)
    block_len = min(block_len, len(candidates))  # a small NCA alphabet has fewer ids than a block
    tokens = induction.repeated_random_tokens(candidates, block_len, 2, study.evaluation.induction_sequences, seed=0)
    report = induction.induction_report(model, tokens, block_len)
    scores = {"top_prefix_matching": report["top_prefix_matching"]["score"], "block_len": block_len,
              "induction_heads": len(report["induction_heads"]), "icl": None}
    if run.stage == 2 and windows is not None:
        from nca.datamodules.shards import TokenShards
        from nca.datamodules.text import TextDataModule

        data = TextDataModule(**loaded.provenance.init_args)
        shards = TokenShards(data.split_path("val"))
        n = min(len(shards), study.evaluation.icl_documents)
        rows = torch.stack([torch.tensor(shards.row(i), dtype=torch.int64) for i in range(n)])
        scores["icl"] = windowed_icl(icl.token_losses(model, rows), *windows)
    path.write_text(json.dumps({"settings": settings, "scores": scores}, indent=2))
    return scores


def _cell(values: list[float | None], spec: str = ".3f") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return mean_interval(values).format(spec)


def induction_section(study: Study, runs: list[Run], out: Path) -> list[str]:
    """Markdown lines of the induction/ICL section (a one-line note when the analysis package lacks them)."""
    try:
        from nca.analysis import icl, induction  # noqa: F401
    except ImportError:
        return ["## Induction heads and in-context learning", "",
                "Not measured: `nca.analysis.induction` / `nca.analysis.icl` are not available in this checkout."]
    scores = {run.id: _scores(run, out, study) for run in runs}
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run.rung, run.stage, run.domain or "-", run.source), []).append(scores[run.id])
    windows = {rung: scaled_windows(study.evaluation.icl_windows, s.stage2.seq_len) for rung, s in rung_studies(study)}
    lengths = sorted({s["block_len"] for s in scores.values() if s.get("block_len")}, reverse=True)
    floors = ", ".join(f"{uniform_floor(n):.4f} with blocks of {n}" for n in lengths)
    shown = ", ".join(f"{r + ': ' if r else ''}loss over t in {w[1][0]}-{w[1][1]} minus {w[0][0]}-{w[0][1]}"
                      for r, w in windows.items() if w is not None)
    lines = ["## Induction heads and in-context learning", "",
             f"Top prefix-matching score (any layer/head) on {study.evaluation.induction_sequences} random blocks "
             f"repeated twice (blocks of 32 ids, fewer where the rows or the vocabulary are shorter); a head that attends "
             f"uniformly scores {floors} (the uniform-attention floor: scores "
             "near it mean no prefix matching; an induction head scores > 0.4). The windowed ICL score after "
             "stage 2 on the domain's "
             f"validation rows ({shown or 'rows too short'}; more negative = more in-context learning; "
             f"Olsson et al.: 450-550 minus 40-60, scaled to the row length). Mean [95% interval] over seeds; the "
             "last column is the median over runs of one run's standard error over its rows. Stage-1 models are "
             "scored in their own vocabulary.", "",
             f"| {'rung | ' if study.rungs else ''}stage | domain | arm / source | seeds | top prefix matching | "
             "induction heads | ICL score | per-run SE |", "|---" * (9 if study.rungs else 8) + "|"]
    for (rung, stage, domain, source), items in groups.items():
        icls = [s["icl"] for s in items if s.get("icl")]
        ses = sorted(i["se"] for i in icls if i["se"] is not None and math.isfinite(i["se"]))
        lines.append(f"| {rung + ' | ' if study.rungs else ''}{stage} | {domain} | {source} | {len(items)} | "
                     f"{_cell([s['top_prefix_matching'] for s in items])} | "
                     f"{_cell([s['induction_heads'] for s in items], '.1f')} | {_cell([i['icl'] for i in icls])} | "
                     f"{f'{ses[len(ses) // 2]:.3f}' if ses else 'n/a'} |")
    return lines
