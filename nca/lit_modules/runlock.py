"""One writer per run: ``fit.lock`` in the run directory, taken by rank 0 before ``nca fit`` does any work.

The lock file holds the writer's pid, host, start time (and SLURM job id): it appears whole, by a hard link
of a finished temporary file, which is atomic on local and network filesystems alike (NFS included, where
``O_EXCL`` is not). A second fit of a live run is refused. A lock whose pid is dead on this host (a run
that was killed) is taken over with a notice, and so is one left by an earlier incarnation of the same
SLURM job (a requeued job starts only once the previous one has ended, possibly on another node). A lock
from another host cannot be checked from here and is refused, with the file to remove once that host's
run is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

LOCK_NAME = "fit.lock"


class RunLocked(ValueError):
    """Another live ``nca fit`` writes this run (or may: its host cannot be checked from here)."""


def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), to tell a reused pid from the
    writer; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass
class Holder:
    pid: int
    host: str
    started: str
    process_start: Optional[str] = None
    slurm_job: Optional[str] = None
    slurm_restart: int = 0

    @classmethod
    def me(cls) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S %z"),
                   _process_start(os.getpid()), os.environ.get("SLURM_JOB_ID"),
                   int(os.environ.get("SLURM_RESTART_COUNT") or 0))

    def alive(self) -> bool:
        """Whether the holder still runs (only answerable on its own host)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        now = _process_start(self.pid)
        return self.process_start is None or now is None or now == self.process_start

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


class RunLock:
    """``with RunLock(run_dir).acquire(notice=print): ...``; released (the file removed) on exit."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.held = False

    def read(self) -> Optional[Holder]:
        try:
            return Holder(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):  # unreadable: treat as a lock of unknown origin
            return Holder(-1, "an unknown host", "an unknown time")

    def _create(self, me: Holder) -> bool:
        """Create the lock file whole, unless one exists (a hard link fails on an existing name)."""
        tmp = self.directory / f".{LOCK_NAME}.{me.host}.{me.pid}.partial"
        tmp.write_text(json.dumps(asdict(me)))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, stale: Holder) -> bool:
        """Remove a stale lock, unless another process replaced it meanwhile (then leave theirs)."""
        aside = self.directory / f".{LOCK_NAME}.{os.getpid()}.stale.partial"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else removed it: race for a fresh one
        try:
            if Holder(**json.loads(aside.read_text())) != stale:  # a fresh lock: put it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                return False
        except (ValueError, TypeError):
            pass
        finally:
            aside.unlink(missing_ok=True)
        return True

    def acquire(self, notice: Callable[[str], None] = print) -> "RunLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        me = Holder.me()
        for _ in range(3):
            if self._create(me):
                self.held = True
                return self
            holder = self.read()
            if holder is None:
                continue
            same_job = me.slurm_job is not None and holder.slurm_job == me.slurm_job and (
                holder.slurm_restart < me.slurm_restart)
            if same_job or (holder.host == me.host and holder.pid != -1 and not holder.alive()):
                why = "an earlier run of this SLURM job" if same_job else "a process that no longer runs"
                if self._take_over(holder):
                    notice(f"nca fit: taking over {self.path}, left by {why} ({holder.describe()})")
                continue
            raise RunLocked(self._refusal(holder, me))
        raise RunLocked(f"{self.path} keeps changing: another nca fit is starting on this run; try again")

    def _refusal(self, holder: Holder, me: Holder) -> str:
        if holder.host == me.host:
            return (f"{self.directory} is being trained by another nca fit ({holder.describe()}); wait for it, "
                    "stop it, or train another run (--trainer.logger.init_args.name)")
        return (f"{self.directory} is locked by an nca fit on another host ({holder.describe()}), which cannot "
                f"be checked from {me.host}. If that run is gone (its job ended or the host died), remove "
                f"{self.path} and start again")

    def release(self) -> None:
        """Remove the lock file if it is still this process's own."""
        holder = self.read()
        if self.held and holder is not None and (holder.pid, holder.host) == (os.getpid(), socket.gethostname()):
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
