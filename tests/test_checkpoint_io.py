"""Checkpoints whole or not at all (nca/lit_modules/atomic.py, checkpoint_io.py): a writer killed in the
middle of a save with $TMPDIR on another filesystem leaves the previous last.ckpt whole; a full disk is one
line naming the directory and the space, with no partial file anywhere and the earlier checkpoints intact;
save_last links and sharded directories are replaced in one step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from nca.cli import main
from nca.lit_modules.atomic import PARTIAL, NoSpaceForCheckpoint, atomic_save, link_atomically, sweep_partial
from tests.helpers.cli import toy_config

ROOT = Path(__file__).resolve().parents[1]

# The child loads atomic.py alone (torch only, no Lightning: a second's start-up), saves step 1 whole, then
# starts saving step 2 and stops half-way through its bytes, where the test kills it.
CHILD = r"""
import importlib.util, sys, time, io, torch
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)
dest, marker = sys.argv[2], sys.argv[3]
atomic.atomic_save({"global_step": 1, "w": torch.ones(200_000)}, dest)
data = io.BytesIO(); torch.save({"global_step": 2, "w": torch.zeros(200_000)}, data)
def half_then_hang(f):
    f.write(data.getvalue()[: len(data.getvalue()) // 2]); f.flush()
    open(marker, "w").close(); time.sleep(120)
atomic.atomic_write(dest, half_then_hang)
"""


@pytest.fixture
def shm_tmpdir(monkeypatch):
    """$TMPDIR on /dev/shm, another filesystem than the tests' tmp_path (skipped where there is none)."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm here")
    directory = Path(tempfile.mkdtemp(dir="/dev/shm"))
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_a_kill_during_the_write_leaves_last_ckpt_whole_with_tmpdir_on_another_filesystem(tmp_path, shm_tmpdir):
    assert os.stat(shm_tmpdir).st_dev != os.stat(tmp_path).st_dev
    dest, marker = tmp_path / "ckpts/last.ckpt", tmp_path / "writing"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT / "nca/lit_modules/atomic.py"), str(dest),
                              str(marker)], env={**os.environ, "TMPDIR": str(shm_tmpdir)})
    deadline = time.time() + 120
    while not marker.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the child never reached the middle of its second save"
    child.kill()  # SIGKILL: no clean-up of any kind
    child.wait()
    assert torch.load(dest, weights_only=False)["global_step"] == 1  # the previous checkpoint, whole
    assert list(shm_tmpdir.iterdir()) == []  # $TMPDIR was never used
    leftovers = [p.name for p in dest.parent.iterdir() if p != dest]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.ckpt.") and leftovers[0].endswith(PARTIAL)
    assert [p.name for p in dest.parent.glob("*.ckpt")] == ["last.ckpt"]  # never taken for a checkpoint
    assert [p.name for p in sweep_partial(dest.parent)] == leftovers and [p.name for p in dest.parent.iterdir()] == [
        "last.ckpt"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1.2 MB tmpfs: room for two checkpoints of the toy model (~470 KB each), not for a third."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and CAP_SYS_ADMIN (not allowed here)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_is_one_line_with_no_partial_file_and_earlier_checkpoints_intact(tmp_path, small_disk, shm_tmpdir,
                                                                                  capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["nca"])
    ckpts = small_disk / "ckpts"
    cfg = toy_config(tmp_path, trainer={"max_steps": 6})
    assert main(["fit", "--config", cfg, "--checkpoint.dirpath", str(ckpts)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nca fit: error: no space for a checkpoint in "), err
    assert str(ckpts) in err[0] and "needs 5" in err[0] and "KB are free" in err[0]  # ~546 KB needed
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]  # nothing partial
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 2
    assert torch.load(ckpts / "epoch=0-step=2.ckpt", weights_only=False)["global_step"] == 2
    assert list(shm_tmpdir.iterdir()) == []

    # a size estimate that lets the write start: the disk fills in the middle, the same line, nothing left
    monkeypatch.setattr("nca.lit_modules.atomic.checkpoint_bytes", lambda obj: 0)
    with pytest.raises(NoSpaceForCheckpoint, match=f"no space for a checkpoint in {ckpts}"):
        atomic_save({"w": torch.zeros(300_000)}, ckpts / "big.ckpt")
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]


def test_save_last_link_replaces_last_ckpt_in_one_step(tmp_path, monkeypatch):
    from nca.lit_modules.checkpoint_io import AtomicModelCheckpoint
    from nca.lit_modules.causal_lm import CausalLM
    from tests.helpers.data import PatternDataModule
    from tests.helpers.models import TINY, trainer

    removed = []
    real_remove = os.remove
    monkeypatch.setattr(os, "remove", lambda p, *a, **k: (removed.append(Path(p).name), real_remove(p, *a, **k)))
    cb = AtomicModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=2, save_last="link", save_top_k=-1)
    module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    trainer(tmp_path, 4, callbacks=[cb], enable_checkpointing=True).fit(module, PatternDataModule())
    last = tmp_path / "ckpts/last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "epoch=0-step=4.ckpt"
    assert "last.ckpt" not in removed  # replaced by a rename, never removed first

    sharded = tmp_path / "sharded"
    (sharded / "last.ckpt").mkdir(parents=True)  # a sharded checkpoint directory becomes a link too
    (sharded / "step4").mkdir()
    link_atomically(sharded / "step4", sharded / "last.ckpt")
    assert os.readlink(sharded / "last.ckpt") == "step4" and sorted(p.name for p in sharded.iterdir()) == [
        "last.ckpt", "step4"]


def test_sharded_checkpoint_directory_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """AtomicFSDPStrategy's save without a process group (one rank): the same code path as under FSDP."""
    import lightning.pytorch.strategies.fsdp as lightning_fsdp

    from nca.lit_modules.checkpoint import is_intact, read_meta
    from nca.lit_modules.checkpoint_io import AtomicFSDPStrategy

    strategy = AtomicFSDPStrategy(state_dict_type="sharded")
    path = tmp_path / "last.ckpt"

    def state(step):
        return {"state_dict": {"model.w": torch.full((64,), float(step))}, "optimizer_states": [], "global_step": step}

    strategy.save_checkpoint(state(1), path)
    assert is_intact(path) and read_meta(path)["global_step"] == 1

    real_save = lightning_fsdp._distributed_checkpoint_save

    def crash_midway(converted, staged):
        real_save(converted, staged)  # every shard written, then the rank dies before finishing
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lightning_fsdp, "_distributed_checkpoint_save", crash_midway)
    with pytest.raises(NoSpaceForCheckpoint, match=f"no space for a checkpoint in {tmp_path}"):
        strategy.save_checkpoint(state(2), path)
    assert is_intact(path) and read_meta(path)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no staging directory left

    monkeypatch.setattr(lightning_fsdp, "_distributed_checkpoint_save", real_save)
    strategy.save_checkpoint(state(3), path)
    assert is_intact(path) and read_meta(path)["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
