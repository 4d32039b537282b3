"""Preemption and training longer, single process, through `nca fit` in process: SIGTERM saves the current
step and exits 143 in one line, the resumed run's losses equal an uninterrupted run's; SLURM's requeue signal
requeues the job, which then resumes by itself; `--train_longer` extends a run keeping optimizer, data
position and step counter. The 2-process case is in test_ddp.py."""

from __future__ import annotations

import hashlib
import math
import os
import stat

import pytest
import torch

from nca.cli import main
from nca.lit_modules.causal_lm import resumed_schedule
from tests.helpers.cli import toy_config
from tests.helpers.data import PatternDataModule, to_batch
from tests.helpers.signals import read_steps

RECORD = "tests.helpers.signals.RecordSteps"


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["nca"])
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)


def config(tmp_path, name: str, max_steps: int, *callbacks: dict, **model) -> str:
    record = {"class_path": RECORD, "init_args": {"out": str(tmp_path / "record" / name)}}
    return toy_config(tmp_path, trainer={"max_steps": max_steps, "callbacks": [record, *callbacks],
                                         "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                                    "init_args": {"save_dir": str(tmp_path / "runs"), "name": name}}},
                      model={"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2, **model},
                      data={"init_args": {"train_batches": 16}})


def signal_at(step: int, name: str = "SIGTERM") -> dict:
    return {"class_path": "tests.helpers.signals.SignalAt", "init_args": {"step": step, "signal_name": name}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 8-step run: every step's loss, learning rate and rows."""
    tmp_path = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.argv", ["nca"])
        assert main(["fit", "--config", config(tmp_path, "ref", 8)]) == 0
    return read_steps(tmp_path / "record/ref")


def one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nca fit")]
    assert len(err) == 1, err
    return err[0]


def test_sigterm_saves_the_current_step_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path, capsys, reference):
    cfg = config(tmp_path, "run", 8, signal_at(2))  # arrives during the 3rd step
    assert main(["fit", "--config", cfg]) == 128 + 15
    line = one_line(capsys)
    assert "preempted at step 3 (SIGTERM)" in line and "resume with --ckpt_path last" in line
    ckpts = tmp_path / "runs/run/checkpoints"
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 3  # not step 2's checkpoint
    assert not (tmp_path / "runs/run/fit.lock").exists()
    first = read_steps(tmp_path / "record/run")
    assert sorted(first) == [1, 2, 3]  # nothing ran after the step in progress

    assert main(["fit", "--config", config(tmp_path, "run", 8), "--ckpt_path", "last"]) == 0
    steps = read_steps(tmp_path / "record/run")
    assert sorted(steps) == list(range(1, 9))
    for step in range(1, 9):
        assert steps[step]["rows"] == reference[step]["rows"]
        assert steps[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-6, abs=1e-7)


def test_slurm_requeue_signal_requeues_and_the_requeued_job_resumes_by_itself(tmp_path, capsys, monkeypatch, reference):
    scontrol = tmp_path / "bin/scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol.args'}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(key, value)

    assert main(["fit", "--config", config(tmp_path, "job", 8, signal_at(3, "SIGUSR1"))]) == 128 + 10
    assert "SLURM job 4242 requeued" in one_line(capsys)
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM sets when it starts the requeued job
    assert main(["fit", "--config", config(tmp_path, "job", 8)]) == 0  # the same command, no --ckpt_path
    assert "was requeued: resuming" in capsys.readouterr().err
    steps = read_steps(tmp_path / "record/job")
    assert sorted(steps) == list(range(1, 9))
    assert [steps[s]["loss"] for s in range(1, 9)] == pytest.approx([reference[s]["loss"] for s in range(1, 9)])


def test_train_longer_keeps_optimizer_data_position_and_step_counter(tmp_path, capsys, reference):
    stop = {"class_path": "tests.helpers.models.StopAtStep", "init_args": {"step": 4}}
    assert main(["fit", "--config", config(tmp_path, "run", 8, stop)]) == 0  # stopped after 4 of its 8 steps

    longer = ["fit", "--config", config(tmp_path, "run", 12), "--ckpt_path", "last", "--trainer.max_steps", "12"]
    assert main(longer) == 2  # refused without the flag, before any step
    line = one_line(capsys)
    assert "sized for 8 steps" in line and "--train_longer true" in line
    assert sorted(read_steps(tmp_path / "record/run")) == [1, 2, 3, 4]

    assert main([*longer, "--train_longer", "true"]) == 0
    steps = read_steps(tmp_path / "record/run")
    assert sorted(steps) == list(range(1, 13))  # the step counter went on from 4
    assert [steps[s]["adam_step"] for s in range(1, 13)] == list(range(12))  # AdamW's state was kept
    batches = [to_batch(rows)["input_ids"] for rows in PatternDataModule(train_batches=16).train_rows.split(8)]
    for s in range(1, 13):  # step s trained on batch s - 1: each batch once, in order, none repeated
        assert steps[s]["rows"] == [hashlib.sha1(r.numpy().tobytes()).hexdigest()[:16] for r in batches[s - 1]]
    # continuous: the first extended step is the one the 8-step run would have taken (same lr, same loss),
    # then the cosine is re-sized to reach min_lr at step 12 instead of 8
    assert steps[5]["lr"] == pytest.approx(reference[5]["lr"])
    for s in (5, 6):
        assert steps[s]["loss"] == pytest.approx(reference[s]["loss"], rel=1e-6, abs=1e-7)
    lr4, low = reference[5]["lr"], 3e-4
    expected = [low + (lr4 - low) * 0.5 * (1 + math.cos(math.pi * (k - 4) / (12 - 4))) for k in range(4, 12)]
    assert [steps[s]["lr"] for s in range(5, 13)] == pytest.approx(expected)
    assert steps[6]["lr"] > reference[6]["lr"]

    # the extended schedule is the run's own now: a later resume needs the new length and no flag
    extended = torch.load(tmp_path / "runs/run/checkpoints/last.ckpt", weights_only=False)["lr_schedule"]
    assert resumed_schedule(extended, {"total_steps": 12, "warmup_steps": 2}, 12, False, 0.1) == extended
