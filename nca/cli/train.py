"""``nca fit | validate | test``: LightningCLI for ``CausalLM`` and any DataModule.

Training is configured only through YAML (``--config a.yaml --config b.yaml``, later files win) and
command-line overrides of any key; ``--print_config`` shows the resolved result. Each run saves its resolved
config next to its TensorBoard logs and writes checkpoints to ``<save_dir>/<name>/checkpoints`` (one folder
per experiment name, shared by its versions), so ``--ckpt_path last`` resumes the newest run of that name.
``validate`` / ``test`` log to ``<save_dir>/<name>/eval/version_N``: a training run's own versions (what
``nca curves`` reads) only ever hold training.

Known user errors (a bad value, a missing or broken file, a run that diverged) end with one line
``nca VERB: error: ...`` and exit 2; anything else is a bug and keeps its traceback (``NCA_TRACEBACK=1``
shows the traceback of a user error too). A preempted fit (SIGTERM, SIGUSR1) saves ``last.ckpt`` of its step
and exits with 128 + the signal number; one ``nca fit`` at a time writes a run (``fit.lock``). See
docs/reliability.md.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import yaml
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

# The project's DataModules, imported so that `--data NCADataModule` (a short class name) resolves.
import nca.datamodules.bbl  # noqa: F401
import nca.datamodules.dyck  # noqa: F401
import nca.datamodules.gsm8k  # noqa: F401
import nca.datamodules.nca  # noqa: F401
import nca.datamodules.text  # noqa: F401
from nca.lit_modules.atomic import sweep_partial
from nca.lit_modules.causal_lm import CausalLM
from nca.lit_modules.checkpoint_io import AtomicModelCheckpoint, use_atomic_checkpoints
from nca.lit_modules.framework import CLIHooks, InstantiatorFn
from nca.lit_modules.guards import NonFiniteGuard
from nca.lit_modules.preemption import Preempted, Preemption, slurm_requeued
from nca.lit_modules.runlock import RunLock
from nca.cli import console, parsing, preflight
from nca.cli.errors import UsageError, user_error

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
               "init_args": {"save_dir": "runs", "name": "nca"}},
    "default_root_dir": "runs",
}
# Keep last.ckpt plus the newest few: every checkpoint of a 1.6B model is ~19 GB (weights + AdamW states).
CHECKPOINT_DEFAULTS = {"checkpoint.every_n_train_steps": 500, "checkpoint.save_last": True,
                       "checkpoint.save_top_k": 3, "checkpoint.monitor": "step", "checkpoint.mode": "max"}
EVAL_SUBDIR = "eval"  # <save_dir>/<name>/eval/version_N for validate/test


class KeepingSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the log dir, or ``config-1.yaml``, ``config-2.yaml``...
    when an earlier run (e.g. the one being resumed) already left one there: nothing is overwritten.
    Rank 0 picks the name and writes; every rank makes the same collective calls in the same order."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a collective call: made once, on every rank
        if log_dir is not None and trainer.is_global_zero:
            directory = Path(log_dir)
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / free_name(directory, "config", ".yaml")
            self.parser.save(self.config, str(path), skip_none=False, multifile=self.multifile)
        self.already_saved = True


def free_name(directory: Path, stem: str, suffix: str) -> str:
    """``stem + suffix`` if unused in ``directory``, else the first free ``stem-N + suffix``."""
    name, n = stem + suffix, 0
    while (directory / name).exists():
        n += 1
        name = f"{stem}-{n}{suffix}"
    return name


class RecordingInstantiator(InstantiatorFn):
    """Lightning's instantiator, keeping the error a constructor raised: jsonargparse folds it into a
    40-line Union message, the CLI wants the constructor's own one line."""

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs: Any) -> Any:
        try:
            return super().__call__(class_type, *args, applied_instantiation_links=applied_instantiation_links,
                                    **kwargs)
        except Exception as err:
            self.cli.construction_errors.append(err)
            raise


class NCAArgumentParser(parsing.StrictParsing, LightningArgumentParser):
    """Lightning's parser, raising one-line errors and taking no abbreviations (nested parsers too)."""


