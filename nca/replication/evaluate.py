"""Induction and in-context-learning scores of every finished run (``nca.analysis.induction``, ``nca.analysis.icl``), for
the report: the top prefix-matching score after stage 1 and after stage 2, and the ICL score after stage 2 on
the domain's validation rows. Scores are stored beside each run (``replicate-eval.json``, keyed by the run's
hash and the evaluation settings) so a second call does not recompute them.
"""

from __future__ import annotations

import json
from pathlib import Path

from nca.analysis.stats import mean_interval
from nca.replication.config import Study
from nca.replication.plan import Run

EVAL_FILE = "replicate-eval.json"


def _scores(run: Run, out: Path, study: Study) -> dict:
    import torch

    from nca.analysis import icl, induction
    from nca.lit_modules.checkpoint import load_model

    seq_len = (study.stage1 if run.stage == 1 else study.stage2).seq_len
    block_len = max(2, min(32, seq_len // 2))
    early, late = study.evaluation.icl_positions
    settings = {"hash": run.hash, "block_len": block_len, "sequences": study.evaluation.induction_sequences,
                "icl": [early, late], "documents": study.evaluation.icl_documents}
    path = run.directory(out) / EVAL_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("settings") == settings:
            return stored["scores"]
    torch.manual_seed(0)
    loaded = load_model(run.directory(out) / "checkpoints" / "last.ckpt", "cpu", torch.float32)
    model = loaded.model
    tokens = induction.repeated_random_tokens(induction.candidate_ids(model.config.vocab_size), block_len, 2,
                                              study.evaluation.induction_sequences, seed=0)
    report = induction.induction_report(model, tokens, block_len)
    scores = {"top_prefix_matching": report["top_prefix_matching"]["score"],
              "induction_heads": len(report["induction_heads"]), "icl_score": None}
    if run.stage == 2 and late <= seq_len:
        from nca.datamodules.shards import TokenShards
        from nca.datamodules.text import TextDataModule

        data = TextDataModule(**loaded.provenance.init_args)
        shards = TokenShards(data.split_path("val"))
        n = min(len(shards), study.evaluation.icl_documents)
        rows = torch.stack([torch.tensor(shards.row(i), dtype=torch.int64) for i in range(n)])
        scores["icl_score"] = icl.icl_summary(icl.token_losses(model, rows), early, late)["icl_score"]
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
        groups.setdefault((run.stage, run.domain or "-", run.source), []).append(scores[run.id])
    early, late = study.evaluation.icl_positions
    lines = ["## Induction heads and in-context learning", "",
             f"Top prefix-matching score (any layer/head) on {study.evaluation.induction_sequences} random blocks "
             f"repeated twice, and the ICL score loss(t={late}) - loss(t={early}) on the domain's validation rows "
             "(more negative = more in-context learning), mean [95% interval] over seeds. Stage-1 models are scored "
             "in their own vocabulary; ICL after stage 1 is not measured (each source has its own data and ids).", "",
             "| stage | domain | arm / source | seeds | top prefix matching | induction heads | ICL score |",
             "|---|---|---|---|---|---|---|"]
    for (stage, domain, source), items in groups.items():
        lines.append(f"| {stage} | {domain} | {source} | {len(items)} | "
                     f"{_cell([s['top_prefix_matching'] for s in items])} | "
                     f"{_cell([s['induction_heads'] for s in items], '.1f')} | {_cell([s['icl_score'] for s in items])} |")
    if late > study.stage2.seq_len:
        lines += ["", f"ICL not measured: stage-2 rows have {study.stage2.seq_len} tokens, fewer than t={late} "
                  "(set evaluation.icl_positions)."]
    return lines
