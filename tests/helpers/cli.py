"""Configs and in-process runners of the ``nca`` command line."""

import contextlib
import copy
import functools
import io
import sys
from pathlib import Path

import pytest
import yaml

from nca.cli.train import NCACLI, TRAINER_DEFAULTS
from tests.helpers.data import PatternDataModule
from tests.helpers.models import TINY, StartProbe

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "nca" / "configs"
PATTERN = f"{PatternDataModule.__module__}.{PatternDataModule.__name__}"  # importable the way pytest imports it


def write(path: Path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def toy_config(tmp_path: Path, **extra) -> str:
    """A complete fit config on the toy DataModule, logging and checkpointing under tmp_path."""
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": 4,
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "log_every_n_steps": 1, "limit_val_batches": 1,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "runs"), "name": "toy"}},
        },
        "checkpoint": {"every_n_train_steps": 2},
        "model": {"config": dict(TINY), "lr": 3e-3, "warmup_steps": 1},
        "data": {"class_path": PATTERN, "init_args": {"train_batches": 8}},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return write(tmp_path / "toy.yaml", cfg)


TINY_RUN = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
            "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1"]


def run_cli(args: list[str], monkeypatch, callbacks: tuple = ()) -> tuple[NCACLI, StartProbe]:
    probe = StartProbe()
    monkeypatch.setattr(sys, "argv", ["nca"])
    cli = NCACLI(args=["fit", *args], trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [probe, *callbacks]})
    return cli, probe


def parse(*config_files: str) -> dict:
    """The resolved config of ``python -m nca fit --config ... --print_config``, in process."""
    return copy.deepcopy(_parse(config_files))


@functools.lru_cache(maxsize=None)  # each composition is parsed once, however many tests read it
def _parse(config_files: tuple[str, ...]) -> dict:
    args = ["fit"] + [a for name in config_files for a in ("--config", str(ROOT / name))] + ["--print_config"]
    out = io.StringIO()
    argv, sys.argv = sys.argv, ["nca"]  # LightningCLI warns when pytest's own argv is present too
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            NCACLI(args=args)
    finally:
        sys.argv = argv
    assert exit_.value.code in (0, None), f"{config_files} failed to parse"
    return yaml.safe_load(out.getvalue())
