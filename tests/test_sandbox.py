"""Hostile programs are contained and scored as failures; the pytest process is unharmed.

What needs namespaces (bubblewrap, or util-linux unshare as root / with user namespaces) skips where none can
be made, and says so; the containment tests run once per kind of namespace this machine has, so a machine
with bubblewrap and root tests the fallback too."""

import gzip
import os
import socket
import threading

import pytest

from nca.evaluation import sandbox as sandbox_module
from nca.evaluation.humaneval import score as score_humaneval
from nca.evaluation.sandbox import Job, Limits, Sandbox, SandboxUnavailable, available, detect_isolation, run

ISOLATION = detect_isolation()
HERE = [kind for kind in ("bwrap", "unshare") if available(kind)]
NO_SANDBOX = ("no namespaces here: bubblewrap is not installed (apt-get install -y bubblewrap) and util-linux "
              "unshare needs root or unprivileged user namespaces")
needs_sandbox = pytest.mark.skipif(ISOLATION is None, reason=NO_SANDBOX)
EACH_KIND = HERE or [pytest.param(None, marks=pytest.mark.skip(reason=NO_SANDBOX))]

TEST = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(5) == 10\n"
RIGHT = "def double(x):\n    return 2 * x\n"
WRONG = "def double(x):\n    return x + 2\n"


@pytest.fixture(scope="module")
def box():
    if ISOLATION is None:
        pytest.skip(NO_SANDBOX)
    with Sandbox(workers=2, limits=Limits(timeout=1.0)) as sandbox:
        yield sandbox


@pytest.fixture(scope="module", params=EACH_KIND)
def contained(request):
    """One worker in each kind of namespace this machine has (bubblewrap and the unshare fallback)."""
    with Sandbox(workers=1, limits=Limits(timeout=1.0), isolation=request.param) as sandbox:
        yield sandbox


def check(box, program, test=TEST, entry_point="double"):
    return box.run(Job(program, test, entry_point))


def test_right_passes_and_wrong_fails_with_reason(box):
    assert check(box, RIGHT) == (True, "passed")
    assert check(box, WRONG) == (False, "failed: AssertionError")
    assert check(box, "def double(x):\n    return 1 / 0\n").reason == "failed: ZeroDivisionError: division by zero"
    assert check(box, "def double(x:\n").reason.startswith("failed: SyntaxError")
    assert check(box, "def halve(x):\n    return x\n").reason == "failed: NameError: name 'double' is not defined"


def test_program_without_check_passes_only_when_it_runs_to_the_end(box):
    assert box.run(Job("x = sum(range(10))\nassert x == 45\n")).passed
    assert not box.run(Job("assert 1 == 2\n")).passed


def test_infinite_loop_times_out_and_next_program_is_fine(box):
    assert check(box, RIGHT + "while True:\n    pass\n") == (False, "timed out")
    assert check(box, RIGHT).passed


def test_sleeping_past_the_timeout_times_out(box):
    assert check(box, "import time\ntime.sleep(30)\n" + RIGHT) == (False, "timed out")


def test_fork_bomb_is_bounded_by_the_process_limit(box):
    bomb = "import os\nwhile True:\n    os.fork()\n"
    result = check(box, bomb + RIGHT)
    assert not result.passed
    assert check(box, RIGHT).passed


def test_memory_bomb_fails(box):
    assert check(box, "block = bytearray(1 << 34)\n" + RIGHT) == (False, "failed: MemoryError")
    growing = check(box, "import mmap\nblocks = [mmap.mmap(-1, 1 << 27) for _ in range(64)]\n" + RIGHT)
    assert not growing.passed and "Cannot allocate memory" in growing.reason, growing


def test_no_host_file_is_readable(contained, tmp_path):
    """The forged pass of the old fallback: read the benchmark's own file (gzip, as HumanEval ships) and
    run the canonical answer from it."""
    secret = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(secret, "wt") as f:
        f.write("def double(x):\n    return 2 * x\n")
    assert not check(contained, f"import gzip\nexec(gzip.open({str(secret)!r}, 'rt').read())\n").passed
    for path in (__file__, "/etc/passwd", str(tmp_path)):
        assert check(contained, f"import os\nassert not os.path.exists({path!r})\n" + RIGHT).passed, path


def test_writes_land_only_in_a_private_directory_removed_afterwards(contained, tmp_path):
    marker = f"sandbox-escape-{os.getpid()}"
    for place in ("/tmp", "/dev/shm", str(tmp_path)):
        check(contained, f"open({place!r} + '/{marker}', 'w').write('x' * 4096)\n" + RIGHT)
        assert not os.path.exists(f"{place}/{marker}"), place
    assert not check(contained, "open('/usr/escaped', 'w')\n" + RIGHT).passed
    program = "import os\nassert os.listdir('/tmp') == [os.path.basename(os.getcwd())], os.listdir('/tmp')\n" + RIGHT
    for _ in range(2):
        assert check(contained, "open('left.txt', 'w').write('x')\n" + RIGHT).passed
        assert check(contained, program).passed


