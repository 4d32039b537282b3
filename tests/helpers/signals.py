"""Callbacks for preemption and resume tests, named by class path in a run's config: one records every step
(per rank, to a JSON-lines file), one sends this process a signal at a chosen step."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

from lightning.pytorch import Callback


class RecordSteps(Callback):
    """Appends ``{step, loss, lr, adam_step, rows}`` of every optimizer step to ``OUT/steps_rank{R}.jsonl``:
    ``step`` is the global step after it, ``lr`` the rate it used, ``adam_step`` the optimizer's own count
    before it, ``rows`` short hashes of the batch's rows."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        optimizer = trainer.optimizers[0]
        self.lr = optimizer.param_groups[0]["lr"]
        states = [s for s in optimizer.state.values() if "step" in s]
        self.adam_step = int(states[0]["step"]) if states else 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        rows = [hashlib.sha1(r.numpy().tobytes()).hexdigest()[:16] for r in batch["input_ids"].cpu()]
        record = {"step": trainer.global_step, "loss": float(outputs["loss"]), "lr": self.lr,
                  "adam_step": self.adam_step, "rows": rows}
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / f"steps_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def read_steps(out: Path, rank: int = 0) -> dict[int, dict]:
    lines = (Path(out) / f"steps_rank{rank}.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


class SignalAt(Callback):
    """Sends ``signal_name`` to this very process when the optimizer step number ``step`` (0-based) starts, on
    ``rank`` only: the handler runs at once, in the middle of that step, as a scheduler's signal would."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", rank: int = 0):
        self.step, self.signum, self.rank = step, signal.Signals[signal_name], rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            os.kill(os.getpid(), self.signum)
