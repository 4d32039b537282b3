"""``nca induction``: induction-head and in-context-learning numbers of checkpoints, as PNGs and one JSON.

    nca induction --ckpt runs/stage1/checkpoints/epoch=0-step=100.ckpt --ckpt runs/stage1/checkpoints/last.ckpt \
        --out induction/stage1                      # NCA checkpoints: held-out NCA rows
    nca induction --ckpt runs/owt/checkpoints/last.ckpt --data data/owt_val.jsonl --out induction/owt

Per checkpoint: prefix-matching (the headline) and TransformerLens "mul" scores on repeated random tokens,
OV copying scores, and the loss-by-position curve (text: ICL score = loss_500 - loss_50 on documents of
>= 501 tokens; NCA: mean loss per frame). Writes ``heads-<label>.png`` per checkpoint, ``loss_by_position.png``
and ``induction.json`` into ``--out``, which must not exist yet (outputs are never overwritten).
Definitions: docs/paper.md (analysis section); a worked example: docs/analysis.md.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nca.cli import parsing
from nca.cli.errors import UsageError, usage_errors


@dataclass
class Induction:
    """Induction-head scores (prefix matching, copying) and loss-by-position curves of checkpoints.

    Args:
        ckpt: checkpoints (.ckpt, FSDP dir, litgpt): --ckpt A B, or --ckpt A --ckpt B.
        out: output directory (must not exist yet).
        data: 'nca' (held-out NCA rows of the checkpoint's own data settings), a local text corpus (files,
            directory or glob read by nca.datamodules.text), or 'auto' = nca for NCA checkpoints.
        tokenizer: text tokenizer (default: the one the checkpoint recorded).
        text_field: field of JSON lines / parquet records holding the text.
        documents: text documents (of >= late + 1 tokens) to average over.
        early: ICL score = loss at token late minus loss at token early.
        late: the later token of the ICL score.
        sequences: NCA rows to average the per-frame loss over.
        seq_len: NCA row length (default: the checkpoint's recorded data seq_len).
        block_len: random tokens per block of the prefix-matching probe.
        repeats: times the block is repeated (2-3).
        probe_sequences: repeated random sequences to average over.
        threshold: prefix matching above which a copying head is an induction head.
        seed: seed of the probe sequences.
        device: cpu or cuda.
    """

    ckpt: list[str]
    out: str
    data: str = "auto"
    tokenizer: Optional[str] = None
    text_field: str = "text"
    documents: int = 32
    early: int = 50
    late: int = 500
    sequences: int = 32
    seq_len: Optional[int] = None
    block_len: int = 64
    repeats: int = 2
    probe_sequences: int = 16
    threshold: float = 0.4
    seed: int = 0
    device: str = "cpu"


def labels_for(paths: list[str]) -> list[str]:
    """Short unique names for file names and legends: the checkpoint's stem, numbered when they repeat."""
    stems = [re.sub(r"[^\w.=-]+", "_", Path(p).stem if Path(p).suffix == ".ckpt" else Path(p).name) for p in paths]
    seen = Counter(stems)
    counts: Counter[str] = Counter()
    out = []
    for stem in stems:
        counts[stem] += 1
        out.append(f"{stem}-{counts[stem]}" if seen[stem] > 1 else stem)
    return out


class TextCorpus:
    """Documents of a local corpus, tokenised once per tokenizer; also the token frequency table."""

    def __init__(self, source: str, text_field: str):
        from nca.datamodules.text import is_hf_name, resolve_files

        if is_hf_name(source):
            raise ValueError(f"--data {source!r} looks like a Hugging Face name; nca induction reads local files only")
        self.files = resolve_files(source)
        self.text_field = text_field
        self._cache: dict[str, tuple[list[list[int]], np.ndarray, int]] = {}

    def tokens(self, spec: str, length: int, limit: int):
        """(documents with >= length ids (at most limit), id counts over the documents read until then, eot id)."""
        if spec not in self._cache:
            from nca.datamodules.text import read_documents
            from nca.datamodules.tokenizers import load_tokenizer

            tok = load_tokenizer(spec)
            counts = np.zeros(tok.vocab_size, dtype=np.int64)
            docs: list[list[int]] = []
            for path in self.files:
                texts = read_documents(path, self.text_field)
                while len(docs) < limit and (chunk := list(islice(texts, 256))):
                    for ids in tok.encode_batch(chunk):
                        counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=tok.vocab_size)[: tok.vocab_size]
                        if len(ids) >= length and len(docs) < limit:
                            docs.append(ids)
                if len(docs) >= limit:
                    break
            self._cache[spec] = (docs, counts, tok.eot_id)
        return self._cache[spec]


