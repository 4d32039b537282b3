"""Preemption: SIGTERM or SIGUSR1 end a run at the next optimizer step with a resumable ``last.ckpt``.

What Lightning 2.6 does alone: its SIGTERM handler makes the loop stop after the current step with
``SIGTERMException``, a ``SystemExit`` of status 0, and saves nothing, so up to ``every_n_train_steps - 1``
steps are lost and the job script sees success. With ``SLURMEnvironment(auto_requeue=True)`` (the default
when SLURM runs the job) its SIGUSR1 handler saves ``hpc_ckpt_N.ckpt`` into ``default_root_dir`` from inside
the signal handler (collectives included, at whatever point the signal lands) and runs
``scontrol requeue``.

``Preemption`` keeps those steps at a safe point instead. Its handlers (installed when training starts,
replacing Lightning's for the training loop; Lightning restores the originals at teardown) only note the
signal. At the end of every optimizer step all ranks agree, in one small all-reduce, whether any of them got
one; if so every rank takes part in writing ``last.ckpt`` of this step into the run's checkpoint folder,
rank 0 requeues the SLURM job when the signal was SLURM's requeue signal and auto-requeue is on, and the
run ends with ``Preempted``: ``nca fit`` prints one line and exits with 128 + the signal number (143 for
SIGTERM). A requeued job starts the same command again and resumes from ``last.ckpt`` by itself
(``slurm_requeued``). Processes that Lightning's own launcher started (local rank > 0) exit 0 after the
save: their launcher, which reports for them, would otherwise kill itself on seeing a child fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any, Optional, Sequence

import torch
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from nca.lit_modules import framework


class Preempted(Exception):
    """The run stopped on a signal after saving a resumable checkpoint."""

    def __init__(self, step: int, signum: int, path: Optional[str], requeued: Optional[str], report: bool,
                 exit_code: int) -> None:
        self.step, self.signum, self.path, self.requeued = step, signum, path, requeued
        self.report, self.exit_code = report, exit_code
        name = signal.Signals(signum).name
        saved = f"saved {path}" if path else "no checkpoint written (checkpointing is off)"
        tail = (f"SLURM job {requeued} requeued: it resumes from there by itself" if requeued
                else "resume with --ckpt_path last")
        super().__init__(f"preempted at step {step} ({name}); {saved}; {tail}")


def slurm_requeued() -> bool:
    """Whether this process is a requeued SLURM job (SLURM counts restarts in SLURM_RESTART_COUNT)."""
    return bool(os.environ.get("SLURM_JOB_ID")) and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def save_last(trainer: Trainer) -> Optional[str]:
    """Write ``last.ckpt`` of the current step into the run's checkpoint folder (a collective: every rank
    calls it); None when the run has no checkpoint folder."""
    cb = trainer.checkpoint_callback
    if not isinstance(cb, ModelCheckpoint) or cb.dirpath is None:
        return None
    metrics = {"step": torch.tensor(trainer.global_step), "epoch": torch.tensor(trainer.current_epoch)}
    path = cb.format_checkpoint_name(metrics, cb.CHECKPOINT_NAME_LAST)
    cb.last_model_path = path  # part of the saved state, as ModelCheckpoint sets it before its own saves
    trainer.save_checkpoint(path, weights_only=False)  # the whole training state: a resume needs it
    return path


def requeue(trainer: Trainer, signum: int) -> Optional[str]:
    """``scontrol requeue`` this job (rank 0), as Lightning's SLURM handler does, when the signal is SLURM's
    requeue signal and auto-requeue is on; the job id, or None."""
    env = framework.cluster_environment(trainer)
    if not (isinstance(env, SLURMEnvironment) and env.auto_requeue and signum == env.requeue_signal):
        return None
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    if trainer.is_global_zero:
        try:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True).returncode == 0
        except OSError:
            done = False
        if not done:
            rank_zero_warn(f"scontrol requeue {job} failed; resume by hand with --ckpt_path last")
            return None
    return job


class Preemption(Callback):
    """Save ``last.ckpt`` and stop on the first of ``signals`` (and SLURM's requeue signal) at the next
    optimizer step, on every rank together. Always on in ``nca fit``.

    Args:
        signals: signal names to treat as preemption.
    """

    def __init__(self, signals: Sequence[str] = ("SIGTERM", "SIGUSR1")) -> None:
        unknown = [s for s in signals if not hasattr(signal.Signals, str(s))]
        if unknown:
            raise ValueError(f"preemption.signals: unknown signal name(s) {unknown}; e.g. SIGTERM, SIGUSR1")
        self.signals = [signal.Signals[s] for s in signals]
        self.received: Optional[int] = None
        self._step_seen = -1

    def _note(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.received = signal.SIGTERM if framework.take_received_sigterm(trainer) else None
        self._step_seen = trainer.global_step
        env = framework.cluster_environment(trainer)
        extra = [env.requeue_signal] if isinstance(env, SLURMEnvironment) and env.requeue_signal else []
        if threading.current_thread() is threading.main_thread():
            for signum in {*self.signals, *extra}:
                signal.signal(signum, self._note)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step == self._step_seen:  # inside gradient accumulation: no optimizer step yet
            return
        self._step_seen = trainer.global_step
        signum = self.received or 0
        if trainer.world_size > 1:  # the same decision (and signal) on every rank
            signum = int(trainer.strategy.reduce(torch.tensor(signum, device=pl_module.device), reduce_op="max"))
        if not signum or 0 < trainer.max_steps <= trainer.global_step:  # a finished run saves and ends as usual
            return
        rank_zero_info(f"{signal.Signals(signum).name} received: saving step {trainer.global_step} and stopping")
        path = save_last(trainer)
        job = requeue(trainer, signum)
        child = isinstance(framework.cluster_environment(trainer), LightningEnvironment) and trainer.local_rank > 0
        raise Preempted(trainer.global_step, signum, path, job, report=trainer.is_global_zero,
                        exit_code=0 if child else 128 + signum)
