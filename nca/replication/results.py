"""From finished runs to the report: validation curves of every stage-2 run, the comparisons the paper makes
(docs/paper.md §8), the carried share of the model, the optional band-transfer picture and induction section.
"""

from __future__ import annotations

import json
from pathlib import Path

from nca.analysis.curves import load_scalars
from nca.analysis.report import build_report, write_report
from nca.replication.config import PAPER_DOMAIN, Study
from nca.replication.plan import Run, arm_labels

TAG = "val/ppl"


def comparisons(labels: list[str]) -> list[tuple[str, str]]:
    """(method, baseline) pairs: every arm against scratch; each NCA band against the other stage-1 sources;
    each re-init ablation against the NCA arm it ablates (a positive difference = the part carried the benefit)."""
    pairs = [(label, "scratch") for label in labels if label != "scratch"]
    bands = [label for label in labels if label.startswith("nca-") and "reinit" not in label]
    for nca in bands:
        pairs += [(nca, other) for other in ("c4", "dyck", "c4_10x", "c4_noreinit") if other in labels]
    for label in labels:
        if "reinit" in label:
            pairs.append((label, label.rsplit("-", 1)[0]))
    return pairs


def stage2_curves(runs: list[Run], out: Path, labels: list[str]) -> dict:
    curves: dict = {}
    for run in runs:
        if run.stage == 2:
            curves.setdefault(run.domain, {label: {} for label in labels})[run.source][run.seed] = \
                load_scalars(run.directory(out), TAG)
    return {d: {a: s for a, s in arms.items() if s} for d, arms in curves.items()}


def carried_share(study: Study, vocab_size: int) -> dict:
    """Parameters carried across the transition (blocks + final norm) vs the stage-2 model's total."""
    import torch
    from litgpt.model import GPT

    from nca.lit_modules.causal_lm import build_config

    config = build_config({**study.model, "block_size": max(study.stage1.seq_len, study.stage2.seq_len)}, vocab_size)
    with torch.device("meta"):
        model = GPT(config)
    total = sum(p.numel() for p in model.parameters())
    fresh = model.transformer.wte.weight.numel() + model.lm_head.weight.numel()
    return {"total": total, "carried": total - fresh, "share": round((total - fresh) / total, 4)}


def band_transfer_section(study: Study, runs: list[Run], out: Path) -> list[str]:
    """The band-transfer picture (nca.analysis.band_transfer) when several bands ran; nothing otherwise."""
    if len(study.bands) < 2:
        return []
    try:
        from nca.analysis import band_transfer
    except ImportError:
        return ["## Band transfer", "", "Several bands ran, but `nca.analysis.band_transfer` is not available here."]
    from nca.analysis.band_transfer import RunLabel

    labelled = {}
    for run in runs:
        if run.stage != 2 or "reinit" in run.source or not (run.source == "scratch" or run.source.startswith("nca-")):
            continue
        band = "scratch" if run.source == "scratch" else run.source.removeprefix("nca-").replace("plus", "+")
        labelled[RunLabel(run.domain, band, run.seed)] = run.directory(out)
    table = band_transfer.transfer_table(labelled, TAG)
    band_transfer.plot(table, {}, out / "band-transfer.png")
    (out / "band-transfer.json").write_text(json.dumps(table, indent=2, default=str) + "\n")
    lines = ["## Band transfer", "", "![band transfer](band-transfer.png)", "",
             "| domain | band | seeds | change in final ppl (mean, 95% half-width) | speed-up | never reached |",
             "|---|---|---|---|---|---|"]
    for row in table["summary"]:
        change, up = row["final_change"], row["speedup"]
        fmt = lambda d, scale=1.0: "n/a" if d["mean"] is None else (  # noqa: E731
            f"{d['mean'] * scale:+.2f}" + ("" if d["ci95"] is None else f" ± {d['ci95'] * scale:.2f}"))
        lines.append(f"| {row['domain']} | {row['band']} | {len(row['seeds'])} | {fmt(change, 100)}% | {fmt(up)} | "
                     f"{row['never_reached']} |")
    return lines


def build(study: Study, runs: list[Run], out: Path, vocab_size: int, induction_lines: list[str]) -> list[Path]:
    """Write the report of a finished study into ``out``."""
    labels = arm_labels(study)
    curves = stage2_curves(runs, out, labels)
    share = carried_share(study, vocab_size)
    meta = {
        "arms": ", ".join(labels), "domains": ", ".join(f"{d} (paper: {PAPER_DOMAIN[d]})" for d in study.domains),
        "seeds": ", ".join(map(str, study.seeds)), "model": json.dumps(study.model, sort_keys=True),
        "stage-2 vocabulary": f"{vocab_size} ids (byte-level BPE trained on the study's corpora)",
        "carried share": f"{share['carried']:,} of {share['total']:,} parameters ({100 * share['share']:.1f}%) "
                         "are carried from stage 1",
        "stage 1": f"{study.stage1.steps} steps x {study.stage1.batch_size} x {study.stage1.seq_len} tokens, lr {study.stage1.lr}",
        "stage 2": f"{study.stage2.steps} steps x {study.stage2.batch_size} x {study.stage2.seq_len} tokens, lr {study.stage2.lr}",
        "device": study.device,
    }
    report = build_report(curves, comparisons(labels), meta)
    report["carried"] = share
    extra = [*band_transfer_section(study, runs, out), "", *induction_lines, "", "## Paper's numbers",
             "", "Paper columns are the 1.6B model of docs/paper.md §8 (final validation perplexity and speed-up); "
             "only the direction is comparable with a small model. Domains here are offline stand-ins "
             "(web text: an OpenWebText sample, math: math documentation, code: the Python standard library)."]
    return write_report(report, curves, out, extra)
