"""The recipe table: a study's ratios beside the paper's (docs/paper.md §4-§6), so a preset that departs from the
paper shows where and by how much. Printed in the report and, with every run's cost, by ``nca replicate --plan``
(``plan_lines``).

Paper values: stage 1 at lr 1e-4 for 164M NCA tokens (10,002 ids; 10% warm-up in the release), stage 2 with
GPT-2's 50,257 ids at lr 5e-4 for 9B web-text and 4.2B math tokens (10% warm-up) and 2e-4 for 12.6B code tokens
(750 warm-up steps of 524,288 tokens), on the 1.6B model.
"""

from __future__ import annotations

from nca.replication.arms import stage1_sources
from nca.replication.config import NCA_FAMILY, PAPER_DOMAIN, Study, rung_studies
from nca.replication.costs import human, json_model, run_cost, sizes, source_vocab, study_sizes
from nca.replication.plan import Run, stage1_steps, stage2_lr

PAPER_MODEL = {"n_layer": 24, "n_embd": 2048, "n_head": 32, "head_size": 64, "n_query_groups": 32,
               "intermediate_size": 8192}  # configs/model/1.6b.yaml
PAPER_STAGE1 = {"lr": 1e-4, "tokens": 164e6, "vocab": 10_002, "warmup": 0.1}
PAPER_STAGE2 = {"owt": {"lr": 5e-4, "tokens": 9e9, "warmup": 0.1}, "math": {"lr": 5e-4, "tokens": 4.2e9, "warmup": 0.1},
                "code": {"lr": 2e-4, "tokens": 12.6e9, "warmup": 750 * 524_288 / 12.6e9}}
GPT2_VOCAB = 50_257


def paper_values(domain: str) -> dict[str, float]:
    s = sizes(PAPER_MODEL, 1024, GPT2_VOCAB)
    p1, p2 = PAPER_STAGE1, PAPER_STAGE2[domain]
    return {"lr_ratio": p1["lr"] / p2["lr"], "nca_per_id": p1["tokens"] / p1["vocab"],
            "nca_per_carried": p1["tokens"] / s.carried, "stage_ratio": p2["tokens"] / p1["tokens"],
            "stage2_per_param": p2["tokens"] / s.total, "carried_share": s.share,
            "warmup1": p1["warmup"], "warmup2": p2["warmup"]}


def recipe(study: Study, domain: str, vocab: int | None = None) -> list[dict]:
    """Rows {quantity, ours, paper} for one (rung) study and stage-2 domain; ``vocab``: the stage-2 vocabulary
    (default: the study's planned size)."""
    vocab = vocab or study.vocab.size
    b1, b2 = study.stage1, study.stage2
    lr2, _ = stage2_lr(study, domain)
    target = study_sizes(study, vocab)
    nca = [s for s in stage1_sources(study) if s.kind in NCA_FAMILY]
    tokens1 = b1.steps * b1.batch_size * b1.seq_len
    tokens2 = b2.steps * b2.batch_size * b2.seq_len
    per_id = ", ".join(dict.fromkeys(f"{tokens1 / source_vocab(s, study.vocab.size):,.0f} (n={s.n})" for s in nca)) or "no NCA arm"
    paper = paper_values(domain)
    long_c4 = [s for s in stage1_sources(study) if stage1_steps(study, s) != b1.steps]
    rows = [
        ("stage-1 / stage-2 learning rate", f"{b1.lr:g} / {lr2:g} = {b1.lr / lr2:.3g}", f"1e-4 / {PAPER_STAGE2[domain]['lr']:g} = {paper['lr_ratio']:.3g}"),
        ("NCA tokens per NCA vocabulary id", per_id, f"{paper['nca_per_id']:,.0f} (n=10)"),
        ("NCA tokens per carried parameter", f"{tokens1 / target.carried:.3g}", f"{paper['nca_per_carried']:.3g}"),
        ("stage-2 / stage-1 tokens", f"{human(tokens2)} / {human(tokens1)} = {tokens2 / tokens1:.3g}"
         + (" (c4_10x: 1/10 of that)" if long_c4 else ""), f"{paper['stage_ratio']:.3g}"),
        ("stage-2 tokens per parameter", f"{tokens2 / target.total:.3g}", f"{paper['stage2_per_param']:.3g}"),
        ("carried share of the stage-2 model", f"{100 * target.share:.1f}% of {human(target.total)}",
         f"{100 * paper['carried_share']:.1f}% of 1.82B"),
        ("warm-up (stage 1, stage 2)", f"{100 * b1.warmup_steps / b1.steps:.0f}%, {100 * b2.warmup_steps / b2.steps:.0f}%",
         f"{100 * paper['warmup1']:.0f}% (release), {100 * paper['warmup2']:.0f}%"),
    ]
    return [{"quantity": q, "ours": o, "paper": p} for q, o, p in rows]


def markdown(study: Study, domain: str, vocab: int | None = None, title: str = "") -> list[str]:
    lines = [f"Recipe{title} against the paper's (1.6B model, {PAPER_DOMAIN[domain]}; docs/paper.md §4-§6):", "",
             "| quantity | this study | paper |", "|---|---|---|"]
    return lines + [f"| {r['quantity']} | {r['ours']} | {r['paper']} |" for r in recipe(study, domain, vocab)]


def plan_lines(study: Study, runs: list[Run]) -> list[str]:
    """The plan as text: per rung its model, the recipe beside the paper's, and every run with its tokens, FLOPs and
    GPU-hours; then the totals. Reads nothing but the study."""
    c = study.costs
    lines = [f"Plan: {len(runs)} runs; GPU-hours at {100 * c.mfu:.0f}% MFU of {c.peak_tflops:g} TFLOP/s ({c.gpu}); "
             "FLOPs 6N + 12LdT per training token, 2N + 4LdT per validation token."]
    total_flops = total_hours = 0.0
    for rung, one in rung_studies(study):
        vocabs = {s.label: source_vocab(s, one.vocab.size) for s in stage1_sources(one)}
        mine = [r for r in runs if r.rung == rung]
        target = study_sizes(one, one.vocab.size)
        lines += ["", f"## {rung or 'the study'}: {json_model(one.model)}, {human(target.total)} parameters with "
                  f"{one.vocab.size:,} ids ({human(target.carried)} carried, {100 * target.share:.1f}%)"
                  + (f", {one.gpus} GPUs per run" if one.gpus > 1 else ""), ""]
        for domain in one.domains:
            lines += [*markdown(one, domain), ""]
        lines += [f"{'run':<44} {'params':>8} {'tokens':>8} {'FLOPs':>9} {'GPU-h':>9}"]
        flops = hours = 0.0
        for run in mine:
            cost = run_cost(one, run, vocabs[run.source] if run.stage == 1 else one.vocab.size)
            flops, hours = flops + cost.flops, hours + cost.gpu_hours
            lines.append(f"{run.id:<44} {human(cost.params):>8} {human(cost.tokens):>8} {cost.flops:>9.3g} "
                         f"{cost.gpu_hours:>9.3g}")
        lines.append(f"{'total ' + (rung or ''):<44} {'':>8} {'':>8} {flops:>9.3g} {hours:>9.3g}  ({len(mine)} runs)")
        total_flops, total_hours = total_flops + flops, total_hours + hours
    lines += ["", f"All: {len(runs)} runs, {total_flops:.3g} FLOPs, {total_hours:,.1f} GPU-hours "
              f"({total_hours / 24:,.1f} GPU-days) at {100 * c.mfu:.0f}% MFU."]
    return lines
