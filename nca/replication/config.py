"""What a replication study is made of (the YAML of ``nca replicate --config ...``): arms, bands, stage-2
domains, seeds, the model, the two stages' budgets, the data roots and the evaluation.

Everything here defines the runs and goes into each run's stored hash (``nca.replication.state``); how the
runs are launched (``--jobs``, ``--launcher``) is not part of the study and may change between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

# Stage-2 arms: what each one starts from. "nca" stands for one arm per band (nca-50plus, nca-30-40, ...).
STAGE1_OF_ARM = {
    "scratch": None, "nca": "nca", "dyck": "dyck", "c4": "c4", "c4_10x": "c4_10x", "c4_noreinit": "c4_10x",
    "nca_reinit_attention": "nca", "nca_reinit_mlp": "nca",
}
ARMS = tuple(STAGE1_OF_ARM)
BANDS = ("20-30", "30-40", "40-50", "50plus")
# Stage-2 domain -> the repo's recipe for it; the paper's names (docs/paper.md §8) for the report.
DOMAIN_RECIPES = {"code": "configs/stage2/code.yaml", "math": "configs/stage2/math.yaml", "owt": "configs/stage2/owt.yaml"}
PAPER_DOMAIN = {"owt": "OpenWebText", "math": "OpenWebMath", "code": "CodeParrot"}


@dataclass
class StageBudget:
    """Length and shape of one stage's runs (identical for every arm of that stage)."""

    steps: int = 200
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 2.0e-3
    min_lr: float = 1.0e-4
    warmup_steps: int = 20
    val_every: int = 50            # validation (and checkpoint) interval in steps
    val_batches: int = 8           # batches per validation
    weight_decay: float = 0.0


@dataclass
class DataRoots:
    """Offline corpora. Relative paths are read from the directory where `nca replicate` runs
    (the repository root in the README).
    ``code: null`` is the Python standard library (``sysconfig.get_paths()["stdlib"]``)."""

    c4: str = "../shared/data/c4/c4_en_train_first1000.jsonl.gz"
    c4_val: Optional[str] = "../shared/data/c4/c4_en_validation_2k.jsonl.gz"
    code: Optional[str] = None
    code_val: Optional[str] = None
    math: str = "../shared/data/math_docs/math_docs_train.jsonl.xz"
    math_val: Optional[str] = "../shared/data/math_docs/math_docs_validation.jsonl.xz"
    owt: str = "../shared/data/openwebtext"
    owt_val: Optional[str] = None
    val_fraction: float = 0.05     # held-out share of a corpus without its own validation file
    code_exclude: list[str] = field(default_factory=lambda: ["*/site-packages/*", "*/test/*", "*/tests/*",
                                                             "*/idlelib/*", "*/lib2to3/*"])
    max_val_tokens: int = 65536    # per domain; every arm is validated on the same rows


@dataclass
class Vocabulary:
    """One byte-level BPE vocabulary, trained (``tokenizers``) on the stage-2 domains and C4, shared by every
    stage-2 run and by the C4 stage-1 arm (so that "C4 without embedding re-init" keeps meaningful rows)."""

    size: int = 2048
    chars_per_corpus: int = 2_000_000


@dataclass
class Evaluation:
    """Analyses run on finished checkpoints when ``nca.analysis.induction`` is available (optional)."""

    induction: bool = True
    induction_sequences: int = 16              # random repeated blocks for the prefix-matching score
    icl_positions: list[int] = field(default_factory=lambda: [50, 500])  # ICL = loss(t=late) - loss(t=early)
    icl_documents: int = 32                    # validation rows the ICL score averages over


@dataclass
class Study:
    arms: list[str] = field(default_factory=lambda: ["scratch", "nca", "dyck", "c4"])
    bands: list[str] = field(default_factory=lambda: ["50plus"])
    domains: list[str] = field(default_factory=lambda: ["owt"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: dict = field(default_factory=lambda: {"n_layer": 4, "n_embd": 128, "n_head": 4, "intermediate_size": 512})
    stage1: StageBudget = field(default_factory=StageBudget)
    stage2: StageBudget = field(default_factory=StageBudget)
    c4_10x_factor: int = 10        # the "C4 at 10x" arm's stage-1 budget multiple
    device: Literal["cpu", "gpu"] = "cpu"
    data: DataRoots = field(default_factory=DataRoots)
    vocab: Vocabulary = field(default_factory=Vocabulary)
    evaluation: Evaluation = field(default_factory=Evaluation)
    # Extra `nca fit` overrides per kind of run ("nca", "dyck", "c4", "stage2"), e.g. smaller NCA validation pools.
    overrides: dict[str, list[str]] = field(default_factory=dict)


def check_study(study: Study) -> None:
    """Every mistake in a study that can be seen without running anything, with the fix, in one message."""
    problems = []
    bad = [a for a in study.arms if a not in ARMS]
    if bad:
        problems.append(f"unknown arm(s) {bad}; choose from {list(ARMS)}")
    if "scratch" not in study.arms:
        problems.append("the arms must include 'scratch' (every comparison is against it)")
    bad = [b for b in study.bands if b not in BANDS]
    if bad or (not study.bands and any(STAGE1_OF_ARM.get(a) == "nca" for a in study.arms)):
        problems.append(f"bands must be one or more of {list(BANDS)}, got {study.bands}")
    bad = [d for d in study.domains if d not in DOMAIN_RECIPES]
    if bad or not study.domains:
        problems.append(f"domains must be one or more of {list(DOMAIN_RECIPES)}, got {study.domains}")
    if not study.seeds or len(set(study.seeds)) != len(study.seeds):
        problems.append(f"seeds must be distinct and non-empty, got {study.seeds}")
    for name in ("stage1", "stage2"):
        b: StageBudget = getattr(study, name)
        if min(b.steps, b.batch_size, b.seq_len, b.val_every, b.val_batches) < 1:
            problems.append(f"{name}: steps, batch_size, seq_len, val_every and val_batches must be >= 1")
        if b.val_every > b.steps:
            problems.append(f"{name}.val_every={b.val_every} exceeds {name}.steps={b.steps}: no validation point")
    unknown_kinds = set(study.overrides) - {"nca", "dyck", "c4", "stage2"}
    if unknown_kinds:
        problems.append(f"overrides keys must be nca, dyck, c4 or stage2, got {sorted(unknown_kinds)}")
    if "n_embd" not in study.model or "n_layer" not in study.model:
        problems.append("model must give at least n_layer and n_embd (a litgpt Config subset)")
    early_late = study.evaluation.icl_positions
    if len(early_late) != 2 or not 1 <= early_late[0] < early_late[1]:
        problems.append(f"evaluation.icl_positions must be [early, late] with 1 <= early < late, got {early_late}")
    if problems:
        raise ValueError("invalid replication config: " + "; ".join(problems))


def study_from_dict(values: dict) -> Study:
    """A ``Study`` from plain parsed values (nested groups as dicts); unknown keys are ignored by the caller."""
    nested = {"stage1": StageBudget, "stage2": StageBudget, "data": DataRoots, "vocab": Vocabulary,
              "evaluation": Evaluation}
    kwargs = {}
    for name in Study.__dataclass_fields__:
        if name not in values:
            continue
        value = values[name]
        kwargs[name] = nested[name](**value) if name in nested and isinstance(value, dict) else value
    return Study(**kwargs)
