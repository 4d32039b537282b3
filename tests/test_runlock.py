"""One writer per run (nca/lit_modules/runlock.py): of writers racing for one run exactly one wins; `nca fit`
of a live run is refused in one line before any work; a stale lock (dead pid, this host) is taken over with
a notice, and the unfinished checkpoint writes of the dead run are swept; a lock from another host is
refused with the file to remove; a requeued SLURM job takes over its own earlier lock."""

from __future__ import annotations

import json
import multiprocessing
import socket
import subprocess
from pathlib import Path

import pytest

from nca.cli import main
from nca.lit_modules.runlock import LOCK_NAME, Holder, RunLock, RunLocked
from tests.helpers.cli import toy_config


@pytest.fixture(autouse=True)
def _plain(monkeypatch):
    monkeypatch.setattr("sys.argv", ["nca"])
    for key in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)


def _race(directory: str, start, hold, results) -> None:
    start.wait()
    try:
        RunLock(directory).acquire(notice=lambda line: None)
        results.put("won")
    except RunLocked:
        results.put("refused")
    hold.wait()  # the winner keeps the lock until every racer has tried


def test_of_writers_racing_for_one_run_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")  # the racers only touch files: forking the test process is safe
    racers = 4
    for round_ in range(3):
        start, hold, results = ctx.Barrier(racers), ctx.Barrier(racers), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(tmp_path / f"run{round_}"), start, hold, results))
                 for _ in range(racers)]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert outcomes == ["refused"] * (racers - 1) + ["won"]


def write_lock(directory: Path, **fields) -> Path:
    holder = {"pid": 1, "host": socket.gethostname(), "started": "2025-01-01 00:00:00 +0000", **fields}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_NAME).write_text(json.dumps(holder))
    return directory / LOCK_NAME


def test_fit_of_a_live_run_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "runs/toy"
    cfg = toy_config(tmp_path, trainer={"max_steps": 2})
    holder = subprocess.Popen(["sleep", "60"])  # a live process on this host holds the run
    try:
        lock = write_lock(run, pid=holder.pid)
        assert main(["fit", "--config", cfg]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is being trained by another nca fit" in err[0] and f"pid {holder.pid}" in err[0]
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # refused before any work
    finally:
        holder.kill()
        holder.wait()

    partial = run / "checkpoints/.last.ckpt.x1y2.partial"  # a save the dead run never finished
    partial.parent.mkdir()
    partial.write_bytes(b"half")
    assert main(["fit", "--config", cfg]) == 0
    err = capsys.readouterr().err
    assert f"taking over {lock}" in err and "no longer runs" in err and f"removed {partial}" in err
    assert not lock.exists() and not partial.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]


def test_a_lock_from_another_host_is_refused_with_the_file_to_remove(tmp_path):
    lock = write_lock(tmp_path, pid=4321, host="node-17")
    with pytest.raises(RunLocked, match=f"another host .*node-17.* remove {lock}"):
        RunLock(tmp_path).acquire()
    assert json.loads(lock.read_text())["host"] == "node-17"  # left alone


def test_a_requeued_slurm_job_takes_over_its_own_earlier_lock(tmp_path, monkeypatch):
    lock = write_lock(tmp_path, pid=4321, host="node-17", slurm_job="77", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    with pytest.raises(RunLocked, match="another host"):  # the same job, not restarted: may still run
        RunLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    notes = []
    with RunLock(tmp_path).acquire(notice=notes.append):
        assert Holder(**json.loads(lock.read_text())).slurm_restart == 1
    assert "an earlier run of this SLURM job" in notes[0] and not lock.exists()
