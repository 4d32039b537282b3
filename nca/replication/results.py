"""From finished runs to the report: validation curves of every stage-2 run, the comparisons the paper makes
(docs/paper.md §8) and the controls add, the recipe beside the paper's, the stage-1 learning report, the effect
against model size of a ladder, the optional band-transfer picture and induction section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from nca.analysis.curves import load_scalars
from nca.analysis.report import build_report, key_name, write_report
from nca.replication.arms import comparisons
from nca.replication.config import PAPER_DOMAIN, Study, rung_studies
from nca.replication.costs import human, study_sizes
from nca.replication.plan import Run, arm_labels

TAG = "val/ppl"


def curve_key(rung: str, domain: str) -> str:
    return f"{rung}/{domain}" if rung else domain


def stage2_curves(runs: list[Run], out: Path, labels: list[str]) -> dict:
    """{key: {arm: {seed: (steps, ppl)}}}, key = domain or rung/domain, arms in the study's order."""
    curves: dict = {}
    for run in runs:
        if run.stage == 2:
            key = curve_key(run.rung, run.domain)
            curves.setdefault(key, {label: {} for label in labels})[run.source][run.seed] = \
                load_scalars(run.directory(out), TAG)
    return {k: {a: s for a, s in arms.items() if s} for k, arms in curves.items()}


def carried_share(study: Study, vocab_size: int) -> dict:
    """Parameters carried across the transition (blocks + final norm) vs the stage-2 model's total."""
    s = study_sizes(study, vocab_size)
    return {"total": s.total, "carried": s.carried, "share": round(s.share, 4)}


def ladder_section(study: Study, report: dict, out: Path, vocab_size: int) -> list[str]:
    """The effect against model size: every comparison with scratch and each NCA arm against its shuffled
    control, per domain, with intervals (a picture per domain and a table)."""
    if not study.rungs:
        return []
    from nca.analysis.report_figures import plot_ladder

    lines = ["## The ladder: effect against model size", ""]
    sizes = {rung: study_sizes(one, vocab_size).total for rung, one in rung_studies(study)}
    for domain in study.domains:
        series: dict[str, list] = {}
        rows = []
        for rung in sizes:
            for d in report["domains"].get(curve_key(rung, domain), {}).get("differences", []):
                if d["baseline"] == "scratch" or d["baseline"].startswith("shuffled-"):
                    name = f"{d['method']} - {d['baseline']}"
                    series.setdefault(name, []).append((sizes[rung], d["relative_percent"]))
                    r = d["relative_percent"]
                    shown = f"{r['mean']:+.2f}%" + ("" if r["low"] is None else f" [{r['low']:+.2f}, {r['high']:+.2f}]")
                    said = d["verdict"].split(f" on {key_name(curve_key(rung, domain))}: ", 1)[-1]
                    rows.append(f"| {rung} | {human(sizes[rung])} | {name} | {shown} | {said} |")
        if not series:
            continue
        picture = f"ladder-{domain}.png"
        plot_ladder(series, f"{key_name(domain)}: change in final perplexity vs scratch / shuffled NCA", out / picture)
        lines += [f"![ladder]({picture})", "", "| rung | parameters | comparison | change [95% interval] | verdict |",
                  "|---|---|---|---|---|", *rows, ""]
    return lines


def band_transfer_section(study: Study, runs: list[Run], out: Path) -> list[str]:
    """The band-transfer picture (nca.analysis.band_transfer) when several bands ran; nothing otherwise."""
    if len(study.bands) < 2 or study.rungs:
        return []
    try:
        from nca.analysis import band_transfer
    except ImportError:
        return ["## Band transfer", "", "Several bands ran, but `nca.analysis.band_transfer` is not available here."]
    from nca.analysis.band_transfer import RunLabel

    labelled = {}
    for run in runs:
        if run.stage != 2 or run.kind not in ("scratch", "nca") or re.search(r"-n\d+$", run.source):
            continue  # only scratch and the paper's alphabet compare bands
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


def _meta(study: Study, labels: list[str], vocab_size: int) -> dict:
    meta = {"arms": ", ".join(labels), "domains": ", ".join(f"{d} (paper: {PAPER_DOMAIN[d]})" for d in study.domains),
            "seeds": ", ".join(map(str, study.seeds)),
            "stage-2 vocabulary": f"{vocab_size} ids" + (f" ({study.vocab.tokenizer})" if study.vocab.tokenizer else
                                                         " (byte-level BPE trained on the study's corpora)")}
    for rung, one in rung_studies(study):
        share, b1, b2 = carried_share(one, vocab_size), one.stage1, one.stage2
        prefix = f"{rung} " if rung else ""
        meta[f"{prefix}model"] = json.dumps(one.model, sort_keys=True)
        meta[f"{prefix}carried share"] = (f"{share['carried']:,} of {share['total']:,} parameters "
                                          f"({100 * share['share']:.1f}%) are carried from stage 1")
        meta[f"{prefix}stage 1"] = f"{b1.steps} steps x {b1.batch_size} x {b1.seq_len} tokens, lr {b1.lr:g}"
        meta[f"{prefix}stage 2"] = (f"{b2.steps} steps x {b2.batch_size} x {b2.seq_len} tokens, lr "
                                    + ", ".join(f"{d} {study.domain_lr.get(d, b2.lr):g}" for d in one.domains))
    meta["device"] = study.device
    return meta


def build(study: Study, runs: list[Run], out: Path, vocab: str | Path) -> list[Path]:
    """Write the report of a finished study into ``out`` (``vocab``: the stage-2 tokenizer)."""
    from nca.datamodules.tokenizers import load_tokenizer
    from nca.replication.evaluate import induction_section
    from nca.replication.learning import learning_report, learning_section
    from nca.replication.recipe import markdown as recipe_markdown

    vocab_size = load_tokenizer(vocab).vocab_size
    labels = arm_labels(study)
    curves = stage2_curves(runs, out, labels)
    report = build_report(curves, comparisons(labels), _meta(study, labels, vocab_size))
    report["carried"] = {rung or "study": carried_share(one, vocab_size) for rung, one in rung_studies(study)}
    report["stage1_learning"] = learning_report(study, runs, out, vocab_size)
    first = ["## Recipe", ""]
    for rung, one in rung_studies(study):
        for domain in one.domains:
            first += [*recipe_markdown(one, domain, vocab_size, f" of {rung}" if rung else ""), ""]
    first += [*learning_section(report["stage1_learning"], study.evaluation.learned_margin), ""]
    first += ladder_section(study, report, out, vocab_size)
    induction = induction_section(study, runs, out) if study.evaluation.induction else []
    extra = [*band_transfer_section(study, runs, out), "", *induction, "", "## Paper's numbers",
             "", "Paper columns are the 1.6B model of docs/paper.md §8 (final validation perplexity and speed-up); "
             "only the direction is comparable with a small model. Domains here are offline stand-ins "
             "(web text: an OpenWebText sample, math: math documentation, code: the Python standard library)."]
    return write_report(report, curves, out, extra, first)
