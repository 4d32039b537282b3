"""What a run writes to TensorBoard beyond its losses: tokens/s under that name, and one HParams entry per run
(model, data and trainer settings) whose metric is the validation perplexity, so runs compare in the
HParams tab by their final ``val/ppl`` instead of Lightning's placeholder ``hp_metric = -1``."""

from __future__ import annotations

import warnings
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from nca.lit_modules import framework
from nca.lit_modules.mfu import run_peak

HPARAMS_METRIC = "val/ppl"
TRAINER_KEYS = ("max_steps", "max_epochs", "accumulate_grad_batches", "gradient_clip_val", "precision",
                "world_size", "num_nodes")


class TokenThroughput(framework.ThroughputHooks):
    """Lightning's ThroughputMonitor logging only ``{stage}/tokens_per_sec`` (all ranks together),
    ``{stage}/flops_per_sec`` and ``{stage}/mfu`` when the device's peak is known (``nca.lit_modules.mfu``: the
    dense peaks of H100/H200/A100 first, then Lightning's table; ``peak_flops`` overrides both); its counters
    (time, batches, samples, lengths) and per-device duplicates are left out."""

    def __init__(self, *args: Any, peak_flops: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peak_flops = peak_flops

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        peak = run_peak(trainer, self.peak_flops)
        with warnings.catch_warnings():
            if peak is not None:  # Lightning's table has no entry for a device ours knows (an H200): no warning
                warnings.filterwarnings("ignore", message="FLOPs not found")
            super().setup(trainer, pl_module, stage)
        if peak is not None:
            self.available_flops = int(peak)
            for throughput in self.meters():
                throughput.available_flops = int(peak)

    def log_throughput(self, trainer: Trainer, iter_num: Any = None) -> None:
        if not framework.should_update_logs(trainer):
            return
        stage = trainer.state.stage
        raw = self.meter(stage).compute()
        world = trainer.world_size
        metrics = {}
        tokens = raw.get("items_per_sec", raw["device/items_per_sec"] * world if "device/items_per_sec" in raw else None)
        if tokens is not None:
            metrics[f"{stage.value}/tokens_per_sec"] = tokens
        flops = raw.get("flops_per_sec", raw["device/flops_per_sec"] * world if "device/flops_per_sec" in raw else None)
        if flops is not None:
            metrics[f"{stage.value}/flops_per_sec"] = flops
        if "device/mfu" in raw:
            metrics[f"{stage.value}/mfu"] = raw["device/mfu"]
        if metrics:
            framework.log_metrics(trainer, metrics, iter_num)


def flat_hparams(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """Nested settings as ``prefix/key`` -> int/float/str/bool (what the HParams plugin accepts)."""
    if isinstance(value, dict):
        for key, item in value.items():
            flat_hparams(f"{prefix}/{key}", item, out)
    elif isinstance(value, (bool, int, float, str)):
        out[prefix] = value
    elif value is not None:
        out[prefix] = str(value)
    return out


def run_hparams(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
    from nca.lit_modules.checkpoint import plain

    params: dict[str, Any] = {}
    flat_hparams("model", plain(dict(pl_module.hparams)), params)
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        flat_hparams("data", {"class": type(datamodule).__name__, **plain(dict(getattr(datamodule, "hparams", {})))},
                     params)
    flat_hparams("trainer", {k: plain(getattr(trainer, k, None)) for k in TRAINER_KEYS}, params)
    return params


def without_placeholder(log_hyperparams):
    """``log_hyperparams`` writing no metric when given none: Lightning's own call (at fit start, with the
    module's hyper-parameters) then adds no ``hp_metric = -1`` placeholder and no HParams entry of its own."""

    def log(params, metrics=None, step=None):
        return log_hyperparams(params, {} if metrics is None else metrics, step)

    log.without_placeholder = True
    return log


def without_epoch(log_metrics):
    """``log_metrics`` minus Lightning's ``epoch`` counter (an NCA stream has one endless epoch)."""

    def log(metrics, step=None):
        return log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

    log.without_epoch = True
    return log


class HParamsSummary(Callback):
    """Writes the HParams entry at the start of fit (rank 0, TensorBoard loggers only), declaring
    ``val/ppl`` as its metric; TensorBoard shows the run's last logged ``val/ppl`` there. Also keeps
    Lightning's placeholder ``hp_metric = -1`` and its ``epoch`` counter out of the scalars."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                if not getattr(logger.log_hyperparams, "without_placeholder", False):
                    logger.log_hyperparams = without_placeholder(logger.log_hyperparams)
                if not getattr(logger.log_metrics, "without_epoch", False):
                    logger.log_metrics = without_epoch(logger.log_metrics)

    @rank_zero_only
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from torch.utils.tensorboard.summary import hparams

        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        experiment, session_start, session_end = hparams(run_hparams(trainer, pl_module), {HPARAMS_METRIC: 0.0})
        writer = loggers[0].experiment.file_writer  # torch's SummaryWriter: the open events file
        for summary in (experiment, session_start, session_end):
            writer.add_summary(summary)
