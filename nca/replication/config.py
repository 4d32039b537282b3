"""What a replication study is made of (the YAML of ``nca replicate --config ...``): arms, bands, alphabets,
stage-2 domains, seeds, the model (or a ladder of model sizes), the two stages' budgets, the data roots, the
evaluation and the cost model of ``--plan``.

Everything here defines the runs and goes into each run's stored hash (``nca.replication.state``); how the
runs are launched (``--jobs``, ``--launcher``) is not part of the study and may change between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal, Optional

# Stage-2 arms: the kind of stage-1 run each one starts from. "nca", "shuffled_nca" and "random_tokens" stand
# for one arm per band (nca-50plus, nca-30-40, ...) and alphabet size (nca-50plus-n4 for n = 4).
STAGE1_OF_ARM = {
    "scratch": None, "nca": "nca", "shuffled_nca": "shuffled", "random_tokens": "random", "dyck": "dyck",
    "c4": "c4", "c4_10x": "c4_10x", "c4_noreinit": "c4_10x", "nca_reinit_attention": "nca", "nca_reinit_mlp": "nca",
}
ARMS = tuple(STAGE1_OF_ARM)
NCA_FAMILY = ("nca", "shuffled", "random")  # stage-1 kinds in the NCA's format (alphabet, frames, label mask)
BANDS = ("20-30", "30-40", "40-50", "50plus")
PAPER_ALPHABET = 10
# Stage-2 domain -> the repo's recipe for it; the paper's names (docs/paper.md §8) for the report.
DOMAIN_RECIPES = {"code": "configs/stage2/code.yaml", "math": "configs/stage2/math.yaml", "owt": "configs/stage2/owt.yaml"}
PAPER_DOMAIN = {"owt": "OpenWebText", "math": "OpenWebMath", "code": "CodeParrot"}
OVERRIDE_KINDS = ("nca", "shuffled", "random", "dyck", "c4", "stage2")


@dataclass
class StageBudget:
    """Length and shape of one stage's runs (identical for every arm of that stage).

    Args:
        steps: optimizer steps of every run of the stage.
        batch_size: sequences per optimizer step, all devices and accumulation together.
        seq_len: tokens per sequence.
        lr: peak learning rate (the paper: stage 1 1e-4, stage 2 5e-4 web text and math, 2e-4 code).
        min_lr: the floor the cosine decays to at the last step.
        warmup_steps: linear warm-up in optimizer steps (the paper: 10% of stage 2).
        val_every: validation and checkpoint interval in optimizer steps.
        val_batches: validation batches (of batch_size / devices / accumulate sequences) per device.
        weight_decay: AdamW weight decay (the paper: 0 in stage 1, 1e-4 in stage 2).
        accumulate: gradient accumulation; the micro-batch is batch_size / (devices x accumulate).
    """

    steps: int = 200
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 2.0e-3
    min_lr: float = 1.0e-4
    warmup_steps: int = 20
    val_every: int = 50
    val_batches: int = 8
    weight_decay: float = 0.0
    accumulate: int = 1


@dataclass
class DataRoots:
    """Offline corpora. Relative paths are read from the directory where `nca replicate` runs.

    Args:
        c4: C4 training documents (the C4 stage-1 arms and the vocabulary).
        c4_val: C4 validation documents (null: a held-out share of c4).
        code: code corpus of the code domain (null: the Python standard library).
        code_val: code validation corpus (null: a held-out share).
        math: math corpus of the math domain.
        math_val: math validation corpus (null: a held-out share).
        owt: web-text corpus of the owt domain (a folder, a file or a Hugging Face dataset name).
        owt_val: web-text validation corpus (null: a held-out share).
        val_fraction: held-out share of a corpus without its own validation file.
        code_exclude: glob patterns left out of the code corpus.
        max_val_tokens: validation tokens per domain; every arm is validated on the same rows.
    """

    c4: str = "../shared/data/c4/c4_en_train_first1000.jsonl.gz"
    c4_val: Optional[str] = "../shared/data/c4/c4_en_validation_2k.jsonl.gz"
    code: Optional[str] = None
    code_val: Optional[str] = None
    math: str = "../shared/data/math_docs/math_docs_train.jsonl.xz"
    math_val: Optional[str] = "../shared/data/math_docs/math_docs_validation.jsonl.xz"
    owt: str = "../shared/data/openwebtext"
    owt_val: Optional[str] = None
    val_fraction: float = 0.05
    code_exclude: list[str] = field(default_factory=lambda: ["*/site-packages/*", "*/test/*", "*/tests/*",
                                                             "*/idlelib/*", "*/lib2to3/*"])
    max_val_tokens: int = 65536


@dataclass
class Vocabulary:
    """The stage-2 vocabulary, shared by every stage-2 run and by the C4 stage-1 arms (so "C4 without embedding
    re-init" keeps meaningful rows): a byte-level BPE trained on the stage-2 domains and C4, or a given tokenizer.

    Args:
        size: ids of the trained BPE; with ``tokenizer``, that tokenizer's vocabulary size (``--plan`` uses it).
        chars_per_corpus: characters of each corpus the BPE is trained on.
        tokenizer: a tokenizer to use as it is (a folder, or a name such as gpt2) instead of training one.
    """

    size: int = 2048
    chars_per_corpus: int = 2_000_000
    tokenizer: Optional[str] = None


@dataclass
class Evaluation:
    """Analyses of finished checkpoints: induction heads, in-context learning, the stage-1 learning report.

    Args:
        induction: score induction heads and ICL (needs nca.analysis.induction).
        induction_sequences: random repeated blocks for the prefix-matching score.
        icl_windows: positions t of loss_t, [[early from, early to], [late from, late to]]; ICL = mean loss of the
            late window - mean loss of the early one (Olsson et al.: [[40, 60], [450, 550]]), both scaled down
            together where rows are shorter.
        icl_documents: validation rows the ICL score averages over (its per-run standard error is over them).
        learning_sequences: validation rows of each stage-1 run scored for the stage-1 learning report.
        learned_margin: stage 1 counts as having learned its data when its validation loss is at least this
            share below its reference (uniform; for the NCA format the loss of the layout alone).
    """

    induction: bool = True
    induction_sequences: int = 16
    icl_windows: list[list[int]] = field(default_factory=lambda: [[40, 60], [450, 550]])
    icl_documents: int = 32
    learning_sequences: int = 16
    learned_margin: float = 0.1


@dataclass
class Costs:
    """The cost model of ``--plan``: training FLOPs 6 N + 12 L d T per token (N: parameters in matmuls, L layers,
    d width, T sequence length; the PaLM MFU convention), evaluation 2 N + 4 L d T, GPU-hours at this MFU.

    Args:
        mfu: model FLOPs utilisation assumed for GPU-hours.
        peak_tflops: the GPU's dense bf16 peak in TFLOP/s (H100 SXM: 989).
        gpu: the GPU's name in the plan.
    """

    mfu: float = 0.4
    peak_tflops: float = 989.0
    gpu: str = "H100 SXM, bf16 dense"


@dataclass
class Rung:
    """One model size of a ladder: its model and the budget keys that differ from the study's stages.

    Args:
        name: the rung's name, a prefix of its run ids (e.g. 160m).
        model: litgpt Config subset (n_layer, n_embd, n_head, intermediate_size, ...).
        stage1: stage-1 budget keys replacing the study's (e.g. {steps: 5005, lr: 1.0e-4}).
        stage2: stage-2 budget keys replacing the study's.
        gpus: devices of each run of this rung (> 1: data parallel with ``strategy``).
        strategy: ddp or fsdp (configs/strategy/) when gpus > 1.
    """

    name: str
    model: dict
    stage1: dict = field(default_factory=dict)
    stage2: dict = field(default_factory=dict)
    gpus: int = 1
    strategy: str = "ddp"


@dataclass
class Study:
    """A replication study: every arm on the same seeds, paired in stage 2.

    Args:
        arms: stage-2 arms, 'scratch' among them: scratch, nca, shuffled_nca, random_tokens, dyck, c4, c4_10x,
            c4_noreinit, nca_reinit_attention, nca_reinit_mlp.
        bands: NCA complexity bands (20-30, 30-40, 40-50, 50plus) of the nca and shuffled_nca arms.
        alphabets: alphabet sizes n of the NCA-format arms (the paper: 10); n != 10 adds -n<n> to the label and
            scales the band by the gzip ratio of noise at n (the same complexity relative to noise).
        domains: stage-2 domains: owt, math, code.
        seeds: one run per arm and seed; stage 2 of one seed has the same data order and fresh embedding in
            every arm (paired).
        model: litgpt Config subset of every run (ignored when rungs are given).
        stage1: stage-1 budget (pre-pre-training: NCA, controls, Dyck, C4).
        stage2: stage-2 budget (language pre-training).
        domain_lr: stage-2 learning rate per domain replacing stage2.lr (min_lr scales with it); the paper
            trains code at 2e-4 against 5e-4 for web text and math.
        rungs: model sizes of a ladder; each runs every arm and seed with its own model and budgets.
        c4_10x_factor: the stage-1 budget multiple of the c4_10x arm.
        device: cpu (fp32) or gpu (bf16-mixed).
        gpus: devices of each run (a rung may set its own).
        strategy: ddp or fsdp (configs/strategy/) when gpus > 1.
        data: the corpora.
        vocab: the stage-2 vocabulary.
        evaluation: analyses of the finished checkpoints.
        costs: the cost model of --plan (tokens, FLOPs, GPU-hours).
        overrides: extra `nca fit` arguments per kind of run: nca, shuffled, random (after nca's), dyck, c4,
            stage2.
    """

    arms: list[str] = field(default_factory=lambda: ["scratch", "nca", "dyck", "c4"])
    bands: list[str] = field(default_factory=lambda: ["50plus"])
    alphabets: list[int] = field(default_factory=lambda: [PAPER_ALPHABET])
    domains: list[str] = field(default_factory=lambda: ["owt"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: dict = field(default_factory=lambda: {"n_layer": 4, "n_embd": 128, "n_head": 4, "intermediate_size": 512})
    stage1: StageBudget = field(default_factory=StageBudget)
    stage2: StageBudget = field(default_factory=StageBudget)
    domain_lr: dict[str, float] = field(default_factory=dict)
    rungs: list[Rung] = field(default_factory=list)
    c4_10x_factor: int = 10
    device: Literal["cpu", "gpu"] = "cpu"
    gpus: int = 1
    strategy: str = "ddp"
    data: DataRoots = field(default_factory=DataRoots)
    vocab: Vocabulary = field(default_factory=Vocabulary)
    evaluation: Evaluation = field(default_factory=Evaluation)
    costs: Costs = field(default_factory=Costs)
    overrides: dict[str, list[str]] = field(default_factory=dict)


def rung_studies(study: Study) -> list[tuple[str, Study]]:
    """(rung name, the study of that one model size); a study without rungs is one rung named ''."""
    if not study.rungs:
        return [("", study)]
    out = []
    for rung in study.rungs:
        out.append((rung.name, replace(study, rungs=[], model=dict(rung.model), gpus=rung.gpus, strategy=rung.strategy,
                                       stage1=replace(study.stage1, **rung.stage1),
                                       stage2=replace(study.stage2, **rung.stage2))))
    return out


def check_study(study: Study) -> None:
    """Every mistake in a study that can be seen without running anything, with the fix, in one message."""
    problems = []
    bad = [a for a in study.arms if a not in ARMS]
    if bad:
        problems.append(f"unknown arm(s) {bad}; choose from {list(ARMS)}")
    if "scratch" not in study.arms:
        problems.append("the arms must include 'scratch' (every comparison is against it)")
    bad = [b for b in study.bands if b not in BANDS]
    banded = any(STAGE1_OF_ARM.get(a) in ("nca", "shuffled") for a in study.arms)
    if bad or (not study.bands and banded):
        problems.append(f"bands must be one or more of {list(BANDS)}, got {study.bands}")
    if not study.alphabets or len(set(study.alphabets)) != len(study.alphabets) or min(study.alphabets) < 2:
        problems.append(f"alphabets must be distinct sizes >= 2, e.g. [2, 4, 10], got {study.alphabets}")
    bad = [d for d in study.domains if d not in DOMAIN_RECIPES]
    if bad or not study.domains:
        problems.append(f"domains must be one or more of {list(DOMAIN_RECIPES)}, got {study.domains}")
    if set(study.domain_lr) - set(DOMAIN_RECIPES):
        problems.append(f"domain_lr keys must be domains ({list(DOMAIN_RECIPES)}), got {sorted(study.domain_lr)}")
    if not study.seeds or len(set(study.seeds)) != len(study.seeds):
        problems.append(f"seeds must be distinct and non-empty, got {study.seeds}")
    unknown_kinds = set(study.overrides) - set(OVERRIDE_KINDS)
    if unknown_kinds:
        problems.append(f"overrides keys must be among {list(OVERRIDE_KINDS)}, got {sorted(unknown_kinds)}")
    names = [r.name for r in study.rungs]
    if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
        problems.append(f"rung names must be distinct, non-empty and without '/', got {names}")
    budget_keys = {f.name for f in fields(StageBudget)}
    for rung in study.rungs:
        for stage in ("stage1", "stage2"):
            unknown = set(getattr(rung, stage)) - budget_keys
            if unknown:
                problems.append(f"rung {rung.name}: unknown {stage} key(s) {sorted(unknown)}; choose from {sorted(budget_keys)}")
    for where, strategy in [("", study.strategy), *((f"rung {r.name}: ", r.strategy) for r in study.rungs)]:
        if strategy not in ("ddp", "fsdp"):
            problems.append(f"{where}strategy must be ddp or fsdp, got {strategy!r}")
    if problems:  # rung budgets are checked only once their keys are known
        raise ValueError("invalid replication config: " + "; ".join(problems))
    for rung, one in rung_studies(study):
        problems += [f"{rung + ': ' if rung else ''}{p}" for p in _check_sizes(one)]
    windows = study.evaluation.icl_windows
    if len(windows) != 2 or any(len(w) != 2 or not 1 <= w[0] <= w[1] for w in windows) or windows[0][1] >= windows[1][0]:
        problems.append(f"evaluation.icl_windows must be [[a, b], [c, d]] with 1 <= a <= b < c <= d, got {windows}")
    if not 0 < study.evaluation.learned_margin < 1:
        problems.append(f"evaluation.learned_margin must lie in (0, 1), got {study.evaluation.learned_margin}")
    if problems:
        raise ValueError("invalid replication config: " + "; ".join(problems))


def _check_sizes(study: Study) -> list[str]:
    problems = []
    for name in ("stage1", "stage2"):
        b: StageBudget = getattr(study, name)
        if min(b.steps, b.batch_size, b.seq_len, b.val_every, b.val_batches, b.accumulate) < 1:
            problems.append(f"{name}: steps, batch_size, seq_len, val_every, val_batches and accumulate must be >= 1")
        elif b.val_every > b.steps:
            problems.append(f"{name}.val_every={b.val_every} exceeds {name}.steps={b.steps}: no validation point")
        elif b.batch_size % (b.accumulate * study.gpus):
            problems.append(f"{name}.batch_size={b.batch_size} is not a multiple of accumulate x gpus = "
                            f"{b.accumulate} x {study.gpus}")
        if b.warmup_steps > b.steps:
            problems.append(f"{name}.warmup_steps={b.warmup_steps} exceeds {name}.steps={b.steps}")
    if "n_embd" not in study.model or "n_layer" not in study.model:
        problems.append("model must give at least n_layer and n_embd (a litgpt Config subset)")
    if study.gpus > 1 and study.device != "gpu":
        problems.append(f"gpus={study.gpus} needs device: gpu")
    return problems


def study_from_dict(values: dict) -> Study:
    """A ``Study`` from plain parsed values (nested groups as dicts); unknown keys are ignored by the caller."""
    nested = {"stage1": StageBudget, "stage2": StageBudget, "data": DataRoots, "vocab": Vocabulary,
              "evaluation": Evaluation, "costs": Costs}
    kwargs = {}
    for name in Study.__dataclass_fields__:
        if name not in values:
            continue
        value = values[name]
        if name in nested and isinstance(value, dict):
            value = nested[name](**value)
        elif name == "rungs":
            value = [r if isinstance(r, Rung) else Rung(**dict(r)) for r in value or []]
        kwargs[name] = value
    return Study(**kwargs)
