"""Study -> runs: every run is one ``python -m nca fit`` composed from the repo's configs plus the study's
overrides, so the replication has no training path of its own.

Stage 1: one run per (pre-pre-training source, seed): ``nca-<band>``, ``shuffled-<band>``, ``random``, ``dyck``,
``c4``, ``c4_10x`` (``nca.replication.arms``). Stage 2: one run per (domain, arm, seed). For a given seed every
stage-2 run has the same seed for ``seed_everything`` and the DataModule, the same model config and vocabulary,
hence the same fresh initialisation (``CausalLM.configure_model``) and data order; ``init_from`` then overwrites
only the carried blocks (``nca.lit_modules.transfer``). So per-seed differences between arms are paired. A ladder
(``Study.rungs``) plans each rung as its own study, its run ids prefixed with the rung's name.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from nca.replication.arms import Arm, Source, arms, band_range, stage1_sources
from nca.replication.config import DOMAIN_RECIPES, NCA_FAMILY, PAPER_ALPHABET, StageBudget, Study, rung_studies

INIT_FILES = {"nca": "configs/init/from_nca.yaml", "shuffled": "configs/init/from_shuffled_nca.yaml",
              "random": "configs/init/from_random_tokens.yaml", "dyck": "configs/init/from_dyck.yaml",
              "c4": "configs/init/from_c4.yaml", "c4_10x": "configs/init/from_c4_10x.yaml",
              "c4_noreinit": "configs/init/from_c4_noreinit.yaml"}
STAGE1_FILES = {"shuffled": ["configs/baselines/shuffled_nca.yaml"], "random": ["configs/baselines/random_tokens.yaml"],
                "dyck": ["configs/baselines/dyck.yaml"], "c4": ["configs/baselines/c4.yaml"],
                "c4_10x": ["configs/baselines/c4_10x.yaml"]}
ABLATION_FILES = {"reinit_attention": "configs/ablation/reinit_attention.yaml",
                  "reinit_mlp": "configs/ablation/reinit_mlp.yaml"}
OUT = "<out>"  # stands for the study folder in stored run specs, so a moved folder keeps its hashes
VOCAB = f"{OUT}/vocab"  # the study's stage-2 vocabulary (nca.replication.vocab)


@dataclass
class Run:
    """One training run: its id (= its folder under ``<out>/runs``), what it is, and its ``nca fit`` arguments."""

    id: str
    stage: int
    source: str            # stage 1: nca-50plus / shuffled-50plus / random / dyck / c4 / c4_10x; stage 2: the arm label
    seed: int
    args: list[str]
    domain: str | None = None
    after: str | None = None  # id of the stage-1 run it starts from
    inputs: dict = field(default_factory=dict)  # content hashes of files the args name (the vocabulary)
    hash: str = ""
    rung: str = ""          # the ladder rung ('' outside a ladder)
    kind: str = ""          # stage 1: the source's kind (nca, shuffled, random, dyck, c4, c4_10x); stage 2: the arm

    def directory(self, out: Path) -> Path:
        return Path(out) / "runs" / self.id

    def command(self, out: Path) -> list[str]:
        """The full command line, with the study folder filled in."""
        return [sys.executable, "-m", "nca", "fit", *(a.replace(OUT, str(out)) for a in self.args)]

    def spec(self) -> dict:
        return {"id": self.id, "stage": self.stage, "source": self.source, "domain": self.domain, "seed": self.seed,
                "args": self.args, "after": self.after, "inputs": self.inputs}


def arm_labels(study: Study) -> list[str]:
    """Stage-2 arm labels (``nca.replication.arms``)."""
    return [a.label for a in arms(study)]


def _budget_args(b: StageBudget, steps: int, seed: int, study: Study, run_id: str) -> list[str]:
    model = {**study.model, "block_size": max(study.stage1.seq_len, study.stage2.seq_len)}
    gpu = study.device == "gpu"
    micro = b.batch_size // (b.accumulate * study.gpus)
    args = ["--config", f"configs/strategy/{study.strategy}.yaml"] if study.gpus > 1 else []
    return args + [
        "--seed_everything", str(seed),
        "--trainer.accelerator", "gpu" if gpu else "cpu", "--trainer.devices", str(study.gpus),
        "--trainer.precision", "bf16-mixed" if gpu else "32-true",
        "--trainer.max_steps", str(steps), "--trainer.accumulate_grad_batches", str(b.accumulate),
        "--trainer.val_check_interval", str(b.val_every * b.accumulate), "--trainer.check_val_every_n_epoch", "null",
        "--trainer.limit_val_batches", str(b.val_batches), "--trainer.log_every_n_steps", str(min(10, b.val_every)),
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", f"{OUT}/runs", "--trainer.logger.init_args.name", run_id,
        "--trainer.default_root_dir", f"{OUT}/runs/{run_id}", "--checkpoint.every_n_train_steps", str(b.val_every),
        "--model.config", json.dumps(model, sort_keys=True),
        "--model.lr", repr(b.lr), "--model.min_lr", repr(b.min_lr), "--model.warmup_fraction", "null",
        "--model.warmup_steps", str(b.warmup_steps), "--model.weight_decay", repr(b.weight_decay),
        "--data.init_args.seq_len", str(b.seq_len), "--data.init_args.batch_size", str(micro),
        "--data.init_args.seed", str(seed), "--data.init_args.num_workers", "0",
    ]


def _text_args(source: str, val: str | None, study: Study, max_tokens: int | None = None) -> list[str]:
    args = ["--data.init_args.source", source, "--data.init_args.tokenizer", study.vocab.tokenizer or VOCAB,
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


def _prefixed(rung: str, run_id: str) -> str:
    return f"{rung}-{run_id}" if rung else run_id


def stage1_steps(study: Study, source: Source) -> int:
    return study.stage1.steps * (study.c4_10x_factor if source.kind == "c4_10x" else 1)


def stage1_run(study: Study, source: Source, seed: int, rung: str = "") -> Run:
    b, run_id = study.stage1, _prefixed(rung, f"s1-{source.label}-seed{seed}")
    steps = stage1_steps(study, source)
    args = ["--config", "configs/stage1.yaml"]
    if source.band is not None:
        args += ["--config", f"configs/band/{source.band}.yaml"]
    args += [a for f in STAGE1_FILES.get(source.kind, []) for a in ("--config", f)]
    args += _budget_args(b, steps, seed, study, run_id)
    if source.kind in NCA_FAMILY and source.n != PAPER_ALPHABET:
        args += ["--data.init_args.nca.n_states", str(source.n)]
        if source.band is not None:
            args += ["--data.init_args.band", json.dumps(band_range(source.band, source.n))]
    if source.kind in ("c4", "c4_10x"):
        args += _text_args(study.data.c4, study.data.c4_val, study, max_tokens=steps * b.batch_size * b.seq_len)
    kinds = {"nca": ["nca"], "shuffled": ["nca", "shuffled"], "random": ["nca", "random"], "c4_10x": ["c4"]}
    args += [a for kind in kinds.get(source.kind, [source.kind]) for a in study.overrides.get(kind, [])]
    return Run(run_id, 1, source.label, seed, args, rung=rung, kind=source.kind)


def stage2_lr(study: Study, domain: str) -> tuple[float, float]:
    """(lr, min_lr) of a domain's stage-2 runs: ``domain_lr`` replaces stage2.lr, min_lr keeps its ratio."""
    b = study.stage2
    lr = study.domain_lr.get(domain, b.lr)
    return lr, b.min_lr * lr / b.lr