def test_no_process_outlives_its_program(contained):
    orphan = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n" + RIGHT
    assert check(contained, orphan).passed
    # no earlier pid of this namespace answers as ours (bubblewrap's init may take a moment to reap the corpse)
    alone = ("import os, time\ndef left():\n    found = []\n    for pid in range(2, os.getpid()):\n"
             "        try:\n            os.kill(pid, 0)\n            found.append(pid)\n"
             "        except (ProcessLookupError, PermissionError):\n            pass\n    return found\n"
             "for _ in range(50):\n    if not left():\n        break\n    time.sleep(0.01)\n"
             "else:\n    raise SystemError(f'processes left: {left()}')\n")
    assert check(contained, alone + RIGHT).passed


@pytest.mark.parametrize("isolation", EACH_KIND)
def test_two_evaluations_at_once_do_not_touch_each_other(isolation):
    """The old fallback's sweep killed the other evaluation's programs (one uid): 10 of 10 correct ones lost."""
    test = "import time\ndef check(candidate):\n    time.sleep(0.2)\n    assert candidate(2) == 4\n"
    problems = {"Toy/0": {"task_id": "Toy/0", "prompt": "def double(x):\n", "entry_point": "double", "test": test}}
    right = [("Toy/0", j, "    return 2 * x\n") for j in range(4)]
    hostile = [("Toy/0", j, "    import os\n    os.kill(-1, 9)\n") for j in range(4)]
    out: dict[str, list] = {}

    def evaluate(name, completions):
        out[name] = score_humaneval(problems, completions, workers=1, timeout=2.0, isolation=isolation)

    threads = [threading.Thread(target=evaluate, args=item) for item in (("right", right), ("hostile", hostile))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [v.passed for v in out["right"]] == [True] * 4, out["right"]
    assert not any(v.passed for v in out["hostile"])


def test_working_directory_is_private_empty_and_writable(box):
    program = ("import os\nassert os.listdir('.') == []\nopen('scratch.txt', 'w').write('x')\n"
               "assert oct(os.stat('.').st_mode & 0o777) == '0o700'\n" + RIGHT)
    assert check(box, program).passed
    assert check(box, program).passed  # the first one's file is gone: a fresh directory again


@needs_sandbox
def test_environment_is_clean(box, monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "hunter2")
    with Sandbox(workers=1, limits=Limits(timeout=1.0)) as fresh:
        program = "import os\nassert not [k for k in os.environ if 'SECRET' in k], os.environ\n" + RIGHT
        assert fresh.run(Job(program, TEST, "double")).passed


def test_network_connection_to_a_local_port_does_not_arrive(contained):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        program = (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5).sendall(b'hi')\n"
                   + RIGHT)
        result = check(contained, program)
        listener.settimeout(0.0)
        with pytest.raises(BlockingIOError):
            listener.accept()
    # bubblewrap brings its own loopback up (refused); the unshare fallback has none (unreachable)
    assert not result.passed and ("Connection" in result.reason or "unreachable" in result.reason), result


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_signal_to_the_parent_is_contained(box, signal_name):
    program = f"import os, signal\nos.kill(os.getppid(), signal.{signal_name})\n" + WRONG
    assert not check(box, program).passed
    assert check(box, RIGHT).passed


def test_signals_to_everything_and_to_pytest_are_contained(contained):
    for program in (f"import os\nos.kill({os.getpid()}, 9)\n", "import os\nos.kill(-1, 9)\n"):
        try:
            check(contained, program + WRONG)
        finally:
            assert check(contained, RIGHT).passed  # pytest is alive to run this line, and the pool still works


@pytest.mark.parametrize("cheat", [
    "import sys\nsys.exit(0)\n",
    "raise SystemExit(0)\n",
    "import os\nos._exit(0)\n",
    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "print('passed')\nimport os\nos._exit(0)\n",
    "import os\nos.write(4, b'0' * 32)\nos._exit(0)\n",
    "import sys\nsys.audit('sandbox.finish')\n",
    "import sys\nclass Bomb:\n    def __del__(self):\n        sys.audit('sandbox.finish')\n"
    "def double(x):\n    Bomb()\n    return x + 2\n",
    "import sys\nsys.audit('sandbox.start')\n",
    "import os\nif os.fork() == 0:\n    def double(x):\n        return 2 * x\n"
    "else:\n    def double(x):\n        return x\n",
])
def test_cheats_score_a_fail(box, cheat):
    """Each would pass a harness that trusts exit codes, output, the result pipe or any finish signal."""
    result = check(box, cheat if "def double" in cheat else cheat + WRONG)
    assert not result.passed, result


