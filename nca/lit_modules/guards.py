"""Stop a diverging run before it writes a bad checkpoint.

A loss or gradient that is NaN/inf is caught after the backward pass, before the optimizer step: the step
is skipped (gradients dropped, so the weights stay as they were) and reported with its number. After
``max_skipped_steps`` such steps the run ends with ``TrainingDiverged``, raised inside the same training
batch, so no ``ModelCheckpoint`` save (it runs at the end of the batch) ever sees the bad state and
``last.ckpt`` keeps the last good weights. ``nca fit`` prints it in one line and exits non-zero.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn


class TrainingDiverged(RuntimeError):
    """The loss or the gradients stayed non-finite for more steps than allowed."""


def _all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    if not tensors:
        return torch.tensor(True)
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


class NonFiniteGuard(Callback):
    """Skip steps with a non-finite loss or gradient; end the run after ``max_skipped_steps`` of them.

    Every rank takes the same decision (any rank's non-finite gradient skips the step everywhere), so
    data-parallel replicas and FSDP shards stay in step.

    Args:
        max_skipped_steps: non-finite steps to skip (each reported with its number) before the run ends
            with ``TrainingDiverged``; 0 ends it at the first one.
    """

    def __init__(self, max_skipped_steps: int = 0) -> None:
        if max_skipped_steps < 0:
            raise ValueError(f"max_skipped_steps must be >= 0, got {max_skipped_steps}")
        self.max_skipped_steps = max_skipped_steps
        self.skipped: list[int] = []  # global steps whose update was dropped
        self._loss_finite: Optional[bool] = None

    @property
    def state_key(self) -> str:
        return "NonFiniteGuard"

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        self._loss_finite = bool(torch.isfinite(loss.detach()).all())

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = self._loss_finite is not False
        if getattr(trainer.precision_plugin, "scaler", None) is None:  # fp16's GradScaler skips inf grads itself
            finite = finite and bool(_all_finite(grads))
        bad = trainer.strategy.reduce_boolean_decision(not finite, all=False)
        self._loss_finite = None
        if not bad:
            return
        for group in optimizer.param_groups:  # the optimizer skips parameters without a gradient
            for p in group["params"]:
                p.grad = None
        step = trainer.global_step
        self.skipped.append(step)
        if len(self.skipped) > self.max_skipped_steps:
            ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
                trainer.checkpoint_callback, "best_model_path", "")
            kept = f"; the last checkpoint written before it, {ckpt}, is untouched" if ckpt else ""
            raise TrainingDiverged(
                f"training diverged: non-finite loss or gradients at step {step} "
                f"({len(self.skipped)} such step(s): {self.skipped[:10]}){kept}. Lower model.lr, raise warm-up, "
                "keep trainer.gradient_clip_val, or allow a few skipped steps (nca fit: --guard.max_skipped_steps N)"
            )
        rank_zero_warn(f"step {step}: non-finite loss or gradients, update skipped "
                       f"({len(self.skipped)}/{self.max_skipped_steps} allowed)")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": list(self.skipped)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = list(state_dict.get("skipped", []))
