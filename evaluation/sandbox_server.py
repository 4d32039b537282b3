"""The inside of the sandbox: a fork server that runs one untrusted program per forked child.

Started by `evaluation.sandbox.Sandbox` (inside bubblewrap where it can), standard library only (it runs
under ``python -I -S``). It reads framed JSON jobs on stdin and answers each with a framed JSON verdict on
stdout. The server itself never runs untrusted code; every program runs in a fresh child forked from it,
so a hostile program cannot change the state a later program starts from.

Child, in order: own session, stdin/stdout on /dev/null, rlimits, a fresh uid when the server is root
(the child can then signal, trace or write nothing of the server's or another program's), its own empty
0700 working directory, a clean environment; then the guard (below) and `_run_untrusted`.

Why a pass cannot be forged: the parent (this server) makes a random nonce only AFTER the fork, so it is in
no memory the program inherits, and hands it over a pipe that the child reads and closes before any
untrusted code runs. From then on the nonce lives only in the closure of an audit hook (PEP 578), which
Python code cannot list, remove or reach. The harness signals the end with ``sys.audit("sandbox.finish")``
and the hook writes the nonce to the result pipe only if that event comes from the one harness frame that
announced "sandbox.start" (frame identity), at the line of the finish call, in the original process (not a
fork); straight-line code reaches that line only after ``check(candidate)`` returned and the
builtins/modules checks passed. Any other finish/start event (the program raising it itself, from its own
frame or through a C callable) poisons the run. The server counts a pass only if the result pipe holds
exactly the nonce, so exiting early (sys.exit, os._exit, a signal), printing "passed", writing to the pipe,
redefining ``check`` or patching builtins all fail. The hook also closes the routes to the interpreter's
insides that could read the nonce or rewrite the harness: frame access (sys._getframe,
tb_frame/gi_frame/...), gc walks, tracing, new audit hooks, threads, signal handlers (they receive frames),
__code__ swaps, exec of other programs, ctypes and native modules from outside the standard library,
sub-interpreters, and (without a private /proc) opening /proc. See docs/sandbox.md for what this does not
cover.
"""

from __future__ import annotations

import builtins
import dis
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
import types

# Imported once here so a forked program finds them ready (most HumanEval programs use some of them), and
# importable even where a program's uid cannot read the install (the fallbacks, with Python under /root).
import array, bisect, calendar, cmath, collections, collections.abc, copy, datetime, decimal  # noqa: E401,F401
import fractions, functools, hashlib, heapq, itertools, math, operator, random, re, statistics  # noqa: E401,F401
import string, textwrap, typing, unicodedata  # noqa: E401,F401

REASON_PREFIX = "sandbox-reason: "
# Modules whose attributes the harness checks are unchanged before the test and after the check.
WATCHED = ("builtins", "math", "random", "copy", "string", "re", "collections", "itertools", "functools",
           "operator", "hashlib", "heapq")
# Native code, sub-interpreters, process spawning and re-importing signal would undo the guard.
BLOCKED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "_posixsubprocess", "subprocess", "multiprocessing", "_multiprocessing",
    "_xxsubinterpreters", "_xxinterpchannels", "_interpreters", "_testcapi", "_testinternalcapi",
    "_testmultiphase", "_testbuffer", "_testimportmultiple", "_testsinglephase", "signal", "_signal", "_thread"})
BLOCKED_EVENTS = frozenset({
    "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys._current_frames", "gc.get_objects",
    "gc.get_referrers", "gc.get_referents", "_thread.start_new_thread", "os.exec", "os.posix_spawn",
    "os.spawn", "os.system", "os.startfile", "subprocess.Popen", "pty.spawn", "sys.remote_exec"})
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})
SLOT_UID_BASE = 60000


class Tampered(RuntimeError):
    """The program changed something the harness relies on (builtins, watched modules, check)."""


def _run_untrusted(program_code, test_code, entry_point):
    """Run prompt+completion, then the test, then check(candidate) (only the program when ``entry_point`` is
    None: it passes if it runs to the end); straight-line, so the finish line is
    reachable only after the check returned and nothing watched was changed. Everything used after the
    untrusted code starts is a local bound here first (module globals can be rebound by the program)."""
    audit, exec_, type_, function = sys.audit, exec, type, types.FunctionType
    modules, missing, tampered = sys.modules, object(), Tampered
    builtins_dict = builtins.__dict__
    watched = tuple((name, modules[name], vars(modules[name]), tuple(vars(modules[name]).items()))
                    for name in WATCHED if name in modules)
    check_codes = tuple(c for c in test_code.co_consts if isinstance(c, types.CodeType) and c.co_name == "check")
    audit("sandbox.start")
    namespace = {"__builtins__": builtins_dict}
    exec_(program_code, namespace)
    for step in (0, 1):  # 0: verify, then run the test and the check; 1: verify again
        for name, module, attributes, items in watched:
            if modules.get(name) is not module:
                raise tampered(f"replaced module {name}")
            for key, value in items:
                if attributes.get(key, missing) is not value:
                    raise tampered(f"changed {name}.{key}")
        if step == 0 and entry_point is not None:
            namespace["__builtins__"] = builtins_dict
            exec_(test_code, namespace)
            check = namespace.get("check")
            if type_(check) is not function or (check_codes and check.__code__ is not check_codes[0]):
                raise tampered("check is not the test's function")
            if entry_point not in namespace:
                raise NameError(f"name {entry_point!r} is not defined")
            check(namespace[entry_point])
    audit("sandbox.finish")


_FINISH_LINE = next(i.positions.lineno for i in dis.get_instructions(_run_untrusted) if i.argval == "sandbox.finish")


