"""The stage-1 learning report: did each stage-1 source teach its model anything? A transfer result means little
when stage 1 did not learn its data (a 10,002-id NCA vocabulary seen 9 times per id ends near uniform).

Per stage-1 source, over seeds: the final validation loss (``val/loss`` of the run's log) against uniform, ln of
the vocabulary the data uses (n^4 + 2 for the NCA format, 2k + 1 for Dyck, the stage-2 vocabulary for C4), and
against the reference a learner must beat (uniform; for the NCA format the layout alone: ln n^4 per patch target,
0 per delimiter, the loss iid random tokens allow). For the NCA-format sources, the slope of the per-frame
validation loss over whole frames 1.. (negative = the loss falls as more frames are seen in context,
``nca.analysis.icl.nca_summary``) on the run's own validation rows, and for NCA the dynamics gain over its
shuffled control. The flag: a source "did not learn its data" when its mean validation loss is less than
``evaluation.learned_margin`` (10%) below its reference. Random tokens cannot beat theirs, so for them the flag
is expected.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

from nca.analysis.curves import load_scalars
from nca.analysis.stats import mean_interval
from nca.replication.arms import stage1_sources
from nca.replication.config import NCA_FAMILY, Study, rung_studies
from nca.replication.costs import source_vocab
from nca.replication.plan import Run

LEARNING_FILE = "replicate-learning.json"


def _datamodule(provenance):
    """The run's own DataModule, rebuilt from its checkpoint's record."""
    module, _, name = str(provenance.data_class).rpartition(".")
    args = dict(provenance.init_args)
    if isinstance(args.get("nca"), dict):
        args["nca"] = provenance.nca().cfg
    return getattr(importlib.import_module(module), name)(**args)


def frame_slope(run: Run, out: Path, sequences: int) -> dict:
    """Per-frame validation loss of an NCA-format stage-1 run on its own validation rows (stored beside the run)."""
    path = run.directory(out) / LEARNING_FILE
    settings = {"hash": run.hash, "sequences": sequences, "frames": "whole"}
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("settings") == settings:
            return stored["scores"]
    import torch

    from nca.analysis.icl import nca_summary, token_losses
    from nca.lit_modules.checkpoint import load_model

    loaded = load_model(run.directory(out) / "checkpoints" / "last.ckpt", "cpu", torch.float32)
    data = _datamodule(loaded.provenance)
    frame_len = data.tokenizer.frame_len
    rows = data.stream("val").rows(torch.arange(sequences)).cpu()
    rows = rows[:, : rows.shape[1] // frame_len * frame_len]  # whole frames: a cut last frame would skew the slope
    summary = nca_summary(token_losses(loaded.model, rows), frame_len)
    scores = {"frame_slope": summary["frame_slope"], "loss_by_frame": summary["loss_by_frame"]}
    path.write_text(json.dumps({"settings": settings, "scores": scores}, indent=2))
    return scores


def random_floor(seq_len: int, n: int) -> float:
    """The lowest loss iid random patch tokens allow: ln(n^4) on the supervised patch targets, 0 on delimiters
    (frames of the automaton's default grid and patch, as every study trains)."""
    from nca.automaton.tokenize import PatchTokenizer

    frame_len = PatchTokenizer(n_states=n).frame_len
    targets = [p % frame_len for p in range(frame_len, seq_len + 1)]  # row positions of the supervised targets
    patches = sum(1 for o in targets if o not in (0, frame_len - 1))
    return patches / max(1, len(targets)) * math.log(n**4)


def learning_report(study: Study, runs: list[Run], out: Path, stage2_vocab: int) -> dict:
    """{rung/source: {kind, seeds, val_loss, losses, uniform, reference, below_reference, frame_slope,
    dynamics_gain (NCA with a shuffled control), learned, note}}."""
    report = {}
    for rung, one in rung_studies(study):
        for source in stage1_sources(one):
            mine = [r for r in runs if r.stage == 1 and r.rung == rung and r.source == source.label]
            losses = [float(load_scalars(r.directory(out), "val/loss")[1][-1]) for r in mine]
            uniform = math.log(source_vocab(source, stage2_vocab))
            loss = mean_interval(losses)
            # the reference a learner must beat: uniform, or for the NCA format the layout alone (delimiters known)
            reference = random_floor(one.stage1.seq_len, source.n) if source.kind in NCA_FAMILY else uniform
            entry = {"kind": source.kind, "seeds": len(mine), "val_loss": loss.as_dict(), "uniform": uniform,
                     "reference": reference, "below_reference": 1 - loss.mean / reference, "frame_slope": None,
                     "losses": {str(r.seed): x for r, x in zip(mine, losses)}, "note": ""}
            if source.kind in NCA_FAMILY:
                slopes = [frame_slope(r, out, study.evaluation.learning_sequences)["frame_slope"] for r in mine]
                entry["frame_slope"] = mean_interval(slopes).as_dict()
            entry["learned"] = entry["below_reference"] >= study.evaluation.learned_margin
            if source.kind == "random":
                entry["note"] = "iid tokens: nothing to learn beyond the layout; expected"
            report[f"{rung}/{source.label}" if rung else source.label] = entry
        _dynamics(report, rung)
    return report


def _dynamics(report: dict, rung: str) -> None:
    """For each NCA source with a shuffled control of the same band and alphabet: the control's loss minus the
    NCA's, seed by seed (what the model learned of the dynamics beyond each sequence's token counts)."""
    prefix = f"{rung}/" if rung else ""
    for name, entry in report.items():
        control = report.get(name.replace(f"{prefix}nca-", f"{prefix}shuffled-", 1))
        if entry["kind"] == "nca" and name.startswith(prefix) and control is not None:
            seeds = sorted(set(entry["losses"]) & set(control["losses"]))
            if seeds:
                gain = mean_interval([control["losses"][s] - entry["losses"][s] for s in seeds])
                entry["dynamics_gain"] = gain.as_dict()


def _fmt(d: dict | None, spec: str) -> str:
    if d is None:
        return "n/a"
    return f"{d['mean']:{spec}}" + ("" if d["low"] is None else f" [{d['low']:{spec}}, {d['high']:{spec}}]")


def learning_section(report: dict, margin: float) -> list[str]:
    lines = ["## Stage 1: did it learn its data?", "",
             "Final validation loss of each stage-1 source (mean [95% interval] over seeds) against uniform (ln of the "
             "vocabulary its data uses) and against the reference a learner must beat: uniform for Dyck and C4, and for "
             "the NCA format the layout alone (ln n^4 per patch target, 0 per delimiter: what iid random tokens "
             "allow). For the NCA-format sources also the slope of the per-frame validation loss over whole frames "
             "1.. (nats per frame; negative = the loss falls as more frames are seen in context), and for NCA the "
             "dynamics gain: the shuffled control's loss minus NCA's (what was learned beyond each sequence's token "
             f"counts). A source whose loss is less than {100 * margin:.0f}% below its reference is flagged: a transfer "
             "result from it says little about pre-pre-training on data the model learned.", "",
             "| source | seeds | validation loss | uniform | reference | below reference | per-frame slope | "
             "dynamics gain | learned? |", "|---|---|---|---|---|---|---|---|---|"]
    flags = []
    for name, e in report.items():
        learned = "yes" if e["learned"] else "**NO**"
        lines.append(f"| {name} | {e['seeds']} | {_fmt(e['val_loss'], '.3f')} | {e['uniform']:.3f} | "
                     f"{e['reference']:.3f} | {100 * e['below_reference']:.1f}% | {_fmt(e['frame_slope'], '+.4f')} | "
                     f"{_fmt(e.get('dynamics_gain'), '+.4f')} | {learned}{' (' + e['note'] + ')' if e['note'] else ''} |")
        if not e["learned"] and e["kind"] != "random":
            flags.append(name)
    if flags:
        lines += ["", f"**Flag: stage 1 did not learn its data for {', '.join(flags)}** (validation loss less than "
                  f"{100 * margin:.0f}% below its reference). Their stage-2 comparisons test an almost untrained stage 1."]
    return lines
