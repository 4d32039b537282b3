"""Run untrusted (model-written) Python programs in a sandbox and say whether their check really ran to the end.

Usage::

    with Sandbox(workers=2) as sandbox:
        results = sandbox.run_many([Job(program, test, entry_point)])   # -> [Result(passed, reason)]
    run(program, test, entry_point)                                      # one program, one-off sandbox

Each worker is one long-lived fork server (`nca/evaluation/sandbox_server.py`) in namespaces of its own: new
network (no interfaces but loopback), PID, IPC, UTS and mount namespaces whose file system is only the
system libraries and the Python install (read-only), a private size-limited /tmp, no /proc and a clean
environment. Two ways to build them, the same containment (docs/sandbox.md):
  bwrap     bubblewrap, where it is installed and may create namespaces;
  unshare   util-linux's ``unshare`` + ``pivot_root`` (root, or where unprivileged user namespaces are
            allowed), with ``setpriv`` dropping the capabilities the server does not need.
Every program runs in its own process forked from the server (setsid, rlimits for CPU time, address space,
processes, file size and open files, a per-worker uid when root, an empty 0700 working directory removed
afterwards); the server kills everything in its PID namespace once the program ends or its wall-clock
timeout passes. How a pass is made unforgeable is explained in `nca/evaluation/sandbox_guard.py`.

Where neither works, ``isolation="auto"`` refuses in one line (`SandboxUnavailable`), naming bubblewrap;
``isolation="none"`` is the explicit opt-in to run without namespaces (rlimits, a clean environment, the
guard and, as root, a per-worker uid only), with one loud warning.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import select
import shutil
import struct
import subprocess
import sys
import sysconfig
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, NamedTuple

SERVER = Path(__file__).with_name("sandbox_server.py")
GUARD = SERVER.with_name("sandbox_guard.py")  # imported by the server from its own directory
ISOLATIONS = ("auto", "bwrap", "unshare", "none")
_warned = False
BWRAP_HINT = "install bubblewrap (apt-get install -y bubblewrap)"


class SandboxUnavailable(RuntimeError):
    """No namespaces can be made here, and running model-written code without them was not asked for."""


@dataclass(frozen=True)
class Limits:
    """Per-program limits; ``timeout`` is wall-clock seconds (HumanEval's 3 s), cpu_seconds defaults to it + 1."""

    timeout: float = 3.0
    cpu_seconds: int | None = None
    memory_bytes: int = 1 << 30
    processes: int = 16
    file_size: int = 16 << 20
    open_files: int = 64

    def __post_init__(self):
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout!r}")
        for name in ("memory_bytes", "processes", "file_size", "open_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1, got {getattr(self, name)!r}")


class Job(NamedTuple):
    """``program`` runs first, then ``test`` in the same namespace, then ``check(<entry_point>)``; with
    ``entry_point=None`` the program alone must run to the end."""

    program: str
    test: str = ""
    entry_point: str | None = None


class Result(NamedTuple):
    passed: bool
    reason: str  # "passed", "failed: AssertionError", "timed out", "exited early: SystemExit(0)", ...


def _python() -> tuple[str, str]:
    """The real interpreter (not a venv shim) and the install prefix that must be visible inside."""
    executable = os.path.realpath(sys.executable)
    return executable, os.path.realpath(sys.base_prefix)


def _bwrap_prefix() -> list[str]:
    """bubblewrap up to (not including) the command it runs."""
    executable, prefix = _python()
    command = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
               "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
               "--setenv", "PYTHONHASHSEED", "0", "--setenv", "TMPDIR", "/tmp"]
    if os.geteuid() == 0:  # keep only what the server needs to give each program its own uid and clean up
        command += ["--cap-drop", "ALL"] + [arg for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE",
                                                            "CAP_FOWNER", "CAP_KILL") for arg in ("--cap-add", cap)]
    for path in ("/usr", "/lib", "/lib64", "/lib32", "/bin"):
        command += ["--ro-bind-try", path, path]
    for parent in reversed(Path(prefix).parents[:-1]):  # e.g. /root is 0700 on the host: let other uids through
        command += ["--perms", "0755", "--dir", str(parent)]
    command += ["--ro-bind", prefix, prefix, "--dev", "/dev", "--size", str(256 << 20), "--tmpfs", "/tmp",
                "--ro-bind", str(SERVER), "/sandbox/server.py", "--ro-bind", str(GUARD), "/sandbox/sandbox_guard.py",
                "--chdir", "/tmp"]
    if not executable.startswith(prefix + os.sep):
        command += ["--ro-bind", executable, executable]
    return command


