"""Every command of README.md runs, in a fresh clone of the repository (README.md is read at test time).

What is run: each fenced code block marked ``bash`` (or ``sh``/``shell``), in order, in one clone, so a
later block can use what an earlier one made (a stage-1 checkpoint for stage 2). Markers, written in the
README as HTML comments on the line just before a block (invisible when rendered):

- ``<!-- readme-test: skip REASON -->``: not run (GPU-only, hours long, needs the network);
- ``<!-- readme-test: COMMAND -->``: run COMMAND instead, a CPU-sized equivalent of the block (e.g. the same
  ``nca fit`` with ``--trainer.max_steps 5``), so what the reader sees and what is tested stay side by side.

Lines that start a server or install packages (``SKIPPED_LINES``) are left out of every block. The clone
gets ``../shared`` (a symlink to the checkout's) when the README refers to it. Marked ``slow``.

Each block runs in bash exactly as written; ``nca`` on its PATH is the client of a fork server
(``tests/helpers/forkserver.py``) that imported the clone's ``nca`` and Lightning once, so a command costs its own
work and not the ~8 s import of the training stack.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.forkserver import ForkServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELLS = ("bash", "sh", "shell")
SKIPPED_LINES = ("pip install", "tensorboard ", "python -m pytest")  # no network, no servers, no recursion
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
BLOCK_TIMEOUT_S = 1200


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    commands: list[str]
    skip: str | None = None  # the reason, when skipped

    @property
    def script(self) -> str:
        return "\n".join(self.commands)


def _commands(lines: list[str]) -> list[str]:
    joined, current = [], ""
    for raw in lines:
        current += raw.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip() + " "
            continue
        text = current.strip()
        current = ""
        if text and not text.startswith("#") and not text.startswith(SKIPPED_LINES):
            joined.append(text)
    return joined


def readme_blocks(text: str) -> list[Block]:
    """The shell blocks of a README with their markers applied."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^\s*```\s*(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines))
        if fence.group(1) in SHELLS:
            marker = MARKER.search(lines[i - 1]) if i > 0 else None
            block = Block(i + 1, _commands(lines[i + 1:end]))
            if marker and marker.group(1).startswith("skip"):
                block.skip = marker.group(1)[4:].strip() or "marked skip"
            elif marker:
                block.commands = [marker.group(1)]
            if block.commands:
                blocks.append(block)
        i = end + 1
    return blocks


def test_blocks_markers_and_continuations_are_read_as_documented():
    text = "\n".join([
        "intro", "```bash", "pip install -e .", "python -m nca fit --config a.yaml \\", "    --trainer.max_steps 3",
        "# a comment", "tensorboard --logdir runs", "```", "<!-- readme-test: skip needs a GPU -->", "```bash",
        "python -m nca fit --config big.yaml", "```", "<!-- readme-test: python -m nca fit --config small.yaml -->",
        "```sh", "python -m nca fit --config long.yaml", "```", "```yaml", "trainer: {}", "```", "```bash", "```",
    ])
    blocks = readme_blocks(text)
    assert [(b.line, b.commands, b.skip) for b in blocks] == [
        (2, ["python -m nca fit --config a.yaml --trainer.max_steps 3"], None),
        (10, ["python -m nca fit --config big.yaml"], "needs a GPU"),
        (14, ["python -m nca fit --config small.yaml"], None),
    ]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("readme")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(base / "repo")], check=True, timeout=300)
    shared = ROOT.parent / "shared"
    if "../shared" in README.read_text():
        if not shared.is_dir():
            pytest.skip(f"the README refers to ../shared, which this checkout lacks ({shared})")
        (base / "shared").symlink_to(shared, target_is_directory=True)
    return base / "repo"


@pytest.fixture(scope="module")
def shell_env(clone: Path):
    """The environment of every block: the clone's code, one thread, and ``nca`` served by a fork server."""
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}
    with ForkServer(clone.parent / "bin", env, clone) as server:
        env["PATH"] = os.pathsep.join([str(server.bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
        yield env


def _blocks_or_none() -> list[Block]:
    return readme_blocks(README.read_text()) if README.is_file() else []


@pytest.mark.slow
@pytest.mark.xdist_group("readme")  # one worker runs every block, in order, in one clone
@pytest.mark.parametrize("block", _blocks_or_none(), ids=lambda b: f"README.md:{b.line}")
def test_readme_block_runs(block: Block, clone: Path, shell_env: dict):
    if block.skip:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.script], cwd=clone, env=shell_env,
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, (
        f"README.md:{block.line} failed (exit {done.returncode}):\n{block.script}\n--- stderr (end) ---\n"
        f"{done.stderr[-3000:]}")
