"""Run many ``nca`` commands without paying the training stack's import each time (about 8 s on 2 cores).

A server process imports ``nca`` and Lightning once, then forks a child per command: the child takes the
caller's working directory, environment and standard streams (passed over a Unix socket with SCM_RIGHTS), runs
``nca.cli.main(argv)`` and exits with its code. A small client script, installed as ``nca`` first on PATH,
forwards each call, so a shell block (``&&``, quoting, ``$(...)``) runs exactly as written. Each command still
gets its own process, as a user's shell would give it.

The server handles one command at a time (a shell block runs its commands one after another), so it forks from
a single-threaded process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

PRELOAD = ("nca.cli", "nca.cli.train", "nca.cli.data", "nca.cli.sample")
STREAMS = 3  # stdin, stdout, stderr


def serve(address: str) -> None:
    """Import the training stack, then fork one child per request until told to stop."""
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(1)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 16, STREAMS)
            while chunk := conn.recv(1 << 16):  # the client shuts its side after the request
                message += chunk
            request = json.loads(message)
            if request.get("stop"):
                return
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                server.close()
                _child(request, fds)  # never returns
            for fd in fds:
                os.close(fd)
            _, status = os.waitpid(pid, 0)
            conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())


def _child(request: dict, fds: list[int]) -> None:
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["nca", *request["argv"]]
        import nca.cli

        code = nca.cli.main(request["argv"]) or 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


CLIENT = textwrap.dedent('''\
    #!{python} -S
    import json, os, socket, sys
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect({address!r})
    request = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    conn.shutdown(socket.SHUT_WR)
    sys.exit(int(conn.recv(16) or 1))
''')


class ForkServer:
    """``with ForkServer(bin_dir, env) as server:`` puts an ``nca`` client in ``bin_dir``; prepend it to PATH."""

    def __init__(self, bin_dir: Path, env: dict, cwd: Path):
        self.bin_dir, self.env, self.cwd = Path(bin_dir), env, Path(cwd)
        self.address = str(self.bin_dir / "nca.sock")

    def __enter__(self) -> "ForkServer":
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        code = f"from tests.helpers.forkserver import serve; serve({self.address!r})"
        self.process = subprocess.Popen([sys.executable, "-c", code], cwd=self.cwd, env=self.env,
                                        stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the nca fork server did not start (exit {self.process.wait()})")
        client = self.bin_dir / "nca"
        client.write_text(CLIENT.format(python=sys.executable, address=self.address))
        client.chmod(0o755)
        return self

    def __exit__(self, *exc) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(self.address)
                socket.send_fds(conn, [json.dumps({"stop": True}).encode()], [0, 1, 2])
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
        deadline = time.time() + 5
        while self.process.poll() is None and time.time() < deadline:
            time.sleep(0.1)