def _bwrap_command(slot: int, config: dict) -> list[str]:
    return _bwrap_prefix() + [_python()[0], "-I", "-S", "/sandbox/server.py", str(slot), json.dumps(config)]


# Builds the sandbox's root in a fresh mount namespace (a tmpfs over /tmp, seen by nothing outside), makes
# it the root with pivot_root, detaches the host's file system and runs the server with fewer capabilities.
# $1 python, $2 its install prefix ("" when under /usr), $3 the interpreter when outside both, $4 server,
# $5 guard, $6 "user" inside a user namespace (then the server keeps no capability at all); then python's args.
_UNSHARE_SCRIPT = r"""set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022
PY=$1 PREFIX=$2 EXE=$3 SERVER=$4 GUARD=$5 USERNS=$6
shift 6
mount -t tmpfs -o size=16m,mode=0755 sandbox-root /tmp
cd /tmp
for d in /usr /bin /lib /lib64 /lib32 /sbin; do
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" ".$d"
  elif [ -d "$d" ]; then mkdir -p ".$d"; mount --bind -o ro,nosuid,nodev "$d" ".$d"; fi
done
if [ -n "$PREFIX" ]; then mkdir -p ".$PREFIX"; mount --bind -o ro,nosuid,nodev "$PREFIX" ".$PREFIX"; fi
if [ -n "$EXE" ]; then mkdir -p ".${EXE%/*}"; touch ".$EXE"; mount --bind -o ro,nosuid,nodev "$EXE" ".$EXE"; fi
mkdir dev tmp sandbox proc .old
for n in null zero full random urandom; do touch "dev/$n"; mount --bind "/dev/$n" "dev/$n"; done
mount -t tmpfs -o size=256m,mode=0755,nosuid,nodev sandbox-tmp tmp
cp "$SERVER" sandbox/server.py
cp "$GUARD" sandbox/sandbox_guard.py
pivot_root . .old
cd /
mount -t proc proc /proc
umount -l /.old
umount /proc
rmdir /.old /proc
mount -o remount,ro,bind /
if [ "$USERNS" = user ]; then
  exec setpriv --inh-caps=-all --bounding-set=-all \
    --securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked -- "$PY" -I -S "$@"
fi
exec setpriv --inh-caps=-all --bounding-set=-all,+setuid,+setgid,+chown,+dac_override,+fowner,+kill \
  -- "$PY" -I -S "$@"
"""
_SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin")


def _unshare_prefix() -> list[str]:
    """``unshare`` + the set-up script up to (not including) python's arguments."""
    executable, prefix = _python()
    visible = lambda path: any(path == d or path.startswith(d + os.sep) for d in _SYSTEM_DIRS)  # noqa: E731
    userns = os.geteuid() != 0
    extra = "" if visible(executable) or executable.startswith(prefix + os.sep) else executable
    return (["unshare"] + (["--user", "--map-root-user"] if userns else [])
            + ["--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--kill-child", "--",
               "/bin/sh", "-c", _UNSHARE_SCRIPT, "sandbox", executable, "" if visible(prefix) else prefix, extra,
               str(SERVER), str(GUARD), "user" if userns else "root"])


def _unshare_command(slot: int, config: dict) -> list[str]:
    return _unshare_prefix() + ["/sandbox/server.py", str(slot), json.dumps(config)]


def _plain_command(slot: int, config: dict) -> list[str]:
    return [_python()[0], "-I", "-S", str(SERVER), str(slot), json.dumps(config)]


