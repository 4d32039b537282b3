"""What a study costs before anything runs (``nca replicate --plan``): parameters, tokens, FLOPs and GPU-hours
of every run, from the study alone (no data, no vocabulary, no network).

FLOPs follow the PaLM MFU convention: training 6 N + 12 L d T per token, evaluation 2 N + 4 L d T, where N counts
the parameters in matmuls (blocks and output head; not the embedding lookup), L layers, d width, T sequence
length. GPU-hours = FLOPs / (peak x MFU), the study's ``costs``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nca.replication.arms import Source
from nca.replication.config import NCA_FAMILY, Study
from nca.replication.plan import Run

DYCK_VOCAB = 2 * 64 + 1  # configs/baselines/dyck.yaml: k = 64 bracket types + BOS


@dataclass(frozen=True)
class Sizes:
    """Parameters of one model with one vocabulary (untied embedding and head, padded as litgpt pads them)."""

    carried: int      # blocks + final norm: what stage 1 hands to stage 2
    vocab_rows: int   # padded vocabulary
    n_embd: int
    n_layer: int

    @property
    def embedding(self) -> int:
        return self.vocab_rows * self.n_embd

    @property
    def total(self) -> int:
        return self.carried + 2 * self.embedding

    @property
    def matmul(self) -> int:
        return self.carried + self.embedding  # the head is a matmul, the embedding a lookup

    @property
    def share(self) -> float:
        return self.carried / self.total


# The model's defaults and vocabulary padding as nca.lit_modules.model sets them (that module imports Lightning,
# seconds that --plan does not spend); tests/test_replicate.py checks these counts against litgpt's own model.
PADDING_MULTIPLE = 64


def sizes(model: dict, block_size: int, vocab: int) -> Sizes:
    """Parameter counts of the project's Llama-style GPT (untied, no biases, RMSNorm, SwiGLU) with ``vocab`` ids."""
    d, layers = int(model.get("n_embd", 128)), int(model.get("n_layer", 2))
    heads = int(model.get("n_head", 4))
    head_size = int(model.get("head_size", d // heads))
    groups = int(model.get("n_query_groups", heads))
    hidden = int(model.get("intermediate_size", 4 * d))
    padding = int(model.get("padding_multiple", PADDING_MULTIPLE))
    rows = int(model.get("padded_vocab_size", -(-vocab // padding) * padding))
    block = 2 * d + d * (heads + 2 * groups) * head_size + heads * head_size * d + 3 * d * hidden
    return Sizes(layers * block + d, rows, d, layers)


def study_sizes(study: Study, vocab: int) -> Sizes:
    return sizes(study.model, max(study.stage1.seq_len, study.stage2.seq_len), vocab)


def source_vocab(source: Source, text_vocab: int) -> int:
    """The vocabulary a stage-1 source trains on: n^4 + 2 patch ids and delimiters, Dyck's 129, or the
    stage-2 vocabulary (``text_vocab``) for C4."""
    if source.kind in NCA_FAMILY:
        return source.n**4 + 2
    return DYCK_VOCAB if source.kind == "dyck" else text_vocab


@dataclass(frozen=True)
class Cost:
    tokens: int        # training tokens
    eval_tokens: int
    flops: float
    gpu_hours: float
    params: int        # total parameters of the run's model


def run_cost(study: Study, run: Run, vocab: int) -> Cost:
    """Tokens, FLOPs and GPU-hours of one run (``study`` is the run's rung study)."""
    b = study.stage1 if run.stage == 1 else study.stage2
    steps = int(run.args[run.args.index("--trainer.max_steps") + 1])
    s = sizes(study.model, max(study.stage1.seq_len, study.stage2.seq_len), vocab)
    tokens = steps * b.batch_size * b.seq_len
    micro = b.batch_size // (b.accumulate * study.gpus)
    eval_tokens = (steps // b.val_every) * b.val_batches * micro * study.gpus * b.seq_len
    attention = s.n_layer * s.n_embd * b.seq_len
    flops = tokens * (6 * s.matmul + 12 * attention) + eval_tokens * (2 * s.matmul + 4 * attention)
    seconds = flops / (study.costs.peak_tflops * 1e12 * study.costs.mfu)
    return Cost(tokens, eval_tokens, float(flops), seconds / 3600, s.total)


def human(value: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (k, M, B, T; E for FLOPs-sized numbers)."""
    for size, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def json_model(model: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in model.items())