def test_rebinding_builtins_for_the_test_does_not_help(box):
    test = "def check(candidate):\n    assert abs(candidate(5) - 10) < 1e-9\n"
    program = ("__builtins__ = dict(__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__))\n"
               "__builtins__['abs'] = lambda v: 0\n" + WRONG)
    assert check(box, program, test) == (False, "failed: AssertionError")


@pytest.mark.parametrize("program, reason", [
    ("import builtins\nbuiltins.AssertionError = type('Fine', (Exception,), {})\n",
     "tampered with the harness: changed builtins.AssertionError"),
    ("import math\nmath.isclose = lambda *a, **k: True\n", "tampered with the harness: changed math.isclose"),
    ("import sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\n"
     "sys.modules['math'] = fake\n",
     "tampered with the harness: replaced module math"),
])
def test_patching_what_the_test_uses_is_tampering(box, program, reason):
    test = "import math\ndef check(candidate):\n    assert math.isclose(candidate(5), 10)\n"
    assert check(box, program + WRONG, test) == (False, reason)


# A key whose hash collides with a watched name gets its __eq__ called by any lookup of that name: it patches
# math.isclose after the first verification and restores it before the second (if verification looked up).
COLLIDER = """import math
real = math.isclose
class Collider:
    calls = 0
    def __hash__(self):
        return hash('tau')
    def __eq__(self, other):
        Collider.calls += 1
        math.isclose = (lambda *a, **k: True) if Collider.calls == 2 else real
        return False
del math.acos
vars(math)[Collider()] = None
"""
# The same key in the program's namespace, raising the finish event through a C callable while the harness
# frame looks up `check` (right frame, wrong line).
FINISH_ON_LOOKUP = """import functools, sys
class Collider:
    __hash__ = lambda self: hash('check')
    __eq__ = functools.partial(sys.audit, 'sandbox.finish')
globals()[Collider()] = None
"""


def test_hash_collisions_during_the_harness_lookups_do_not_help(box):
    test = "import math\ndef check(candidate):\n    assert math.isclose(candidate(5), 10)\n"
    patched = check(box, COLLIDER + WRONG, test)
    assert not patched.passed and patched.reason.startswith("tampered with the harness"), patched
    assert check(box, FINISH_ON_LOOKUP + RIGHT) == (False, "tampered with the harness: it raised the sandbox's events")


@pytest.mark.parametrize("program, blocked", [
    ("import sys\nsys._getframe(1)\n", "frame inspection"),
    ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    e.__traceback__.tb_frame\n", "tb_frame"),
    ("def gen():\n    yield 1\ngen().gi_frame\n", "gi_frame"),
    ("import gc\ngc.get_objects()\n", "gc.get_objects"),
    ("import gc\ngc.get_referrers(print)\n", "gc.get_referrers"),
    ("import sys\nsys.settrace(lambda *a: None)\n", "sys.settrace"),
    ("import sys\nsys.setprofile(lambda *a: None)\n", "sys.setprofile"),
    ("import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\n", "signal handlers"),
    ("import sys\ndel sys.modules['signal']\nimport signal\n", "import of signal"),
    ("import ctypes\n", "import of ctypes"),
    ("import subprocess\n", "import of subprocess"),
    ("import os\nos.execv('/bin/true', ['true'])\n", "os.exec"),
    ("import os\nos.system('true')\n", "os.system"),
    ("import threading\nthreading.Thread(target=print).start()\n", "threads"),
    ("import _thread\n_thread.start_new_thread(print, ())\n", "threads"),
    ("import sys\ndel sys.modules['_thread']\nimport _thread\n", "import of _thread"),
    ("def f():\n    pass\nf.__code__ = (lambda: 0).__code__\n", "replacing __code__"),
])
def test_routes_into_the_interpreter_are_blocked(box, program, blocked):
    result = check(box, program + RIGHT)
    assert not result.passed and blocked in result.reason and "disabled in the sandbox" in result.reason, result


def test_new_audit_hooks_are_refused(box):
    program = ("import sys\ncalls = []\nsys.addaudithook(lambda *a: calls.append(a))\n"
               "compile('1', 'x', 'eval')\nassert calls == []\n" + RIGHT)
    assert check(box, program).passed


def test_cheat_inside_the_candidate_during_the_check_fails(box):
    for body in ("raise SystemExit(0)", "import os; os._exit(0)",
                 "import builtins; builtins.abs = lambda v: 0; return x + 2"):
        program = f"def double(x):\n    {body}\n"
        test = "def check(candidate):\n    assert abs(candidate(5) - 10) < 1e-9\n"
        assert not check(box, program, test).passed