def measure(path: str, a: Induction, corpus: TextCorpus | None) -> dict:
    """Every number of one checkpoint."""
    from nca.analysis.icl import document_rows, icl_summary, nca_rows, nca_summary, token_losses
    from nca.analysis.induction import candidate_ids, induction_report, repeated_random_tokens
    from nca.lit_modules.checkpoint import load_model

    loaded = load_model(path, device=a.device)
    model, cfg = loaded.model, loaded.config
    if corpus is None and not loaded.provenance.is_nca:
        raise ValueError(f"{path} was trained on {loaded.provenance.describe()}, not NCA data: give --data a text corpus")
    if a.block_len * a.repeats > cfg.block_size:
        raise ValueError(f"--block_len {a.block_len} x --repeats {a.repeats} exceeds the model's block_size {cfg.block_size}")
    result: dict = {"checkpoint": path, "format": loaded.format, "layers": cfg.n_layer, "heads": cfg.n_head,
                    "step": _step(path)}
    if corpus is not None:
        spec = a.tokenizer or loaded.tokenizer_spec
        if spec is None:
            raise ValueError(f"{path} records no text tokenizer: pass --tokenizer (e.g. gpt2 or a tokenizer directory)")
        if a.late > cfg.block_size:
            raise ValueError(f"--late {a.late} exceeds the model's block_size {cfg.block_size}: lower --late/--early")
        docs, counts, eot = corpus.tokens(spec, a.late + 1, a.documents)
        rows = document_rows(docs, a.late + 1, a.documents)
        result["text"] = {"tokenizer": spec, **icl_summary(token_losses(model, rows), a.early, a.late)}
        candidates = candidate_ids(cfg.vocab_size, exclude=[eot], counts=counts)
    else:
        rows, tok = nca_rows(loaded.provenance, a.sequences, a.seq_len)
        if rows.shape[1] - 1 > cfg.block_size:
            raise ValueError(f"NCA rows of {rows.shape[1] - 1} tokens exceed the model's block_size {cfg.block_size}: lower --seq_len")
        result["nca"] = nca_summary(token_losses(model, rows), tok.frame_len)
        candidates = candidate_ids(cfg.vocab_size, exclude=[tok.start_id, tok.end_id])
    probe = repeated_random_tokens(candidates, a.block_len, a.repeats, a.probe_sequences, seed=a.seed)
    result.update(induction_report(model, probe, a.block_len, a.threshold))
    return result


def _step(path: str) -> int | None:
    found = re.search(r"step=(\d+)", Path(path).name)
    return int(found.group(1)) if found else None


def plot_losses(results: dict[str, dict], out: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, r in results.items():
        if "text" in r:
            curve = r["text"]["loss_by_position"]
            ax.plot(np.arange(1, len(curve) + 1), curve, label=f"{label} (ICL {r['text']['icl_score']:+.3f})")
            ax.set(xscale="log", xlabel="token position t (context length)", ylabel="mean loss_t")
        else:
            curve = r["nca"]["loss_by_frame"]
            ax.plot(range(len(curve)), curve, marker="o", label=f"{label} (slope {r['nca']['frame_slope']:+.3f}/frame)")
            ax.set(xlabel="frame k", ylabel="mean loss of frame k's tokens")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=120)


def main(argv: list[str]) -> int:
    a = parsing.call(Induction, argv, "nca induction")
    out = Path(a.out)
    if out.exists():
        raise UsageError(f"{out} already exists; choose another --out (outputs are never overwritten)")
    with usage_errors():
        if not 2 <= a.repeats or a.documents < 1 or a.sequences < 1 or a.probe_sequences < 1:
            raise ValueError("--repeats must be >= 2 and --documents/--sequences/--probe_sequences >= 1")
        missing = [p for p in a.ckpt if not Path(p).expanduser().exists()]
        if missing:
            raise FileNotFoundError(f"checkpoint(s) not found: {', '.join(missing)}")
        corpus = None if a.data in ("auto", "nca") else TextCorpus(a.data, a.text_field)
        torch.manual_seed(a.seed)
        results = {label: measure(path, a, corpus) for label, path in zip(labels_for(a.ckpt), a.ckpt)}
    from nca.analysis.induction import heads_figure

    out.mkdir(parents=True)
    for label, r in results.items():
        heads_figure(r["prefix_matching"], r["copying"], title=label).savefig(out / f"heads-{label}.png", dpi=120)
        top = r["top_prefix_matching"]
        curve = (f"ICL {r['text']['icl_score']:+.3f}" if "text" in r else f"frame slope {r['nca']['frame_slope']:+.4f}")
        print(f"{label}: top prefix matching {top['score']:.3f} (L{top['layer']}H{top['head']}, copying "
              f"{top['copying']:+.2f}), induction heads {len(r['induction_heads'])}, {curve}")
    plot_losses(results, out / "loss_by_position.png")
    (out / "induction.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out}/induction.json, loss_by_position.png and {len(results)} heads-*.png")
    return 0