def stage2_run(study: Study, domain: str, arm: Arm, seed: int, rung: str = "") -> Run:
    run_id = _prefixed(rung, f"s2-{domain}-{arm.label}-seed{seed}")
    args = ["--config", DOMAIN_RECIPES[domain]]
    if study.device == "cpu":
        args += ["--config", "configs/cpu/stage2.yaml"]
    after = None
    if arm.source is not None:
        after = _prefixed(rung, f"s1-{arm.source.label}-seed{seed}")
        args += ["--config", INIT_FILES["c4_noreinit" if arm.arm == "c4_noreinit" else arm.source.kind]]
        if arm.ablation:
            args += ["--config", ABLATION_FILES[arm.ablation]]
    lr, min_lr = stage2_lr(study, domain)
    budget = replace(study.stage2, lr=lr, min_lr=min_lr)
    args += _budget_args(budget, budget.steps, seed, study, run_id)
    if after is not None:
        args += ["--model.init_from", f"{OUT}/runs/{after}/checkpoints/last.ckpt"]
    source, val = domain_sources(study, domain)
    args += _text_args(source, val, study)
    if domain == "code":
        args += ["--data.init_args.exclude", json.dumps(study.data.code_exclude)]
    args += list(study.overrides.get("stage2", []))
    return Run(run_id, 2, arm.label, seed, args, domain=domain, after=after, rung=rung, kind=arm.arm)


def plan(study: Study, tokenizer_hash: str) -> list[Run]:
    """All runs of a study (every rung), stage 1 first, each with its content hash (args, inputs, and its
    stage-1 run's hash)."""
    runs: list[Run] = []
    rungs = rung_studies(study)
    for rung, one in rungs:
        runs += [stage1_run(one, s, seed, rung) for s in stage1_sources(one) for seed in one.seeds]
    for rung, one in rungs:
        runs += [stage2_run(one, d, arm, seed, rung) for d in one.domains for arm in arms(one) for seed in one.seeds]
    by_id = {}
    for run in runs:
        if "--data.init_args.tokenizer" in run.args:  # text runs: the stage-2 vocabulary is an input
            run.inputs = {"tokenizer": tokenizer_hash}
        parent = by_id[run.after].hash if run.after else None
        run.hash = hashlib.sha256(json.dumps({**run.spec(), "after_hash": parent}, sort_keys=True).encode()).hexdigest()
        by_id[run.id] = run
    return runs
