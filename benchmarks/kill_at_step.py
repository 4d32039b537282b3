"""A Lightning callback that SIGKILLs its own training process at a step: the crash of the GPU check's resume part.

Its own module so that ``benchmarks/gpu_check.py`` stays free of Lightning imports (its CPU dry run is quick);
the fit command loads it as ``--trainer.callbacks+=kill_at_step.KillAtStep`` with benchmarks/ on PYTHONPATH.
"""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILL this process once ``global_step`` reaches ``step``: a hard crash, nothing flushed or saved."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
