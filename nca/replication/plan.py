"""Study -> runs: every run is one ``python -m nca fit`` composed from the repo's configs plus the study's
overrides, so the replication has no training path of its own.

Stage 1: one run per (pre-pre-training source, seed): ``nca-<band>``, ``dyck``, ``c4``, ``c4_10x``.
Stage 2: one run per (domain, arm, seed). For a given seed every stage-2 run has the same seed for
``seed_everything`` and the DataModule, the same model config and vocabulary, hence the same fresh
initialisation (``CausalLM.configure_model``) and data order; ``init_from`` then overwrites only the carried
blocks (``nca.lit_modules.transfer``). So per-seed differences between arms are paired.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nca.replication.config import DOMAIN_RECIPES, STAGE1_OF_ARM, StageBudget, Study

INIT_FILES = {"nca": "configs/init/from_nca.yaml", "dyck": "configs/init/from_dyck.yaml", "c4": "configs/init/from_c4.yaml",
              "c4_10x": "configs/init/from_c4_10x.yaml", "c4_noreinit": "configs/init/from_c4_noreinit.yaml"}
ABLATION_FILES = {"nca_reinit_attention": "configs/ablation/reinit_attention.yaml",
                  "nca_reinit_mlp": "configs/ablation/reinit_mlp.yaml"}
OUT = "<out>"  # stands for the study folder in stored run specs, so a moved folder keeps its hashes
VOCAB = f"{OUT}/vocab"  # the study's stage-2 vocabulary (nca.replication.vocab)


@dataclass
class Run:
    """One training run: its id (= its folder under ``<out>/runs``), what it is, and its ``nca fit`` arguments."""

    id: str
    stage: int
    source: str            # stage 1: nca-50plus / dyck / c4 / c4_10x; stage 2: the arm label (scratch, nca-50plus, ...)
    seed: int
    args: list[str]
    domain: str | None = None
    after: str | None = None  # id of the stage-1 run it starts from
    inputs: dict = field(default_factory=dict)  # content hashes of files the args name (the vocabulary)
    hash: str = ""

    def directory(self, out: Path) -> Path:
        return Path(out) / "runs" / self.id

    def command(self, out: Path) -> list[str]:
        """The full command line, with the study folder filled in."""
        return [sys.executable, "-m", "nca", "fit", *(a.replace(OUT, str(out)) for a in self.args)]

    def spec(self) -> dict:
        return {"id": self.id, "stage": self.stage, "source": self.source, "domain": self.domain, "seed": self.seed,
                "args": self.args, "after": self.after, "inputs": self.inputs}


def arm_labels(study: Study) -> list[str]:
    """Stage-2 arm labels: 'nca' becomes one arm per band; ablation arms use the first band."""
    labels = []
    for arm in study.arms:
        if arm == "nca":
            labels += [f"nca-{band}" for band in study.bands]
        elif arm.startswith("nca_"):
            labels.append(f"nca-{study.bands[0]}-{arm.removeprefix('nca_')}")
        else:
            labels.append(arm)
    return labels


def _arm_of_label(label: str) -> str:
    if label.startswith("nca-"):
        for suffix in ("reinit_attention", "reinit_mlp"):
            if label.endswith("-" + suffix):
                return "nca_" + suffix
        return "nca"
    return label


def _stage1_source(label: str) -> str | None:
    """Stage-1 run source of a stage-2 arm label (nca-50plus-reinit_mlp -> nca-50plus, c4_noreinit -> c4_10x)."""
    arm = _arm_of_label(label)
    if STAGE1_OF_ARM[arm] == "nca":
        return label if arm == "nca" else label.removesuffix("-" + arm.removeprefix("nca_"))
    return STAGE1_OF_ARM[arm]


def _budget_args(b: StageBudget, steps: int, seed: int, block_size: int, study: Study, run_id: str) -> list[str]:
    model = {**study.model, "block_size": block_size}
    return [
        "--seed_everything", str(seed),
        "--trainer.accelerator", "gpu" if study.device == "gpu" else "cpu", "--trainer.devices", "1",
        "--trainer.precision", "bf16-mixed" if study.device == "gpu" else "32-true",
        "--trainer.max_steps", str(steps), "--trainer.accumulate_grad_batches", "1",
        "--trainer.val_check_interval", str(b.val_every), "--trainer.check_val_every_n_epoch", "null",
        "--trainer.limit_val_batches", str(b.val_batches), "--trainer.log_every_n_steps", str(min(10, b.val_every)),
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", f"{OUT}/runs", "--trainer.logger.init_args.name", run_id,
        "--trainer.default_root_dir", f"{OUT}/runs/{run_id}", "--checkpoint.every_n_train_steps", str(b.val_every),
        "--model.config", json.dumps(model, sort_keys=True),
        "--model.lr", str(b.lr), "--model.min_lr", str(b.min_lr), "--model.warmup_fraction", "null",
        "--model.warmup_steps", str(b.warmup_steps), "--model.weight_decay", str(b.weight_decay),
        "--data.init_args.seq_len", str(b.seq_len), "--data.init_args.batch_size", str(b.batch_size),
        "--data.init_args.seed", str(seed), "--data.init_args.num_workers", "0",
    ]


def _text_args(source: str, val: str | None, study: Study, max_tokens: int | None = None) -> list[str]:
    args = ["--data.init_args.source", source, "--data.init_args.tokenizer", VOCAB,
            "--data.init_args.cache_dir", f"{OUT}/cache", "--data.init_args.max_val_tokens", str(study.data.max_val_tokens)]
    if val is None:
        args += ["--data.init_args.val_source", "null", "--data.init_args.val_fraction", str(study.data.val_fraction)]
    else:
        args += ["--data.init_args.val_source", val]
    if max_tokens is not None:
        args += ["--data.init_args.max_tokens", str(max_tokens)]
    return args


def code_root(study: Study) -> str:
    if study.data.code is not None:
        return study.data.code
    import sysconfig

    return sysconfig.get_paths()["stdlib"]


def domain_sources(study: Study, domain: str) -> tuple[str, str | None]:
    d = study.data
    return {"code": (code_root(study), d.code_val), "math": (d.math, d.math_val), "owt": (d.owt, d.owt_val)}[domain]


def stage1_sources(study: Study) -> list[str]:
    needed = {_stage1_source(label) for label in arm_labels(study)} - {None}
    order = [f"nca-{b}" for b in study.bands] + ["dyck", "c4", "c4_10x"]
    return [s for s in order if s in needed]


def stage1_run(study: Study, source: str, seed: int) -> Run:
    b, run_id = study.stage1, f"s1-{source}-seed{seed}"
    steps = b.steps * (study.c4_10x_factor if source == "c4_10x" else 1)
    block = max(study.stage1.seq_len, study.stage2.seq_len)
    args = ["--config", "configs/stage1.yaml"]
    if source.startswith("nca-"):
        kind = "nca"
        args += ["--config", f"configs/band/{source.removeprefix('nca-')}.yaml"]
    elif source == "dyck":
        kind = "dyck"
        args += ["--config", "configs/baselines/dyck.yaml"]
    else:
        kind = "c4"
        args += ["--config", f"configs/baselines/{'c4_10x' if source == 'c4_10x' else 'c4'}.yaml"]
    args += _budget_args(b, steps, seed, block, study, run_id)
    if kind == "c4":
        args += _text_args(study.data.c4, study.data.c4_val, study, max_tokens=steps * b.batch_size * b.seq_len)
    args += list(study.overrides.get(kind, []))
    return Run(run_id, 1, source, seed, args)


def stage2_run(study: Study, domain: str, label: str, seed: int) -> Run:
    arm, run_id = _arm_of_label(label), f"s2-{domain}-{label}-seed{seed}"
    args = ["--config", DOMAIN_RECIPES[domain]]
    if study.device == "cpu":
        args += ["--config", "configs/cpu/stage2.yaml"]
    after = None
    init_key = "nca" if arm.startswith("nca") else arm
    if arm != "scratch":
        after = f"s1-{_stage1_source(label)}-seed{seed}"
        args += ["--config", INIT_FILES[init_key]]
        if arm in ABLATION_FILES:
            args += ["--config", ABLATION_FILES[arm]]
    block = max(study.stage1.seq_len, study.stage2.seq_len)
    args += _budget_args(study.stage2, study.stage2.steps, seed, block, study, run_id)
    if after is not None:
        args += ["--model.init_from", f"{OUT}/runs/{after}/checkpoints/last.ckpt"]
    source, val = domain_sources(study, domain)
    args += _text_args(source, val, study)
    if domain == "code":
        args += ["--data.init_args.exclude", json.dumps(study.data.code_exclude)]
    args += list(study.overrides.get("stage2", []))
    return Run(run_id, 2, label, seed, args, domain=domain, after=after)


def plan(study: Study, tokenizer_hash: str) -> list[Run]:
    """All runs of a study, stage 1 first, each with its content hash (args, inputs, and its stage-1 run's hash)."""
    runs = [stage1_run(study, s, seed) for s in stage1_sources(study) for seed in study.seeds]
    runs += [stage2_run(study, d, label, seed) for d in study.domains for label in arm_labels(study)
             for seed in study.seeds]
    by_id = {}
    for run in runs:
        if VOCAB in run.args:
            run.inputs = {"tokenizer": tokenizer_hash}
        parent = by_id[run.after].hash if run.after else None
        run.hash = hashlib.sha256(json.dumps({**run.spec(), "after_hash": parent}, sort_keys=True).encode()).hexdigest()
        by_id[run.id] = run
    return runs