def test_patched_builtins_is_reported_as_tampering(box):
    result = check(box, "import builtins\nbuiltins.len = lambda x: 0\n" + RIGHT)
    assert result == (False, "tampered with the harness: changed builtins.len")
    # ... even when the names the child's own error handling uses are rebound too
    program = ("import builtins, sys\nsys.modules['sandbox_guard'].Tampered = 5\nbuiltins.BaseException = 5\n"
               "builtins.SystemExit = 5\n" + RIGHT)
    assert check(box, program) == (False, "tampered with the harness: changed builtins.BaseException")
    assert check(box, RIGHT).passed


def test_hostile_jobs_do_not_change_the_verdicts_of_others(box):
    hostile = ["import os\nwhile True:\n    os.fork()\n", "while True:\n    pass\n", "import os\nos._exit(0)\n"]
    jobs = [Job(RIGHT if n % 2 else hostile[n // 2 % 3] + RIGHT, TEST, "double") for n in range(12)]
    results = box.run_many(jobs)
    assert [r.passed for r in results] == [bool(n % 2) for n in range(12)]


@needs_sandbox
def test_a_dead_server_fails_one_job_and_its_replacement_lasts():
    with Sandbox(workers=1, limits=Limits(timeout=1.0)) as fresh:
        server = fresh._started[0].process
        server.stdin.write(b"\x00\x00\x00\x01!")  # not JSON: the server stops, as if a program had killed it
        server.stdin.flush()
        died = fresh.run_many([Job(RIGHT, TEST, "double")])
        assert not died[0].passed and "server died" in died[0].reason
        for _ in range(2):  # the replacement outlives the worker thread that asked for it
            assert all(result.passed for result in fresh.run_many([Job(RIGHT, TEST, "double")] * 2))


def test_stdlib_that_inspects_frames_still_works(box):
    program = ("import collections, enum, typing, dataclasses, warnings\nP = collections.namedtuple('P', 'a')\n"
               "class C(enum.Enum):\n    A = 1\nT = typing.TypeVar('T')\n"
               "@dataclasses.dataclass\nclass D:\n    x: int\n    y: 'typing.ClassVar[int]' = 0\n"
               "assert D.__annotations__ == {'x': int, 'y': 'typing.ClassVar[int]'}\n"
               "assert __name__ == 'program'\n" + RIGHT)
    assert check(box, program) == (True, "passed")


def test_limits_reject_bad_values(monkeypatch):
    monkeypatch.setattr(sandbox_module, "_warned", True)  # the warning itself is tested below
    with pytest.raises(ValueError, match="timeout"):
        Limits(timeout=0)
    with pytest.raises(ValueError, match="processes"):
        Limits(processes=0)
    with pytest.raises(ValueError, match="isolation"):
        Sandbox(isolation="chroot")
    with pytest.raises(ValueError, match="workers"):
        Sandbox(workers=0)
    with pytest.raises(RuntimeError, match="with Sandbox"):
        Sandbox(workers=1, isolation="none").run(Job(RIGHT))


def test_without_namespaces_auto_refuses_in_one_line_naming_bubblewrap(monkeypatch):
    monkeypatch.setattr(sandbox_module, "available", lambda kind: kind == "none")
    with pytest.raises(SandboxUnavailable, match="bubblewrap") as refused:
        Sandbox(workers=1)
    assert "\n" not in str(refused.value) and "--sandbox none" in str(refused.value)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        Sandbox(workers=1, isolation="bwrap")


@needs_sandbox
def test_one_off_run_uses_its_own_limits():
    assert run(RIGHT, TEST, "double", limits=Limits(timeout=1.0)).passed
    assert run("import time\ntime.sleep(5)\n", limits=Limits(timeout=0.5)) == (False, "timed out")


def test_warning_without_isolation_is_printed_once(monkeypatch, capsys):
    monkeypatch.setattr(sandbox_module, "_warned", False)
    with pytest.warns(RuntimeWarning):
        sandbox_module._warn_unisolated()
    sandbox_module._warn_unisolated()
    assert capsys.readouterr().err.count("SANDBOX WARNING") == 1


def test_unisolated_mode_still_scores(monkeypatch):
    monkeypatch.setattr(sandbox_module, "_warned", True)  # the warning itself is tested above
    with Sandbox(workers=1, limits=Limits(timeout=1.0), isolation="none") as plain:
        assert plain.run(Job(RIGHT, TEST, "double")).passed
        assert plain.run(Job("import sys\nsys.exit(0)\n" + WRONG, TEST, "double")) == (
            False, "exited early: SystemExit(0)")
