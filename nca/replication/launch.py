"""Start the pending runs of a study, stage 1 before stage 2: locally (``jobs`` processes at once) or as SLURM
jobs through submitit (``cluster="local"``/``"debug"`` run submitit's own executors, for tests without SLURM).

Each run is its ``nca fit`` command in a process of its own, its output appended to ``<run>/replicate.log``
(which starts with the command line). Local runs are forked from a server that imported the training stack
once (multiprocessing's ``forkserver``), so a run costs its training and not the ~8 s import of torch,
Lightning and litgpt; a SLURM job runs the command line itself. A run whose stage-1 run failed is not
started. Returns the ids of failed runs; the caller builds the report after this.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

from nca.replication.plan import Run
from nca.replication.state import Status, command_for, mark_done, status, write_spec

# The folder that holds this `nca` package: runs import the same code as the driver, installed or not.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


@dataclass
class SlurmOptions:
    """submitit settings for ``--launcher slurm``.

    Args:
        cluster: slurm, or submitit's local/debug executors (no SLURM; for tests).
        partition: the SLURM partition to submit to.
        time_min: time limit of each run's job in minutes (``--plan`` gives each run's GPU-hours).
        gpus_per_node: GPUs of each job (at least the run's own devices).
        cpus_per_task: CPUs of each job.
        mem_gb: memory of each job in GB (None: the partition's default).
    """

    cluster: Literal["slurm", "local", "debug"] = "slurm"
    partition: Optional[str] = None
    time_min: int = 60
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: Optional[int] = None


def run_command(command: list[str], log_path: str, threads: int) -> int:
    """Run one command in the current directory (relative data paths are read from where `nca replicate` runs),
    appending its output to ``log_path``; returns its exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        return subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


PRELOAD = ["nca.cli", "nca.cli.train"]  # what the fork server imports once for every local run


def fork_context() -> multiprocessing.context.BaseContext:
    """A ``forkserver`` context whose server has imported ``PRELOAD`` (started on first use, single-threaded)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _fit_here(argv: list[str], log_path: str, threads: int, cwd: str) -> None:
    """Body of a forked run: the caller's directory, output to the run's log, ``threads`` OMP threads, then what
    ``python -m nca ARGV`` does (``runpy``: the command line's own entry point, as the subprocess ran it)."""
    os.chdir(cwd)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    import runpy

    import torch

    torch.set_num_threads(threads)
    sys.argv = ["nca", *argv]
    try:
        runpy.run_module("nca", run_name="__main__", alter_sys=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def fork_command(command: list[str], log_path: str, threads: int, context=None) -> int:
    """Run a ``python -m nca ...`` command (as ``Run.command`` gives it) in a process forked from the fork
    server, appending its output to ``log_path``; returns its exit code (negative: killed by that signal).
    Any other command runs as a subprocess."""
    if command[1:3] != ["-m", "nca"]:
        return run_command(command, log_path, threads)
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
    process = (context or fork_context()).Process(target=_fit_here, args=(command[3:], log_path, threads, os.getcwd()))
    process.start()
    process.join()
    return process.exitcode


def pending(runs: list[Run], out: Path) -> list[Run]:
    return [r for r in runs if status(r, out) is not Status.DONE]


def _waves(runs: list[Run]) -> list[list[Run]]:
    return [w for w in ([r for r in runs if r.stage == 1], [r for r in runs if r.stage == 2]) if w]


def launch(runs: list[Run], out: Path, launcher: str = "local", jobs: int = 1, threads: int = 1,
           slurm: SlurmOptions | None = None, say: Callable[[str], None] | None = None) -> list[str]:
    """Run every run that is not done; returns the ids that failed (or were blocked by a failed stage-1 run)."""
    if jobs < 1 or threads < 1:
        raise ValueError(f"--jobs and --threads_per_job must be >= 1, got {jobs} and {threads}")
    if launcher not in ("local", "slurm"):
        raise ValueError(f"--launcher must be 'local' or 'slurm', got {launcher!r}")
    say = say or (lambda message: print(message, flush=True))
    failed: list[str] = []
    for wave in _waves(pending(runs, out)):
        blocked = [r for r in wave if r.after in failed]
        failed += [r.id for r in blocked]
        wave = [r for r in wave if r not in blocked]
        for r in wave:
            write_spec(r, out)
        commands = [(r, command_for(r, out), str(r.directory(out) / "replicate.log")) for r in wave]
        for r, command, _ in commands:
            say(f"queue {r.id}{' (resume from last.ckpt)' if command[-1] == 'last' else ''}")
        start = time.time()

        def finish(item, result) -> None:  # marked at once, so an interruption keeps every finished run
            (r, _, log), (code, seconds) = item, result
            if code == 0:
                mark_done(r, out, seconds)
                say(f"done  {r.id} ({seconds:.0f} s)")
            else:
                failed.append(r.id)
                say(f"FAILED {r.id} (exit {code}); see {log}")

        if launcher == "local":
            context = fork_context()
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(_timed, fork_command, c[1], c[2], threads, context): c for c in commands}
                for future in as_completed(futures):
                    finish(futures[future], future.result())
        else:
            _submit(commands, out, slurm or SlurmOptions(), threads, finish)
        say(f"stage {wave[0].stage if wave else '?'}: {len(wave)} run(s) in {time.time() - start:.0f} s")
    return failed


def _timed(fn, *args) -> tuple[int, float]:
    start = time.time()
    code = fn(*args)
    return code, time.time() - start


def devices_of(command: list[str]) -> int:
    """GPUs a run's command asks for (0 on CPU)."""
    if "--trainer.accelerator" not in command or command[command.index("--trainer.accelerator") + 1] != "gpu":
        return 0
    return int(command[command.index("--trainer.devices") + 1]) if "--trainer.devices" in command else 1


def _submit(commands, out: Path, options: SlurmOptions, threads: int, finish) -> None:
    """One SLURM job per run. A multi-GPU run (a ladder rung with gpus > 1) gets one task per GPU, which Lightning's
    SLURM environment turns into its ranks (not yet tried on a real cluster)."""
    try:
        import submitit
    except ImportError as err:
        raise ImportError('--launcher slurm needs submitit: pip install -e ".[slurm]"') from err
    executor = submitit.AutoExecutor(folder=str(Path(out) / "slurm" / "%j"), cluster=options.cluster)
    jobs = []
    for _, command, log in commands:
        gpus = max(options.gpus_per_node, devices_of(command))
        params = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_task, "name": "nca-replicate"}
        if gpus:
            params["gpus_per_node"] = gpus
        if devices_of(command) > 1:
            params["tasks_per_node"] = devices_of(command)
        if options.mem_gb:
            params["mem_gb"] = options.mem_gb
        if options.partition:
            params["slurm_partition"] = options.partition
        executor.update_parameters(**params)
        jobs.append(executor.submit(_timed, run_command, command, log, threads))
    for item, job in zip(commands, jobs):
        try:
            result = tuple(job.result())
        except Exception:  # a job killed by SLURM (time limit, node failure) counts as a failed run
            result = (1, 0.0)
        finish(item, result)