def _probe(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@lru_cache(maxsize=None)
def available(isolation: str) -> bool:
    """Whether ``isolation`` ('bwrap', 'unshare', 'none') works on this machine (tried once)."""
    executable = _python()[0]
    check = ["-c", "import mmap, socket, threading, dataclasses"]  # the install is readable inside
    if isolation == "bwrap":
        return bool(shutil.which("bwrap")) and _probe(_bwrap_prefix() + [executable, "-I", "-S", *check])
    if isolation == "unshare":
        tools = ("unshare", "setpriv", "pivot_root", "mount")
        return all(shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") for t in tools) and _probe(
            _unshare_prefix() + check)
    return isolation == "none"


def detect_isolation() -> str | None:
    """The namespaces that work here: 'bwrap', else 'unshare', else None (then only an explicit 'none' runs)."""
    return next((kind for kind in ("bwrap", "unshare") if available(kind)), None)


def resolve_isolation(isolation: str = "auto") -> str:
    """The isolation a `Sandbox` would use: ``isolation`` itself, or for 'auto' what `detect_isolation` finds;
    `SandboxUnavailable` (one line, naming bubblewrap) when that cannot work here."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    chosen = detect_isolation() if isolation == "auto" else isolation
    if chosen is None:
        raise SandboxUnavailable(
            f"no sandbox for model-written code here: {BWRAP_HINT}, or allow namespaces (root or unprivileged "
            "user namespaces for unshare); to run it without one, opt in with isolation 'none' "
            "(nca evaluate --sandbox none, recorded in results.json)")
    if not available(chosen):
        raise SandboxUnavailable(f"isolation {chosen!r} does not work here: {BWRAP_HINT} (bwrap) or run as root "
                                 "or with user namespaces (unshare); or use 'auto'")
    return chosen


def _warn_unisolated() -> None:
    global _warned
    if not _warned:
        _warned = True
        exposed = "the network, every file this user can read" + ("" if os.geteuid() == 0 else
                                                                  ", and signal or write as you")
        message = "\n".join([
            "!" * 78,
            "SANDBOX WARNING: isolation='none' was chosen: untrusted programs run without namespaces, with",
            f"rlimits, a clean environment and the Python guard ONLY: they can reach {exposed}.",
            f"To contain them, {BWRAP_HINT} or allow namespaces.",
            "!" * 78])
        print(message, file=sys.stderr, flush=True)
        warnings.warn("sandbox without namespaces (see stderr)", RuntimeWarning, stacklevel=3)


class _Server:
    """One fork server process; jobs go one at a time, framed JSON both ways."""

    def __init__(self, command: list[str]):
        self.command = command
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})

    def ask(self, job: dict, timeout: float) -> dict:
        """Send one job and wait at most ``timeout`` seconds for its verdict (no reader thread: select)."""
        message = json.dumps(job).encode()
        deadline = time.monotonic() + timeout
        try:
            self.process.stdin.write(struct.pack(">I", len(message)) + message)
            self.process.stdin.flush()
            (size,) = struct.unpack(">I", self._read(4, deadline))
            return json.loads(self._read(size, deadline))
        except TimeoutError as error:
            raise RuntimeError(str(error)) from error
        except (OSError, EOFError, ValueError) as error:
            raise RuntimeError(f"the sandbox server died: {error}") from error

    def _read(self, size: int, deadline: float) -> bytes:
        fd, data = self.process.stdout.fileno(), b""
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("the sandbox server did not answer in time")
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise EOFError(self._stderr_tail() or "its output ended")
            data += chunk
        return data

    def _stderr_tail(self) -> str:
        fd = self.process.stderr.fileno()
        os.set_blocking(fd, False)
        try:
            return os.read(fd, 1 << 16).decode(errors="replace")[-2000:].strip()
        except OSError:
            return ""

    def close(self) -> None:
        """End of input stops the server; kill it only if it does not stop."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()


class Sandbox:
    """A pool of ``workers`` fork servers; use as a context manager. Servers are started by one thread that
    lives as long as the pool: bubblewrap's --die-with-parent follows the thread that started it, so a
    server restarted from a short-lived worker thread would die with that thread."""

    def __init__(self, workers: int = 2, limits: Limits | None = None, isolation: str = "auto"):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.limits = limits or Limits()
        self.isolation = resolve_isolation(isolation)
        if self.isolation == "none":
            _warn_unisolated()
        self.workers = workers
        self._idle: queue.Queue[tuple[int, _Server]] = queue.Queue()
        self._started: list[_Server] = []
        self._spawner: ThreadPoolExecutor | None = None
        self._cpu: dict[int, float] = {}  # latest cumulative CPU seconds per live server
        self._cpu_replaced = 0.0  # what servers that died had used
        self._uid_base = 100_000 + 64 * secrets.randbelow(1 << 20)

    def _config(self) -> dict:
        limits = asdict(self.limits)
        private = self.isolation != "none"  # no /proc, a PID namespace and a /tmp of its own
        return {"limits": limits, "private_proc": private, "pid_namespace": private, "private_tmp": private,
                "native_dir": sysconfig.get_config_var("DESTSHARED"),
                # as root, each program gets a uid of its own; chosen per pool, so that pools running at once
                # without namespaces (isolation 'none') cannot sweep each other's programs
                "uid_base": self._uid_base if os.geteuid() == 0 else None}

    def _start(self, slot: int) -> _Server:
        config = self._config()
        build = {"bwrap": _bwrap_command, "unshare": _unshare_command}.get(self.isolation, _plain_command)
        command = build(slot, config)
        server = self._spawner.submit(_Server, command).result()
        self._started.append(server)
        return server

    def __enter__(self) -> "Sandbox":
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawner")
        for slot in range(self.workers):
            self._idle.put((slot, self._start(slot)))
        return self

    def __exit__(self, *exc) -> None:
        for server in self._started:
            server.close()
        self._started.clear()
        if self._spawner is not None:
            self._spawner.shutdown()
            self._spawner = None

    def run(self, job: Job, timeout: float | None = None) -> Result:
        """Run one job on a free worker (thread-safe); a dead server fails only this job and is replaced."""
        if not self._started:
            raise RuntimeError("the sandbox is not started: use `with Sandbox(...) as sandbox:`")
        timeout = self.limits.timeout if timeout is None else timeout
        slot, server = self._idle.get()
        try:
            reply = server.ask({"program": job.program, "test": job.test, "entry_point": job.entry_point,
                                "timeout": timeout}, timeout + 30.0)
            self._cpu[slot] = float(reply.get("cpu_seconds", 0.0))
            return Result(bool(reply["passed"]), str(reply["reason"]))
        except RuntimeError as error:
            self._cpu_replaced += self._cpu.pop(slot, 0.0)
            server.close()
            server = self._start(slot)
            return Result(False, str(error))
        finally:
            self._idle.put((slot, server))

    @property
    def cpu_seconds(self) -> float:
        """CPU time the servers and the programs they ran have used so far (for benchmarks)."""
        return self._cpu_replaced + sum(self._cpu.values())

    def run_many(self, jobs: Iterable[Job], timeout: float | None = None) -> list[Result]:
        """All jobs, ``workers`` at a time, results in input order."""
        jobs = list(jobs)
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda job: self.run(job, timeout), jobs))


def run(program: str, test: str = "", entry_point: str | None = None, limits: Limits | None = None,
        isolation: str = "auto") -> Result:
    """One program in a one-off sandbox (for a batch, keep a `Sandbox` open: start-up costs ~0.1 s)."""
    with Sandbox(1, limits, isolation) as sandbox:
        return sandbox.run(Job(program, test, entry_point))


if __name__ == "__main__":  # python -m nca.evaluation.sandbox: which namespaces work here (exit 1: none)
    try:
        print(resolve_isolation("auto"))
    except SandboxUnavailable as refusal:
        print(refusal, file=sys.stderr)
        sys.exit(1)
