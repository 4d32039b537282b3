"""Checkpoints whole or not at all, on any local or shared filesystem.

A file is written to a temporary name in its own directory (never ``$TMPDIR``, which may be another
filesystem: a copy across filesystems is not atomic), flushed, fsync'ed and renamed over the final name, then
the directory entry is fsync'ed. A killed writer leaves the previous file untouched and at most one
``.NAME.*.partial`` beside it, which ``sweep_partial`` removes at the next start. A sharded checkpoint
directory is staged the same way and swapped in. A full disk is found before writing (the checkpoint's size
is known from its tensors) or, failing that, by the write itself: either way the temporary file is removed
and one ``NoSpaceForCheckpoint`` line names the directory and the space needed.

Only the standard library and torch: the kill-during-write test loads this module in a bare child process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

PARTIAL = ".partial"  # suffix of every unfinished write; never ``.ckpt``, so no checkpoint search sees one
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # errnos of a full disk or quota
_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15; ext4, xfs, btrfs, tmpfs; not NFS)
_AT_FDCWD = -100


class NoSpaceForCheckpoint(ValueError):
    """The checkpoint does not fit on its disk; nothing was written and earlier checkpoints are intact."""


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def checkpoint_bytes(obj: Any) -> int:
    """Bytes ``torch.save`` writes for ``obj``, within a few KB: its tensors' storages (each counted once) plus
    a little for the pickled structure."""
    seen: set[tuple[int, int]] = set()
    total = 64 * 1024

    def visit(x: Any) -> None:
        nonlocal total
        if callable(getattr(x, "local_shards", None)):  # a ShardedTensor: this rank's shards
            for shard in x.local_shards():
                visit(shard.tensor)
        elif callable(getattr(x, "to_local", None)):  # a DTensor: this rank's part
            visit(x.to_local())
        elif isinstance(x, torch.Tensor):
            storage = x.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in seen and x.device.type != "meta":
                seen.add(key)
                total += storage.nbytes() + 512
        elif isinstance(x, dict):
            for v in x.values():
                visit(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)

    visit(obj)
    return total


def no_space(directory: Path, need: int, free: int) -> NoSpaceForCheckpoint:
    return NoSpaceForCheckpoint(
        f"no space for a checkpoint in {directory}: it needs {size_text(need)}, {size_text(free)} are free; "
        "nothing was written and earlier checkpoints are intact. Free space there or point "
        "--checkpoint.dirpath at a larger disk, then resume with --ckpt_path last"
    )


class _RecordingWriter:
    """A file wrapper that keeps the OSError of a failed write: torch.save reports it as a RuntimeError."""

    def __init__(self, f: BinaryIO):
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def fsync_directory(directory: Path) -> None:
    """Make a rename durable (the directory entry itself); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_partial(path: Path) -> tuple[int, Path]:
    """A new ``.NAME.RANDOM.partial`` beside ``path``, with the permissions the umask gives any new file
    (``mkstemp`` would make it private to its owner, and so the checkpoint too)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{PARTIAL}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], need: int = 0) -> None:
    """``write(f)`` into a temporary file beside ``path``, then rename it over ``path``: readers see the old
    file or the new one, never a part. ``need`` (bytes), when known, is checked against the free space first."""
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if need > free:
        raise no_space(directory, need, free)
    fd, tmp = _create_partial(path)
    recorder = None
    try:
        with os.fdopen(fd, "wb") as f:
            recorder = _RecordingWriter(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = recorder.error if recorder is not None and recorder.error is not None else err
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            raise no_space(directory, max(need, 1), shutil.disk_usage(directory).free) from err
        raise
    fsync_directory(directory)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, whole or not at all (see the module docstring)."""
    atomic_write(path, lambda f: torch.save(obj, f), need=checkpoint_bytes(obj))


def staging_path(path: str | Path) -> Path:
    """Where a directory checkpoint is written before it replaces ``path`` (the same on every rank)."""
    path = Path(path)
    return path.parent / f".{path.name}.staging{PARTIAL}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def _sync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_directory(Path(directory))


def replace_entry(staged: Path, path: Path) -> None:
    """Put the finished ``staged`` (a directory, a file or a symlink) in the place of ``path`` (any of those,
    or nothing), so that ``path`` never holds a mixture of the two.

    A file or link replaces in one rename. A directory cannot be renamed over another one, so an existing
    directory is exchanged with the staged entry in one step where the filesystem can (then removed);
    elsewhere it is first renamed aside, which leaves a moment without ``path`` but never a partial one."""
    if staged.is_dir() and not staged.is_symlink():
        _sync_tree(staged)
    real_dir = path.is_dir() and not path.is_symlink()
    if real_dir and _exchange(staged, path):
        _remove(staged)
    elif not real_dir and not (staged.is_dir() and path.exists()):
        os.replace(staged, path)
    else:
        old = path.parent / f".{path.name}.old{PARTIAL}"
        _remove(old)
        os.rename(path, old)
        os.rename(staged, path)
        _remove(old)
    fsync_directory(path.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def link_atomically(target: str | Path, link: str | Path) -> None:
    """Point ``link`` at ``target`` (relative symlink), replacing whatever ``link`` was in one step; where
    symlinks are not allowed, an atomic copy instead."""
    target, link = Path(target), Path(link)
    staged = link.parent / f".{link.name}.link{PARTIAL}"
    _remove(staged)
    try:
        os.symlink(os.path.relpath(target, link.parent), staged)
    except OSError:
        if target.is_dir():
            shutil.copytree(target, staged)
        else:
            def copy(f: BinaryIO) -> None:
                with open(target, "rb") as source:
                    shutil.copyfileobj(source, f)

            atomic_write(link, copy, need=target.stat().st_size)
            return
    replace_entry(staged, link)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yields a fresh staging directory beside ``path``; on success it replaces ``path``, on failure it is
    removed and ``path`` stays as it was."""
    path, staged = Path(path), staging_path(path)
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    replace_entry(staged, path)


def sweep_partial(directory: str | Path) -> list[Path]:
    """Remove what interrupted writes left in ``directory`` (``.*.partial`` files and staging directories).
    Call it only while holding the run's lock: then no other writer can be using them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for leftover in sorted(directory.glob(f".*{PARTIAL}")):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed
