"""The inside of the sandbox: a fork server that runs one untrusted program per forked child.

Started by `nca.evaluation.sandbox.Sandbox` (inside bubblewrap where it can), standard library only (it runs
under ``python -I -S``). It reads framed JSON jobs on stdin and answers each with a framed JSON verdict on
stdout. The server itself never runs untrusted code; every program runs in a fresh child forked from it,
so a hostile program cannot change the state a later program starts from.

Child, in order: own session, stdin/stdout on /dev/null, rlimits, a uid of its own when the server is root
(the child can then signal, trace or write nothing of the server's or another program's), its own empty
0700 working directory, a clean environment; then `sandbox_guard` (the guard and the harness).

How a pass is made unforgeable: `sandbox_guard` (next to this file).
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import secrets
import select
import selectors
import shutil
import signal
import struct
import sys
import sysconfig
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # python -I leaves the script's directory out
import sandbox_guard  # noqa: E402

del sys.path[0]

# Imported once here so a forked program finds them ready (most HumanEval programs use some of them), and
# importable even where a program's uid cannot read the install (the fallbacks, with Python under /root).
import array, bisect, calendar, cmath, collections, collections.abc, copy, datetime, decimal  # noqa: E401,F401
import fractions, functools, hashlib, heapq, itertools, math, operator, random, re, statistics  # noqa: E401,F401
import string, textwrap, typing, unicodedata  # noqa: E401,F401

REASON_PREFIX = "sandbox-reason: "


def _limit(limits: dict, timeout: float) -> None:
    cpu = int(limits.get("cpu_seconds") or timeout + 1)
    for which, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, limits["memory_bytes"]),
                         (resource.RLIMIT_NPROC, limits["processes"]), (resource.RLIMIT_FSIZE, limits["file_size"]),
                         (resource.RLIMIT_NOFILE, limits["open_files"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))


def _child(job: dict, fds: tuple[int, int, int], uid: int | None, workdir: str, config: dict) -> None:
    """Set up and run one program in the forked child; never returns (whatever the program rebinds: what the
    error handling needs is bound here first, and the outer finally always exits)."""
    write, exit_ = os.write, os._exit
    tampered, system_exit, base_exception = sandbox_guard.Tampered, SystemExit, BaseException
    reason = "tampered with the harness: it raised the sandbox's events"  # the finish returns only if poisoned
    try:
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (devnull, devnull) + fds]  # no clobbering below
            for target, source in enumerate(high):
                os.dup2(source, target)
            os.closerange(5, 1 << 16)
            _limit(config["limits"], job["timeout"])
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            os.chdir(workdir)
            os.umask(0o077)
            os.environ.clear()
            os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
            sys.argv = ["program.py"]
            # dont_inherit: not this file's `from __future__ import annotations`
            program_code = compile(job["program"], "program.py", "exec", dont_inherit=True)
            test_code = compile(job.get("test") or "", "test.py", "exec", dont_inherit=True)
            nonce = b""
            while chunk := os.read(3, 256):
                nonce += chunk
            os.close(3)
            sandbox_guard.disable_signal_handlers_and_threads()
            sandbox_guard.install_guard(nonce, 4, config["native_dir"], config["private_proc"])
            del nonce
            sandbox_guard.run_untrusted(program_code, test_code, job.get("entry_point"))
        except system_exit as error:
            reason = f"exited early: SystemExit({error.code!r})"
        except tampered as error:
            reason = f"tampered with the harness: {error}"
        except base_exception as error:  # noqa: BLE001 - any failure of the program is a verdict
            try:
                message = str(error).splitlines()[0][:200] if str(error) else ""
                reason = f"failed: {type(error).__name__}" + (f": {message}" if message else "")
            except base_exception:  # noqa: BLE001
                reason = "failed: an exception that cannot be printed"
        write(2, f"\n{REASON_PREFIX}{reason}\n".encode())
    finally:
        exit_(1)


def _read_some(fd: int, buffer: bytearray, cap: int, keep_tail: bool) -> bool:
    """One non-blocking read into ``buffer`` (its first or last ``cap`` bytes kept); False at end of file."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return True
    buffer += chunk
    if keep_tail:
        del buffer[:-cap]
    else:
        del buffer[cap:]
    return bool(chunk)


def _drain(fd: int, buffer: bytearray, cap: int, keep_tail: bool) -> None:
    """Everything left once the writers are dead."""
    while _read_some(fd, buffer, cap, keep_tail):
        try:
            if not select.select([fd], [], [], 0)[0]:
                return
        except OSError:
            return