class NCACLI(CLIHooks):
    """LightningCLI for ``CausalLM`` and any DataModule (``data: {class_path: ..., init_args: ...}``)."""

    def __init__(self, args: Optional[list[str]] = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("parser_class", NCAArgumentParser)
        self.parsers: list[LightningArgumentParser] = []  # every parser built: the main one, one per subcommand
        console.quiet_warnings()
        # constructor errors, kept for the one-line message (a list the caller may pass to read them afterwards)
        self.construction_errors: list[BaseException] = kwargs.pop("construction_errors", [])
        self.run_root: Optional[Path] = None  # <save_dir>/<name> of the training run
        self._log_dir_state: Optional[tuple[Path, bool, set[str]]] = None
        self._run_lock: Optional[RunLock] = None
        self.integer_counts: dict[str, int] = {}
        self._made_for_lock: list[Path] = []  # directories created only to hold the lock (removed if left empty)
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
        self.parsers.append(super().init_parser(**kwargs))
        return self.parsers[-1]

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Without Lightning's warning about args beside sys.argv; a mistake is one line naming the nearest key."""
        args = list(args or [])
        verb = args[0] if args and args[0] in self.subcommands() else None
        own = next((p for p in self.parsers if verb and p.prog.split()[-1] == verb), parser)
        self.config = parsing.parse(parser, args, f"nca {verb}" if verb else "nca", keys=lambda: parsing.valid_keys(own))
        self.integer_counts = integer_counts(args)
        trainer = (self.config[verb] if verb else self.config).get("trainer")
        for key, value in self.integer_counts.items() if trainer is not None else ():
            trainer[key] = value  # so the saved config.yaml says what ran

    def check_ckpt_path(self) -> None:
        """Lightning reads a ``--ckpt_path`` file's hyper-parameters right after parsing: check it first."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path != "last" and path not in preflight.SPECIAL_CKPT:
            preflight.resume_path(path, None)

    def add_instantiators(self) -> None:
        for key, class_type, subclasses in (("model", CausalLM, False), ("data", LightningDataModule, True)):
            self.parser.add_instantiator(RecordingInstantiator(cli=self, key=key), class_type, subclasses=subclasses)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(AtomicModelCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_lightning_class_args(NonFiniteGuard, "guard")  # always on: a diverged run stops, exit 2
        add_reliability_arguments(parser)
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Evaluation logs to ``<name>/eval``; the run's own root is kept for finding its checkpoints."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.get("trainer", {}).get("logger")
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and init_args.get("name"):
            save_dir = init_args.get("save_dir") or config.trainer.get("default_root_dir") or "runs"
            self.run_root = Path(save_dir) / str(init_args.name)
            if self.subcommand in ("validate", "test"):
                init_args.name = f"{init_args.name}/{EVAL_SUBDIR}"

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = use_atomic_checkpoints(console.quiet_trainer(super().instantiate_trainer(**kwargs)))
        for key, value in self.integer_counts.items():  # the parser turned them into floats (integer_counts)
            setattr(trainer, key, value)
        return trainer

    # Checkpoints live in one folder per experiment name so that `--ckpt_path last` finds the previous run.
    def _resolve_checkpoint_dir(self) -> Optional[str]:
        cb = self.trainer.checkpoint_callback
        if cb is None:
            return None
        if cb.dirpath is None:
            root = self.run_root if self.run_root is not None else Path(self.trainer.default_root_dir)
            cb.dirpath = os.path.realpath(root / "checkpoints")
        return cb.dirpath

    def _set_ckpt_path(self, dirpath: Optional[str]) -> None:
        config = self.config_init[self.subcommand]
        config["ckpt_path"] = preflight.resume_path(config.get("ckpt_path"), dirpath)

    def before_fit(self) -> None:
        dirpath = self._resolve_checkpoint_dir()
        config = self.config[self.subcommand]
        self._resume_requeued_job(dirpath)
        self._lock_run(dirpath)
        preflight.check_fit(config.trainer.max_steps, config.trainer.max_epochs, self.model, config.get("ckpt_path"),
                            dirpath)
        self._set_ckpt_path(dirpath)
        self._check_train_longer()
        self._note_log_dir()

    def before_validate(self) -> None:
        self._set_ckpt_path(self._resolve_checkpoint_dir())
        self._note_log_dir()

    before_test = before_validate

    def _note_log_dir(self) -> None:
        """Remember what the log dir held before the run, so that a failed start can leave it as it was."""
        logger = self.trainer.logger
        if logger is None or not self.trainer.is_global_zero or getattr(logger, "log_dir", None) is None:
            return
        log_dir = Path(logger.log_dir)
        existed = log_dir.is_dir()
        self._log_dir_state = (log_dir, existed, {p.name for p in log_dir.iterdir()} if existed else set())

    def run_subcommand(self, subcommand: str) -> None:
        try:
            super().run_subcommand(subcommand)
        except BaseException:
            if subcommand != "fit" or self.trainer.global_step == 0:
                self._undo_log_dir()
            raise
        finally:
            self._unlock_run()

    def _undo_log_dir(self) -> None:
        """A run that failed before its first step leaves no ``version_N`` behind (TensorBoard would show it)."""
        if self._log_dir_state is None:
            return
        log_dir, existed, before = self._log_dir_state
        if not log_dir.is_dir():
            return
        if not existed:
            shutil.rmtree(log_dir, ignore_errors=True)
            return
        for path in log_dir.iterdir():
            if path.name not in before and path.is_file():
                path.unlink()

    # -- reliability: requeued SLURM jobs resume, one writer per run, train longer (docs/reliability.md)
    def _resume_requeued_job(self, dirpath: Optional[str]) -> None:
        """A requeued SLURM job runs its command again: without --ckpt_path it resumes its own last.ckpt."""
        config = self.config[self.subcommand]
        if config.get("ckpt_path") is None and slurm_requeued() and dirpath and any(Path(dirpath).glob("last*.ckpt")):
            config["ckpt_path"] = self.config_init[self.subcommand]["ckpt_path"] = "last"
            if self.trainer.is_global_zero:
                print(f"nca fit: SLURM job {os.environ['SLURM_JOB_ID']} was requeued: resuming {dirpath}", file=sys.stderr)

    def _run_dir(self, dirpath: Optional[str]) -> Path:
        """The directory a run writes: <save_dir>/<name>, or its checkpoint folder when that lies elsewhere."""
        root = (self.run_root or Path(self.trainer.default_root_dir)).resolve()
        if dirpath and root not in Path(dirpath).resolve().parents:
            return Path(dirpath)
        return root

    def _lock_run(self, dirpath: Optional[str]) -> None:
        """Rank 0 takes the run's lock, then clears what interrupted checkpoint writes left behind."""
        if not self.trainer.is_global_zero:
            return
        run_dir = self._run_dir(dirpath)
        self._made_for_lock = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        self._run_lock = RunLock(run_dir).acquire(notice=lambda line: print(line, file=sys.stderr))
        for leftover in sweep_partial(dirpath) if dirpath else []:
            print(f"nca fit: removed {leftover}, left by an interrupted checkpoint write", file=sys.stderr)

    def _unlock_run(self) -> None:
        if self._run_lock is None:
            return
        self._run_lock.release()
        self._run_lock = None
        for path in self._made_for_lock:  # deepest first: a failed start leaves no empty run directory
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def _check_train_longer(self) -> None:
        config = self.config[self.subcommand]
        train_longer = bool(config.get("train_longer"))
        preflight.check_resume_schedule(self.config_init[self.subcommand].get("ckpt_path"), config.trainer.max_steps,
                                        self.model, train_longer)
        self.model.extend_schedule = train_longer


# Trainer arguments typed Union[int, float]: an int counts batches, a float is a fraction of them.
COUNT_OR_FRACTION = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                     "val_check_interval")