def _install_guard(nonce: bytes, result_fd: int, native_dir: str, private_proc: bool) -> None:
    """Add the audit hook that holds the nonce (see the module docstring); it cannot be removed."""
    getframe, write, exit_, realpath, getpid = sys._getframe, os.write, os._exit, os.path.realpath, os.getpid
    own_pid = getpid()  # a forked copy of the program reaching the finish does not count
    expected_code = _run_untrusted.__code__
    start_frame, poisoned, inside = None, False, False

    def hook(event, args):
        nonlocal start_frame, poisoned, inside
        if inside:
            return
        if event in ("sandbox.start", "sandbox.finish"):
            inside = True
            try:
                frame = getframe(1)
            except ValueError:
                frame = None
            finally:
                inside = False
            if event == "sandbox.start":
                if start_frame is not None or frame is None or frame.f_code is not expected_code:
                    poisoned = True
                else:
                    start_frame = frame
            elif (not poisoned and frame is not None and frame is start_frame and frame.f_lineno == _FINISH_LINE
                  and getpid() == own_pid):
                try:
                    write(result_fd, nonce)
                finally:
                    exit_(0)
            else:
                poisoned = True
            return
        if event == "sys._getframe":
            raise ValueError("frame inspection is disabled in the sandbox")
        if event == "object.__getattr__" and args[1] in FRAME_ATTRIBUTES:
            raise AttributeError(f"{args[1]} is disabled in the sandbox")
        if event == "object.__setattr__" and args[1] == "__code__":
            raise AttributeError("replacing __code__ is disabled in the sandbox")
        if event in BLOCKED_EVENTS or event.startswith("ctypes."):
            raise RuntimeError(f"{event} is disabled in the sandbox")
        if event == "import":
            name, filename = args[0], args[1]
            if name in BLOCKED_IMPORTS or name.split(".")[0] in BLOCKED_IMPORTS:
                raise ImportError(f"import of {name} is disabled in the sandbox")
            if filename and not str(filename).endswith(".py") and not str(filename).startswith(native_dir):
                raise ImportError(f"native module {filename} is disabled in the sandbox")
        if event == "open" and not private_proc and isinstance(args[0], (str, bytes)):
            path = os.fsdecode(args[0])
            if realpath(path).startswith("/proc"):
                raise PermissionError(f"opening {path} is disabled in the sandbox")

    sys.addaudithook(hook)


def _disable(what: str, *attributes: tuple[types.ModuleType, str]) -> None:
    """Replace functions that have no audit event; the guard blocks re-importing their modules."""
    def refuse(*_args, **_kwargs):
        raise RuntimeError(f"{what} are disabled in the sandbox")
    for module, name in attributes:
        if hasattr(module, name):
            setattr(module, name, refuse)


def _disable_signal_handlers_and_threads() -> None:
    """Python signal handlers get the interrupted frame; threads could change what the check uses while it
    runs (and start_new_thread has no audit event before Python 3.13)."""
    _disable("signal handlers", (signal, "signal"), (sys.modules["_signal"], "signal"))
    thread = sys.modules["_thread"]
    _disable("threads", (thread, "start_new_thread"), (thread, "start_new"), (thread, "start_joinable_thread"))
    if "threading" in sys.modules:
        _disable("threads", (sys.modules["threading"], "_start_new_thread"),
                 (sys.modules["threading"], "_start_joinable_thread"))


def _limit(limits: dict, timeout: float) -> None:
    cpu = int(limits.get("cpu_seconds") or timeout + 1)
    for which, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, limits["memory_bytes"]),
                         (resource.RLIMIT_NPROC, limits["processes"]), (resource.RLIMIT_FSIZE, limits["file_size"]),
                         (resource.RLIMIT_NOFILE, limits["open_files"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))


def _child(job: dict, fds: tuple[int, int, int], uid: int | None, workdir: str, config: dict) -> None:
    """Set up and run one program in the forked child; never returns."""
    write, exit_ = os.write, os._exit
    reason = "the harness ended without a verdict"
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
        program_code = compile(job["program"], "program.py", "exec")
        test_code = compile(job.get("test") or "", "test.py", "exec")
        nonce = b""
        while chunk := os.read(3, 256):
            nonce += chunk
        os.close(3)
        _disable_signal_handlers_and_threads()
        _install_guard(nonce, 4, config["native_dir"], config["private_proc"])
        del nonce
        _run_untrusted(program_code, test_code, job.get("entry_point"))
    except SystemExit as error:
        reason = f"exited early: SystemExit({error.code!r})"
    except Tampered as error:
        reason = f"tampered with the harness: {error}"
    except BaseException as error:  # noqa: BLE001 - any failure of the program is a verdict
        try:
            message = str(error).splitlines()[0][:200] if str(error) else ""
            reason = f"failed: {type(error).__name__}" + (f": {message}" if message else "")
        except BaseException:  # noqa: BLE001
            reason = "failed: an exception that cannot be printed"
    try:
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
    """Kill everything the program started. In a private PID namespace (bubblewrap) kill(-1) reaches every
    process there but bubblewrap's init and this server; outside one, every process of the program's uid
    (kill(-1) from a helper running as that uid); unprivileged, its process group."""
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
    uid = SLOT_UID_BASE + slot if os.geteuid() == 0 else None
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
    for fd, buffer in buffers.items():
        _drain(fd, *buffer)
    selector.close()
    for fd in (pidfd, result_r, err_r):
        os.close(fd)
    shutil.rmtree(workdir, ignore_errors=True)
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
    for name in BLOCKED_IMPORTS:
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