def _sweep(pid: int, uid: int | None, pid_namespace: bool) -> None:
    """Kill everything the program started. In a private PID namespace kill(-1) reaches every process there
    but this server (and bubblewrap's init); outside one, every process of the program's uid (kill(-1) from a
    helper running as that uid); unprivileged, its process group."""
    if pid_namespace:
        os.kill(-1, signal.SIGKILL)
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if uid is None:
        return
    killer = os.fork()
    if killer == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(killer, 0)


def _reap() -> None:
    """Wait for every process left in the namespace. Under ``unshare`` the server is its PID 1, so the
    program's orphans (killed by the sweep) become its children: reaped here, they free their uid's process
    count before the next program; under bubblewrap there are none and this returns at once."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _clean(workdir: str, private_tmp: bool) -> None:
    """Remove the program's directory; in the sandbox's own /tmp, everything else too (a program running as
    the server's uid, when not root, can write there)."""
    shutil.rmtree(workdir, ignore_errors=True)
    if private_tmp:
        for entry in os.scandir(tempfile.gettempdir()):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def _describe(status: int | None, timed_out: bool, result: bytes, nonce: bytes, stderr: bytes) -> tuple[bool, str]:
    if result == nonce:
        return True, "passed"
    if timed_out:
        return False, "timed out"
    if result:
        return False, "tampered with the result channel"
    reasons = [line for line in stderr.decode(errors="replace").splitlines() if line.startswith(REASON_PREFIX)]
    if reasons:
        return False, reasons[-1][len(REASON_PREFIX):]
    if status is not None and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        hint = " (CPU limit)" if number == signal.SIGXCPU else ""
        return False, f"killed by {name}{hint}"
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    return False, f"exited before the check completed (exit status {code})"


def run_job(job: dict, slot: int, config: dict) -> dict:
    """Fork one child for ``job``, wait for it (at most its timeout), clean up, and say what happened."""
    uid = config["uid_base"] + slot if config.get("uid_base") is not None else None
    workdir = tempfile.mkdtemp(prefix="job-")
    if uid is not None:
        os.chown(workdir, uid, uid)
    nonce_r, nonce_w = os.pipe()
    result_r, result_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (nonce_w, result_r, err_r):
            os.close(fd)
        _child(job, (err_w, nonce_r, result_w), uid, workdir, config)
    for fd in (nonce_r, result_w, err_w):
        os.close(fd)
    nonce = secrets.token_hex(16).encode()  # made after the fork: the program never had it in memory
    os.write(nonce_w, nonce)
    os.close(nonce_w)
    result, stderr = bytearray(), bytearray()
    buffers = {result_r: (result, 256, False), err_r: (stderr, 4096, True)}  # the nonce must come first
    pidfd = os.pidfd_open(pid)
    selector = selectors.DefaultSelector()
    for fd in (result_r, err_r):
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    selector.register(pidfd, selectors.EVENT_READ)
    deadline, exited, timed_out = time.monotonic() + job["timeout"], False, False
    while not exited:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        for key, _ in selector.select(remaining):
            if key.fd == pidfd:
                exited = True
            elif not _read_some(key.fd, *buffers[key.fd]):
                selector.unregister(key.fd)
    _sweep(pid, uid, config["pid_namespace"])
    _, status = os.waitpid(pid, 0)
    if config["pid_namespace"]:
        _reap()
    for fd, buffer in buffers.items():
        _drain(fd, *buffer)
    selector.close()
    for fd in (pidfd, result_r, err_r):
        os.close(fd)
    _clean(workdir, config["private_tmp"])
    passed, reason = _describe(None if timed_out else status, timed_out, bytes(result), nonce, bytes(stderr))
    return {"passed": passed, "reason": reason}


def _read_exact(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(slot: int, config: dict) -> None:
    """Answer framed jobs (4-byte big-endian length + JSON) on fd 0 with framed verdicts on fd 1."""
    config.setdefault("native_dir", sysconfig.get_config_var("DESTSHARED"))
    for name in sandbox_guard.BLOCKED_IMPORTS:
        if name in sys.modules and name not in ("signal", "_signal", "_thread"):
            raise RuntimeError(f"the sandbox server must not have {name} imported")
    while True:
        try:
            (size,) = struct.unpack(">I", _read_exact(0, 4))
            job = json.loads(_read_exact(0, size))
        except EOFError:
            return
        reply = run_job(job, slot, config)
        used = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        reply["cpu_seconds"] = sum(usage.ru_utime + usage.ru_stime for usage in used)  # server + programs so far
        reply = json.dumps(reply).encode()
        os.write(1, struct.pack(">I", len(reply)) + reply)


if __name__ == "__main__":
    serve(int(sys.argv[1]), json.loads(sys.argv[2]))
