"""Two-process CPU training (DDP over gloo) through `nca fit`. A SIGTERM that reaches one rank makes both
save the step and stop, and the resumed run's losses equal an uninterrupted run's. A fit that is killed
and resumed with `--ckpt_path last` gives the same losses; ranks read disjoint data; rank 0 alone writes one
config per log version and one set of checkpoints; `model.init_from` reaches every rank.

Starting a process costs seconds of imports, so one group of 2 processes (started here, as Lightning's
launcher would) runs the reference, the preempted run, its resume and the killed run in turn; the killed
run's resume is a real `nca fit` launch with Lightning's own launcher."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback

from tests.helpers.signals import read_steps

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_layer=2, n_embd=32, n_head=4, block_size=32)

pytestmark = pytest.mark.slow  # two launches of 2 processes, ~20-60 s each on 2 shared cores


class RecordRanks(Callback):
    """Writes, per rank, each step's loss and row hashes, and the first block's weights at the start;
    ``kill_at``: the process dies (os._exit, no clean-up) right after that step, before its checkpoint."""

    def __init__(self, out: str, kill_at: int = 0):
        self.out, self.kill_at = Path(out), kill_at

    def _file(self, trainer, kind: str) -> Path:
        return self.out / f"{kind}_rank{trainer.global_rank}_start{self.start}"

    def on_train_start(self, trainer, pl_module):
        self.start = trainer.global_step
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.model.transformer.h[0].attn.qkv.weight.detach().clone(), self._file(trainer, "qkv"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        rows = [hashlib.sha1(r.numpy().tobytes()).hexdigest()[:16] for r in batch["input_ids"].cpu()]
        record = {"step": trainer.global_step, "loss": float(outputs["loss"]), "rows": rows}
        with open(self._file(trainer, "steps"), "a") as f:
            f.write(json.dumps(record) + "\n")
        if trainer.global_step == self.kill_at:
            os._exit(9)


def steps(out: Path, rank: int, start: int) -> dict[int, dict]:
    lines = (out / f"steps_rank{rank}_start{start}").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


def config(tmp_path: Path, kill_at: int, init_from: str | None) -> str:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 2, "strategy": "ddp", "precision": "32-true", "max_steps": 4,
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "val_check_interval": 4, "check_val_every_n_epoch": None, "log_every_n_steps": 1,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "runs"), "name": "ddp"}},
            "callbacks": [{"class_path": f"{__name__}.RecordRanks",
                           "init_args": {"out": str(tmp_path / "record"), "kill_at": kill_at}}],
        },
        "checkpoint": {"every_n_train_steps": 2},
        "model": {"config": TINY, "lr": 3e-3, "warmup_steps": 1, "init_from": init_from},
        "data": {"class_path": "NCADataModule", "init_args": {
            "seq_len": 32, "batch_size": 2, "band": None, "nca": {"n_states": 3, "grid": 4, "patch": 2},
            "val_rules": 2, "val_sequences": 4, "test_rules": 2, "test_sequences": 4, "num_workers": 0}},
    }
    path = tmp_path / f"ddp_kill{kill_at}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def preemption_config(tmp_path: Path, name: str, *callbacks: dict, file: str = "") -> str:
    """6 steps of the run above without validation, recording every step of each rank under record/NAME."""
    cfg = yaml.safe_load(Path(config(tmp_path, kill_at=0, init_from=None)).read_text())
    record = {"class_path": "tests.helpers.signals.RecordSteps", "init_args": {"out": str(tmp_path / "record" / name)}}
    cfg["trainer"].update(max_steps=6, val_check_interval=None, limit_val_batches=0, callbacks=[record, *callbacks])
    cfg["trainer"]["logger"]["init_args"]["name"] = name
    path = tmp_path / f"{file or name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def nca_fit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nca", "fit", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)


def stage1_checkpoint(path: Path) -> Path:
    from nca.lit_modules.causal_lm import CausalLM

    module = CausalLM(config=TINY, vocab_size=3 ** 4 + 2)
    module.configure_model()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """One group of 2 processes runs four fits in turn: an uninterrupted reference, a run whose rank 0 alone
    gets SIGTERM during its 3rd step, that run's resume, and a run killed after step 3 (init_from on)."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    source = stage1_checkpoint(tmp_path / "stage1.ckpt")
    sigterm = {"class_path": "tests.helpers.signals.SignalAt", "init_args": {"step": 2, "rank": 0}}
    runs = [["fit", "--config", preemption_config(tmp_path, "ref")],
            ["fit", "--config", preemption_config(tmp_path, "run", sigterm, file="preempted")],
            ["fit", "--config", preemption_config(tmp_path, "run"), "--ckpt_path", "last"],
            ["fit", "--config", config(tmp_path, kill_at=3, init_from=str(source))]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "WORLD_SIZE": "2", "NODE_RANK": "0"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.helpers.ddp_driver", str(tmp_path), json.dumps(runs)],
                              cwd=ROOT, env={**env, "LOCAL_RANK": str(rank)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    errs = [p.communicate(timeout=400)[1] for p in procs]
    return tmp_path, source, [p.returncode for p in procs], errs


def test_sigterm_to_one_of_two_processes_saves_the_step_on_both_and_resumes_with_equal_losses(group):
    tmp_path, _, returncodes, errs = group
    assert returncodes == [9, 9], errs[0][-3000:] + errs[1][-3000:]  # the last fit is killed on purpose
    # rank 0 reports (128 + SIGTERM); rank 1, a process its launcher reports for, exits 0 after the save
    assert json.loads((tmp_path / "codes_rank0.json").read_text()) == [0, 143, 0]
    assert json.loads((tmp_path / "codes_rank1.json").read_text()) == [0, 0, 0]
    lines = [line for err in errs for line in err.splitlines() if line.startswith("nca fit: preempted")]
    assert len(lines) == 1 and "preempted at step 3 (SIGTERM)" in lines[0], errs[0][-2000:]
    assert torch.load(tmp_path / "runs/run/checkpoints/last.ckpt", weights_only=False)["global_step"] == 6
    for rank in (0, 1):
        reference, resumed = read_steps(tmp_path / "record/ref", rank), read_steps(tmp_path / "record/run", rank)
        assert sorted(resumed) == sorted(reference) == list(range(1, 7))  # step 3 ran once, then 4-6 on resume
        for step in range(1, 7):
            assert resumed[step]["rows"] == reference[step]["rows"]
            assert resumed[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-5)


def test_two_process_fit_kill_resume(group):
    tmp_path, source, _, errs = group
    out, run = tmp_path / "record", tmp_path / "runs/ddp"

    # init_from reached both ranks: the carried block equals the stage-1 checkpoint's on each
    carried = torch.load(source, weights_only=False)["state_dict"]["model.transformer.h.0.attn.qkv.weight"]
    for rank in (0, 1):
        assert torch.equal(torch.load(out / f"qkv_rank{rank}_start0"), carried)

    # disjoint data: no row is read by both ranks
    first = [steps(out, rank, 0) for rank in (0, 1)]
    assert sorted(first[0]) == sorted(first[1]) == [1, 2, 3]
    rows = [{h for s in ranks.values() for h in s["rows"]} for ranks in first]
    assert rows[0] and rows[1] and not rows[0] & rows[1]

    # rank 0 alone wrote: one config in one log version, one set of checkpoints (step 2; killed before 4)
    assert [p.name for p in run.glob("version_*")] == ["version_0"]
    assert sorted(p.name for p in (run / "version_0").glob("config*.yaml")) == ["config.yaml"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    assert (run / "fit.lock").is_file()  # left by the killed run; its resume takes it over

    resumed = nca_fit("--config", config(tmp_path, kill_at=0, init_from=str(tmp_path / "gone.ckpt")),
                      "--ckpt_path", "last")  # a resume never reads init_from; Lightning's launcher this time
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over" in resumed.stderr and "no longer runs" in resumed.stderr
    for rank in (0, 1):
        again = steps(out, rank, 2)
        assert sorted(again) == [3, 4]
        assert again[3]["rows"] == first[rank][3]["rows"]  # the stream continues where it stopped
        assert again[3]["loss"] == pytest.approx(first[rank][3]["loss"], rel=1e-5)
    assert sorted(p.name for p in run.glob("version_*")) == ["version_0", "version_1"]
    assert [p.name for p in (run / "version_1").glob("config*.yaml")] == ["config.yaml"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"]
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 4
    assert not (run / "fit.lock").exists()
