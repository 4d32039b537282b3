"""Every private Lightning name the project relies on, in one module.

Lightning offers no public route for these. Each is used here and only here, under a public name, and
``PRIVATE`` says what it is for, so that an upgrade which moves one fails tests/test_framework.py by name
("lightning.pytorch.cli.LightningCLI._run_subcommand is gone: ...") instead of silently changing the
console or the error handling. Where a public route exists the project takes it: the HParams entry goes
through ``log_hyperparams(params, metrics)`` and torch's ``SummaryWriter.file_writer``, the progress bar
through tqdm's own ``n``/``refresh()`` (nca.lit_modules.tb_logging, nca.lit_modules.progress).
``lightning`` is pinned in pyproject.toml to the minor version these were checked on.
"""

from __future__ import annotations

from typing import Any, Optional

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelSummary, ThroughputMonitor
from lightning.pytorch.cli import LightningCLI, _InstantiatorFn
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

# (where, name, what the project uses it for): tests/test_framework.py checks each one.
PRIVATE = (
    ("lightning.pytorch.cli", "_InstantiatorFn",
     "nca fit keeps the error a constructor raised (nca.cli.train.RecordingInstantiator)"),
    ("lightning.pytorch.cli.LightningCLI", "_parse_ckpt_path",
     "nca fit checks a --ckpt_path file before Lightning reads its hyper-parameters"),
    ("lightning.pytorch.cli.LightningCLI", "_add_instantiators", "nca fit records constructor errors"),
    ("lightning.pytorch.cli.LightningCLI", "_run_subcommand",
     "a run that fails before its first step leaves no log version behind"),
    ("lightning.pytorch.utilities.model_summary.model_summary", "_format_summary_table",
     "the model summary without an empty FLOPs column (nca.lit_modules.progress)"),
    ("lightning.pytorch.callbacks.ModelSummary", "_max_depth", "the quiet summary keeps a configured depth"),
    ("lightning.pytorch.callbacks.ThroughputMonitor", "_compute",
     "tokens/s logged under one name, without the monitor's counters (nca.lit_modules.tb_logging)"),
    ("lightning.pytorch.callbacks.ThroughputMonitor", "_throughputs", "the monitor's per-stage meters"),
    ("lightning.pytorch.Trainer", "_logger_connector",
     "log the throughput when and as Lightning logs its own metrics (should_update_logs, log_metrics)"),
    ("lightning.pytorch.Trainer", "_accelerator_connector",
     "the cluster environment (SLURM requeue) of a strategy that does not expose it (nca.lit_modules.preemption)"),
    ("lightning.pytorch.callbacks.throughput_monitor", "_plugin_to_compute_dtype",
     "the dtype a run's matrix products use, for the MFU peak (nca.lit_modules.mfu)"),
    ("lightning.pytorch.Trainer", "_signal_connector",
     "a SIGTERM Lightning's own handler saw before the preemption handler was installed"),
)

InstantiatorFn = _InstantiatorFn
format_summary_table = _format_summary_table


def summary_depth(callback: ModelSummary) -> int:
    return callback._max_depth


def should_update_logs(trainer: Trainer) -> bool:
    """Whether this step is one Lightning logs at (``trainer.log_every_n_steps``)."""
    return trainer._logger_connector.should_update_logs


def log_metrics(trainer: Trainer, metrics: dict[str, Any], step: Optional[int]) -> None:
    """Log through the trainer's loggers as Lightning does (also fills ``trainer.logged_metrics``)."""
    trainer._logger_connector.log_metrics(metrics, step=step)


def compute_dtype(trainer: Trainer) -> Any:
    """The torch dtype of the run's matrix products (bf16 under ``bf16-mixed``), as Lightning's monitor reads it."""
    from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype

    return _plugin_to_compute_dtype(trainer.precision_plugin)


def cluster_environment(trainer: Trainer) -> Any:
    """The trainer's cluster environment (parallel strategies expose it; Lightning's signal connector looks
    on the accelerator connector, as here)."""
    return getattr(trainer.strategy, "cluster_environment", None) or trainer._accelerator_connector.cluster_environment


def take_received_sigterm(trainer: Trainer) -> bool:
    """Whether Lightning's SIGTERM handler saw a signal; cleared, so Lightning's loop does not end the run."""
    connector = trainer._signal_connector
    seen, connector.received_sigterm = bool(connector.received_sigterm), False
    return seen


class CLIHooks(LightningCLI):
    """LightningCLI with the private steps the project hooks into under public names."""

    def _parse_ckpt_path(self) -> None:
        self.check_ckpt_path()
        super()._parse_ckpt_path()

    def check_ckpt_path(self) -> None:
        """Called after parsing, before Lightning reads a ``--ckpt_path`` file's hyper-parameters."""

    def _add_instantiators(self) -> None:
        self.add_instantiators()

    def add_instantiators(self) -> None:
        """Adds the instantiators of the model and data classes (Lightning's own by default)."""
        super()._add_instantiators()

    def _run_subcommand(self, subcommand: str) -> None:
        self.run_subcommand(subcommand)

    def run_subcommand(self, subcommand: str) -> None:
        """Runs ``fit``/``validate``/``test`` with the instantiated trainer, model and data."""
        super()._run_subcommand(subcommand)


class ThroughputHooks(ThroughputMonitor):
    """ThroughputMonitor whose compute-and-log step is ``log_throughput`` and whose meters are ``meter``."""

    def _compute(self, trainer: Trainer, iter_num: Optional[int] = None) -> None:
        self.log_throughput(trainer, iter_num)

    def log_throughput(self, trainer: Trainer, iter_num: Optional[int] = None) -> None:
        super()._compute(trainer, iter_num)

    def meter(self, stage: Any) -> Any:
        """The ``Throughput`` meter of a stage (``trainer.state.stage``)."""
        return self._throughputs[stage]

    def meters(self) -> list[Any]:
        """Every stage's ``Throughput`` meter."""
        return list(self._throughputs.values())
