"""The in-process half of the sandbox: the harness that runs one program and its check, and the audit-hook
guard that makes a pass unforgeable. Standard library only; imported by `sandbox_server` (next to it).

Why a pass cannot be forged: the fork server makes a random nonce only AFTER the fork, so it is in
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
import os
import signal
import sys
import types

# Modules whose attributes the harness checks are unchanged before the test and after the check.
WATCHED = ("builtins", "math", "random", "copy", "string", "re", "collections", "itertools", "functools",
           "operator", "hashlib", "heapq")
# Native code, sub-interpreters, process spawning and re-importing signal would undo the guard.
BLOCKED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "_posixsubprocess", "subprocess", "multiprocessing", "_multiprocessing",
    "_xxsubinterpreters", "_xxinterpchannels", "_interpreters", "_testcapi", "_testinternalcapi",
    "_testmultiphase", "_testbuffer", "_testimportmultiple", "_testsinglephase", "signal", "_signal", "_thread"})
BLOCKED_EVENTS = frozenset({
    "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys._current_frames", "sys._current_exceptions",
    "sys._getframemodulename", "sys.monitoring.register_callback", "gc.get_objects",
    "gc.get_referrers", "gc.get_referents", "_thread.start_new_thread", "os.exec", "os.posix_spawn",
    "os.spawn", "os.system", "os.startfile", "subprocess.Popen", "pty.spawn", "sys.remote_exec"})
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})

class Tampered(RuntimeError):
    """The program changed something the harness relies on (builtins, watched modules, check)."""


def run_untrusted(program_code, test_code, entry_point):
    """Run prompt+completion, then the test, then check(candidate) (only the program when ``entry_point`` is
    None: it passes if it runs to the end); straight-line, so the finish line is
    reachable only after the check returned and nothing watched was changed. Everything used after the
    untrusted code starts is a local bound here first (module globals can be rebound by the program)."""
    audit, exec_, type_, function = sys.audit, exec, type, types.FunctionType
    tuple_, len_, zip_, any_, str_ = tuple, len, zip, any, str
    modules, tampered, builtins_dict = sys.modules, Tampered, builtins.__dict__
    watched = tuple((name, modules[name], vars(modules[name]), tuple(vars(modules[name]).items()))
                    for name in WATCHED if name in modules)
    check_codes = tuple(c for c in test_code.co_consts if isinstance(c, types.CodeType) and c.co_name == "check")
    # The program's namespace is a registered module's: stdlib code that looks a class's module up finds it
    # (dataclasses, typing). With the reference's bare dict, __name__ falls back to "builtins" and
    # dataclasses would write into the builtins module.
    program = types.ModuleType("program")
    namespace = vars(program)
    namespace["__builtins__"] = builtins_dict
    modules["program"] = program
    audit("sandbox.start")
    exec_(program_code, namespace)
    for step in (0, 1):  # 0: verify, then run the test and the check; 1: verify again
        # Only iteration and `is` here: a dict lookup can run the program's code (a key whose hash collides
        # with a watched name has its __eq__ called), iterating a dict cannot.
        entries = tuple_(modules.items())
        for name, module, attributes, items in watched:
            if not any_(value is module and type_(key) is str_ and key == name for key, value in entries):
                raise tampered(f"replaced module {name}")
            current = tuple_(attributes.items())
            if len_(current) != len_(items):
                old_keys = tuple_(key for key, _ in items)
                added = [key for key, _ in current if not any_(key is old for old in old_keys)]
                raise tampered(f"added or removed attributes of {name} ({str_(added)[:60]} added)")
            for (key, value), (old_key, old_value) in zip_(current, items):
                if key is not old_key or value is not old_value:
                    raise tampered(f"changed {name}.{old_key}")
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


_FINISH_LINE = next(i.positions.lineno for i in dis.get_instructions(run_untrusted) if i.argval == "sandbox.finish")


def install_guard(nonce: bytes, result_fd: int, native_dir: str, private_proc: bool) -> None:
    """Add the audit hook that holds the nonce (see the module docstring); it cannot be removed."""
    # The hook decides with no global or builtin lookup: the program can rebind those (this module's too). The
    # exception classes it raises are looked up, harmlessly: whatever they became, the blocked call stops.
    getframe, write, exit_, realpath, getpid = sys._getframe, os.write, os._exit, os.path.realpath, os.getpid
    isinstance_, str_, paths, fsdecode = isinstance, str, (str, bytes), os.fsdecode
    own_pid = getpid()  # a forked copy of the program reaching the finish does not count
    expected_code, finish_line = run_untrusted.__code__, _FINISH_LINE
    frame_attributes, blocked_events, blocked_imports = FRAME_ATTRIBUTES, BLOCKED_EVENTS, BLOCKED_IMPORTS
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
            elif (not poisoned and frame is not None and frame is start_frame and frame.f_lineno == finish_line
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
        if event == "object.__getattr__" and args[1] in frame_attributes:
            raise AttributeError(f"{args[1]} is disabled in the sandbox")
        if event == "object.__setattr__" and args[1] == "__code__":
            raise AttributeError("replacing __code__ is disabled in the sandbox")
        if event in blocked_events or event.startswith("ctypes."):
            raise RuntimeError(f"{event} is disabled in the sandbox")
        if event == "import":
            name, filename = args[0], args[1]
            if name in blocked_imports or name.split(".")[0] in blocked_imports:
                raise ImportError(f"import of {name} is disabled in the sandbox")
            if filename and not str_(filename).endswith(".py") and not str_(filename).startswith(native_dir):
                raise ImportError(f"native module {filename} is disabled in the sandbox")
        if event == "open" and not private_proc and isinstance_(args[0], paths):
            path = fsdecode(args[0])
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


def disable_signal_handlers_and_threads() -> None:
    """Python signal handlers get the interrupted frame; threads could change what the check uses while it
    runs (and start_new_thread has no audit event before Python 3.13)."""
    _disable("signal handlers", (signal, "signal"), (sys.modules["_signal"], "signal"))
    thread = sys.modules["_thread"]
    _disable("threads", (thread, "start_new_thread"), (thread, "start_new"), (thread, "start_joinable_thread"))
    if "threading" in sys.modules:
        _disable("threads", (sys.modules["threading"], "_start_new_thread"),
                 (sys.modules["threading"], "_start_joinable_thread"))
