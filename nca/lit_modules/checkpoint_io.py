"""Lightning's checkpoint writers made atomic (``nca.lit_modules.atomic``), installed by ``nca fit``.

Lightning's ``TorchCheckpointIO`` serialises the whole checkpoint into memory and lets fsspec copy a
temporary file from ``$TMPDIR`` into place: across filesystems that copy is not atomic (a kill left a 0-byte
``last.ckpt``) and a full disk leaves a partial file. ``AtomicCheckpointIO`` writes in the destination
directory and renames. ``AtomicModelCheckpoint`` does the same for ``save_last: link`` (Lightning removes the
old link before making the new one). ``AtomicFSDPStrategy`` stages a sharded checkpoint directory beside its
final name (every rank writes its shards there) and swaps it in once all ranks have finished.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import FSDPStrategy
from fsspec.implementations.local import LocalFileSystem

from nca.lit_modules.atomic import (DISK_FULL, atomic_save, checkpoint_bytes, link_atomically, no_space, replace_entry,
                                    staging_path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are whole or not at all on local and shared (POSIX) filesystems;
    remote URLs (s3://...) keep fsspec's own transaction. Loading and removal are Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, Path(path))


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) whose ``save_last: link`` replaces ``last.ckpt`` in one step."""

    @staticmethod
    def _link_checkpoint(trainer: Trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and Path(filepath).resolve() != Path(linkpath).resolve():
            link_atomically(filepath, linkpath)
        trainer.strategy.barrier()


def _any_rank(strategy: FSDPStrategy, flag: bool) -> bool:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    return bool(strategy.reduce_boolean_decision(flag, all=False))


def is_disk_full(err: BaseException) -> bool:
    """An ENOSPC/EDQUOT anywhere behind ``err`` (torch.distributed.checkpoint wraps each rank's error)."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL or "No space left on device" in str(e):
            return True
        todo += [e.__cause__, e.__context__]
    return False


class AtomicFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` (same arguments) whose sharded checkpoints appear whole or not at all: every rank
    writes into ``.NAME.staging.partial`` beside the final directory, all ranks agree that every write
    succeeded, then rank 0 swaps the staging directory in. Full-state checkpoints go through the
    strategy's ``CheckpointIO`` (``AtomicCheckpointIO`` under ``nca fit``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Optional[Any] = None) -> None:
        if self._state_dict_type != "sharded":
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = staging_path(path)
        need, free = _sum_ranks(self, checkpoint_bytes(checkpoint)), shutil.disk_usage(path.parent).free
        if _any_rank(self, need > free):  # every rank stops here, before anything is written
            raise no_space(path.parent, need, free)
        if self.global_rank == 0 and staged.exists():
            shutil.rmtree(staged)
        self.barrier("atomic_sharded_save")
        error: Optional[BaseException] = None
        try:
            super().save_checkpoint(checkpoint, staged, storage_options)
        except Exception as err:  # re-raised below, once every rank knows
            error = err
        if _any_rank(self, error is not None):
            if self.global_rank == 0:
                shutil.rmtree(staged, ignore_errors=True)
            self.barrier("atomic_sharded_save_failed")
            if error is not None and is_disk_full(error):
                raise no_space(path.parent, need, shutil.disk_usage(path.parent).free) from error
            if error is not None:
                raise error
            raise RuntimeError(f"another rank failed to write its shards of {path}; {path} is unchanged")
        if self.global_rank == 0:
            replace_entry(staged, path)
        self.barrier("atomic_sharded_save_done")


def _sum_ranks(strategy: FSDPStrategy, n: int) -> int:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return n
    return int(strategy.reduce(torch.tensor(n, dtype=torch.int64, device=strategy.root_device), reduce_op="sum"))


def use_atomic_checkpoints(trainer: Trainer) -> Trainer:
    """Make ``trainer`` write checkpoints atomically: Lightning's default ``TorchCheckpointIO`` becomes
    ``AtomicCheckpointIO`` (a CheckpointIO the user configured is kept), and Lightning's ``FSDPStrategy``
    becomes ``AtomicFSDPStrategy`` (a subclass that only changes ``save_checkpoint``)."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    if type(strategy) is FSDPStrategy:
        strategy.__class__ = AtomicFSDPStrategy
    return trainer