def integer_counts(args: list[str]) -> dict[str, int]:
    """The ``COUNT_OR_FRACTION`` values written as integers, in config files or flags (later wins).

    jsonargparse reads them through Lightning's annotation, which typing caches as Union[float, int]: ``1``
    becomes 1.0, which Lightning takes as 100% of the batches. What the user wrote decides instead.
    """
    found: dict[str, Any] = {}
    for i, arg in enumerate(args):
        key, _, value = arg.partition("=")
        value = value or (args[i + 1] if i + 1 < len(args) else "")
        if key == "--config" and Path(value).is_file():
            section = yaml.safe_load(Path(value).read_text()) or {}
            section = section.get("trainer") if isinstance(section, dict) else None
            found.update({k: v for k, v in (section or {}).items() if k in COUNT_OR_FRACTION})
        elif key.startswith("--trainer.") and key.removeprefix("--trainer.") in COUNT_OR_FRACTION:
            found[key.removeprefix("--trainer.")] = yaml.safe_load(value) if value else None
    return {k: v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool)}


def lightning(argv: list[str]) -> int:
    """Run one LightningCLI subcommand; known user errors become one-line ``UsageError``s."""
    errors: list[BaseException] = []
    try:
        NCACLI(args=argv, construction_errors=errors)
    except UsageError:
        raise
    except Preempted as err:
        return report_preemption(argv[0], err)
    except Exception as err:
        message = user_error(err, errors)
        if message is None or os.environ.get("NCA_TRACEBACK"):
            raise
        raise UsageError(message) from err
    return 0


def fit(argv: list[str]) -> int:
    return lightning(["fit", *argv])


def validate(argv: list[str]) -> int:
    return lightning(["validate", *argv])


def test(argv: list[str]) -> int:
    return lightning(["test", *argv])


def add_reliability_arguments(parser: LightningArgumentParser) -> None:
    """Preemption handling (always on) and ``--train_longer`` (docs/reliability.md)."""
    parser.add_lightning_class_args(Preemption, "preemption")
    parser.add_argument(
        "--train_longer", type=bool, default=False,
        help="with --ckpt_path: allow a larger --trainer.max_steps than the run was started with; the optimizer "
             "state, data position and step counter are kept and the rest of the cosine is re-sized from the "
             "resumed step")


def report_preemption(verb: str, err: Preempted) -> int:
    """One line (from rank 0) and the exit status of a preempted run: 128 + the signal number."""
    if err.report:
        print(f"nca {verb}: {err}", file=sys.stderr, flush=True)
    return err.exit_code
