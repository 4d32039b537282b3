"""``nca fit | validate | test``: LightningCLI for ``CausalLM`` and any DataModule.

Training is configured only through YAML (``--config a.yaml --config b.yaml``, later files win) and
command-line overrides of any key; ``--print_config`` shows the resolved result. Each run saves its resolved
config next to its TensorBoard logs and writes checkpoints to ``<save_dir>/<name>/checkpoints`` (one folder
per experiment name, shared by its versions), so ``--ckpt_path last`` resumes the newest run of that name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_modules.causal_lm import CausalLM

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
               "init_args": {"save_dir": "runs", "name": "nca"}},
    "default_root_dir": "runs",
}
CHECKPOINT_DEFAULTS = {"checkpoint.every_n_train_steps": 500, "checkpoint.save_last": True,
                       "checkpoint.save_top_k": -1}


class KeepingSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the log dir, or ``config-1.yaml``, ``config-2.yaml``...
    when an earlier run (e.g. the one being resumed) already left one there: nothing is overwritten."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.already_saved or trainer.log_dir is None:
            return super().setup(trainer, pl_module, stage)
        name = None
        if trainer.is_global_zero:
            name = free_name(Path(trainer.log_dir), "config", ".yaml")
        self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


def free_name(directory: Path, stem: str, suffix: str) -> str:
    """``stem + suffix`` if unused in ``directory``, else the first free ``stem-N + suffix``."""
    name, n = stem + suffix, 0
    while (directory / name).exists():
        n += 1
        name = f"{stem}-{n}{suffix}"
    return name


class NCACLI(LightningCLI):
    """LightningCLI for ``CausalLM`` and any DataModule (``data: {class_path: ..., init_args: ...}``)."""

    def __init__(self, args: Optional[list[str]] = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        super().__init__(
            CausalLM,
            LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=KeepingSaveConfigCallback,
            auto_configure_optimizers=False,  # CausalLM's own optimiser/schedule arguments are the only ones
            args=args,
            run=run,
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "validate", "test")}

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("description", "Train causal LMs on NCA / text tokens with Lightning (`nca --help`: all verbs).")
        kwargs.setdefault("prog", "nca")
        kwargs.setdefault("allow_abbrev", False)  # `--trainer.max_step` must be an error, not max_steps
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")

    # Checkpoints live in one folder per experiment name so that `--ckpt_path last` finds the previous run.
    def _resolve_checkpoint_dir(self) -> Optional[str]:
        cb = self.trainer.checkpoint_callback
        if cb is None:
            return None
        if cb.dirpath is None:
            logger = self.trainer.loggers[0] if self.trainer.loggers else None
            if logger is not None and logger.name:
                root = os.path.join(logger.save_dir or self.trainer.default_root_dir, str(logger.name))
            else:
                root = self.trainer.default_root_dir
            cb.dirpath = os.path.realpath(os.path.join(root, "checkpoints"))
        return cb.dirpath

    def before_fit(self) -> None:
        dirpath = self._resolve_checkpoint_dir()
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt_path is None and dirpath and any(Path(dirpath).glob("*.ckpt")):
            raise FileExistsError(
                f"{dirpath} already holds checkpoints of an earlier run. Resume it with `--ckpt_path last`, or "
                "start a new experiment with another `--trainer.logger.init_args.name` or `--checkpoint.dirpath`."
            )

    def before_validate(self) -> None:
        self._resolve_checkpoint_dir()

    before_test = before_validate


def lightning(argv: list[str]) -> int:
    NCACLI(args=argv)
    return 0


def fit(argv: list[str]) -> int:
    return lightning(["fit", *argv])


def validate(argv: list[str]) -> int:
    return lightning(["validate", *argv])


def test(argv: list[str]) -> int:
    return lightning(["test", *argv])
