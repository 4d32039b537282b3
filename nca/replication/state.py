"""Each run's stored spec and completion mark, beside its logs: what makes `nca replicate` idempotent.

``<out>/runs/<id>/replicate-run.json`` holds the run's spec and hash, written before it first starts;
``replicate-done.json`` is written when its ``nca fit`` exits 0. A second call skips done runs, continues a
started one from its last checkpoint (``--ckpt_path last``), and refuses, before starting anything, to mix
a run made with other settings into the study.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path

from nca.replication.plan import Run

SPEC_FILE = "replicate-run.json"
DONE_FILE = "replicate-done.json"


class Status(str, Enum):
    NEW = "new"            # never started
    STARTED = "started"    # started, no checkpoint yet: starts again (its logs get a new version folder)
    PARTIAL = "partial"    # has a last checkpoint: resumes from it
    DONE = "done"


class ConfigChanged(RuntimeError):
    pass


def status(run: Run, out: Path) -> Status:
    directory = run.directory(out)
    if (directory / DONE_FILE).is_file():
        return Status.DONE
    if (directory / "checkpoints" / "last.ckpt").is_file():
        return Status.PARTIAL
    return Status.STARTED if (directory / SPEC_FILE).is_file() else Status.NEW


def check_unchanged(runs: list[Run], out: Path) -> None:
    """Refuse (one error listing every conflict) if a stored run was made with another spec than planned now."""
    conflicts = []
    for run in runs:
        path = run.directory(out) / SPEC_FILE
        if not path.is_file():
            continue
        stored = json.loads(path.read_text())
        if stored.get("hash") != run.hash:
            conflicts.append(f"{run.id}: {describe_change(stored.get('spec', {}), run.spec())}")
    if conflicts:
        raise ConfigChanged(
            f"{len(conflicts)} run(s) in {out} were made with other settings than this config asks for:\n  "
            + "\n  ".join(conflicts[:10]) + ("\n  ..." if len(conflicts) > 10 else "")
            + "\nNothing was started. Use a new --out for the new settings, or put the old ones back."
        )


def describe_change(old: dict, new: dict) -> str:
    """The differing parts of two specs, short: changed arguments or inputs, or 'its stage-1 run changed'."""
    if old.get("args") != new.get("args"):
        old_args, new_args = _pairs(old.get("args", [])), _pairs(new.get("args", []))
        keys = [k for k in dict.fromkeys([*old_args, *new_args]) if old_args.get(k) != new_args.get(k)]
        return "; ".join(f"{k}: {old_args.get(k)!r} -> {new_args.get(k)!r}" for k in keys[:4]) or "argument order"
    if old.get("inputs") != new.get("inputs"):
        return f"inputs {old.get('inputs')} -> {new.get('inputs')}"
    return f"the stage-1 run it starts from ({new.get('after')}) changed"


def _pairs(args: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, a in enumerate(args):
        if a.startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
            key = f"{a} {value}" if a == "--config" else a
            out[key] = value if a != "--config" else "(composed)"
    return out


def write_spec(run: Run, out: Path) -> None:
    directory = run.directory(out)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SPEC_FILE
    if not path.is_file():
        path.write_text(json.dumps({"hash": run.hash, "spec": run.spec()}, indent=2))


def mark_done(run: Run, out: Path, seconds: float) -> None:
    (run.directory(out) / DONE_FILE).write_text(json.dumps({"hash": run.hash, "seconds": round(seconds, 1),
                                                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))


def command_for(run: Run, out: Path) -> list[str]:
    """``nca fit`` command of a run; a partial run continues from its last checkpoint."""
    command = run.command(out)
    return command + ["--ckpt_path", "last"] if status(run, out) is Status.PARTIAL else command
