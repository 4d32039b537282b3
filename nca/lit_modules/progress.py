"""What a training run prints: a step-counting progress bar on a terminal, a plain line every N steps in a
log file (cluster jobs), and a model summary without Lightning's empty FLOP total.

Runs here are sized in optimizer steps (``trainer.max_steps``; an NCA stream has no epochs), so progress is
``step / max_steps`` of the whole run, also right after a resume (Lightning's bar counts batches of the
current epoch: ``Epoch 0/-2`` and ``80/19``).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from nca.lit_modules import framework

from nca.lit_modules.mfu import flops_per_token, mfu, run_peak

LOSS_KEY = "train/loss"


def _max_steps(trainer: Trainer) -> Optional[int]:
    return trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None


def _set_n(bar: Any, value: int) -> None:
    """Move a tqdm bar to ``value`` (tqdm's public ``n`` and ``refresh``)."""
    if not bar.disable:
        bar.n = value
        bar.refresh()


def _lr(trainer: Trainer) -> Optional[float]:
    return trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None


class StepProgressBar(TQDMProgressBar):
    """tqdm bar over the run's optimizer steps, with loss and lr (no ``v_num``)."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        bar = self.train_progress_bar
        bar.reset(total=_max_steps(trainer))
        bar.initial = 0
        _set_n(bar, trainer.global_step)
        bar.set_description("train")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and self.is_enabled and (step % self.refresh_rate == 0 or step == bar.total):
            _set_n(bar, step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class ProgressLine(Callback):
    """One plain line every ``every_n_steps`` optimizer steps (rank 0, flushed): step, loss, lr, tokens/s over
    the last interval (all ranks), MFU where the device's peak is known (CUDA; ``nca.lit_modules.mfu``) and the
    time left. For logs that are files, where a tqdm bar shows nothing until the run ends.

    ``peak_flops`` (FLOP/s of one device) overrides the looked-up peak, for a device no table knows.
    """

    def __init__(self, every_n_steps: Optional[int] = None, stream: Any = None,
                 peak_flops: Optional[float] = None) -> None:
        self.every_n_steps = every_n_steps
        self.stream = stream
        self.peak_flops = peak_flops
        self._mark: Optional[tuple[float, int, int]] = None  # (time, step, tokens) at the last line
        self._tokens = 0
        self._peak: Optional[float] = None
        self._flops_per_token: Optional[float] = None
        self._stated = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._tokens = 0
        self._mark = (time.perf_counter(), trainer.global_step, 0)
        self._peak = run_peak(trainer, self.peak_flops)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if isinstance(batch, dict) and "input_ids" in batch:
            self._tokens += batch["input_ids"].numel() * trainer.world_size
        every = self.every_n_steps or max(1, trainer.log_every_n_steps)
        step = trainer.global_step
        if self._mark is None or step == self._mark[1] or step % every:
            return
        if self._peak:  # only a printed line reads it
            self._flops_per_token = flops_per_token(pl_module, batch) or self._flops_per_token
        self._print(trainer, outputs)

    @rank_zero_only
    def _print(self, trainer: Trainer, outputs: Any) -> None:
        now, step = time.perf_counter(), trainer.global_step
        then, step0, tokens0 = self._mark
        elapsed = max(now - then, 1e-9)
        parts = [f"step {step}" + (f"/{_max_steps(trainer)}" if _max_steps(trainer) else "")]
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            loss = trainer.callback_metrics.get(LOSS_KEY)
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        lr = _lr(trainer)
        if lr is not None:
            parts.append(f"lr {lr:.3g}")
        tokens_per_s = (self._tokens - tokens0) / elapsed
        parts.append(f"{tokens_per_s:,.0f} tok/s")
        if self._peak and self._flops_per_token:
            self._state_mfu(trainer)
            parts.append(f"MFU {mfu(tokens_per_s / trainer.world_size, self._flops_per_token, self._peak):.1%}")
        total = _max_steps(trainer)
        if total:
            parts.append(f"ETA {format_duration((total - step) * elapsed / max(1, step - step0))}")
        print(" | ".join(parts), file=self.stream or sys.stdout, flush=True)
        self._mark = (now, step, self._tokens)

    def _state_mfu(self, trainer: Trainer) -> None:
        """Once: what the MFU column divides (FLOPs per token and the peak it is measured against)."""
        if self._stated:
            return
        self._stated = True
        device = trainer.strategy.root_device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        dtype = str(framework.compute_dtype(trainer)).removeprefix("torch.")
        print(f"MFU = tokens/s per device x {self._flops_per_token:.4g} model FLOPs per token (forward + backward, "
              f"activation recompute excluded) / {self._peak:.4g} FLOP/s peak ({name}, {dtype}, dense)",
              file=self.stream or sys.stdout, flush=True)


class QuietModelSummary(ModelSummary):
    """Lightning's summary without its FLOPs column and ``Total Flops`` row when nothing was measured (they
    read 0 beside the FLOP rate the throughput monitor logs)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs: Any) -> None:
        from lightning.pytorch.callbacks.model_summary import log

        if not total_flops:
            summary_data = [column for column in summary_data if column[0] != "FLOPs"]
        table = framework.format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *summary_data)
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if not line.rstrip().endswith("Total Flops"))
        log.info("\n" + table)


def use_quiet_console(trainer: Trainer, interactive: Optional[bool] = None) -> Trainer:
    """Swap Lightning's default bar and summary for the ones above; a non-terminal stderr gets the plain
    progress line instead of a bar. A bar or summary the user configured is left alone."""
    interactive = sys.stderr.isatty() if interactive is None else interactive
    callbacks = trainer.callbacks
    for i, cb in enumerate(list(callbacks)):
        if type(cb) in (TQDMProgressBar, RichProgressBar):  # Lightning's default (enable_progress_bar: true)
            callbacks[i] = StepProgressBar() if interactive else ProgressLine()
        elif type(cb) in (ModelSummary, RichModelSummary):
            callbacks[i] = QuietModelSummary(max_depth=framework.summary_depth(cb))
    return trainer
