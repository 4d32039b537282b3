"""Checks made before ``fit`` / ``validate`` / ``test`` start any work: every path and length the run will
need, so a mistake costs one line and no time (and leaves no half-made log folder behind)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from nca.lit_modules.checkpoint import is_intact, newest_intact
from nca.cli.errors import UsageError

SPECIAL_CKPT = ("best", "hpc", "registry")  # Lightning's own names, resolved by Lightning


def check_schedule_length(max_steps: Optional[int], max_epochs: Optional[int]) -> None:
    """The learning-rate schedule is sized by ``trainer.max_steps`` (or a finite epoch count): refuse a run of
    unknown length, which would otherwise decay to ``min_lr`` after warm-up and never stop on a stream."""
    if max_steps is not None and max_steps > 0:
        return
    if max_steps is not None and max_steps not in (-1, 0):
        raise UsageError(f"trainer.max_steps must be positive (or -1 with trainer.max_epochs set), got {max_steps}")
    if max_steps == 0 or max_epochs is None or max_epochs <= 0:
        raise UsageError(
            f"trainer.max_steps is {max_steps}: the learning-rate schedule needs the run's length. Set "
            "--trainer.max_steps N (or, for a dataset of finite length, --trainer.max_epochs N)"
        )


def _intact_or_fail(path: Path, key: str) -> None:
    if not path.exists():
        newest = newest_intact(path.parent)
        hint = f"; the newest intact checkpoint there is {newest}" if newest else ""
        raise UsageError(f"{key} {path}: no such file or directory{hint}")
    if not is_intact(path):
        newest = newest_intact(path.parent, exclude=(path,))
        hint = f"the newest intact checkpoint there is {newest}" if newest else "no intact checkpoint is beside it"
        raise UsageError(f"{key} {path} is not an intact checkpoint (truncated, or another kind of file); {hint}")


def resume_path(ckpt_path: Optional[str], dirpath: Optional[str]) -> Optional[str]:
    """``--ckpt_path`` as a checked file: ``last`` becomes the run's newest ``last*.ckpt`` (refused when there
    is none, instead of Lightning's warning and a silent fresh start)."""
    if ckpt_path is None or ckpt_path in SPECIAL_CKPT:
        return ckpt_path
    if ckpt_path == "last":
        lasts = sorted(Path(dirpath).glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if dirpath else []
        if not lasts:
            raise UsageError(
                f"--ckpt_path last: nothing to resume, {dirpath or 'the run'} holds no last.ckpt. Start a fresh run "
                "without --ckpt_path, or name the checkpoint: --ckpt_path PATH"
            )
        path = lasts[-1]
    else:
        path = Path(ckpt_path).expanduser()
    _intact_or_fail(path, "--ckpt_path")
    return str(path)


def check_fit(max_steps: Optional[int], max_epochs: Optional[int], model: Any, ckpt_path: Optional[str],
              dirpath: Optional[str]) -> None:
    """Everything ``fit`` needs that can be checked before the data is prepared (text is tokenised then)."""
    if ckpt_path is None and dirpath and any(Path(dirpath).glob("*.ckpt")):
        raise UsageError(
            f"{dirpath} already holds checkpoints of an earlier run. Resume it with `--ckpt_path last`, or "
            "start a new experiment with another `--trainer.logger.init_args.name` or `--checkpoint.dirpath`."
        )
    check_schedule_length(max_steps, max_epochs)
    init_from = getattr(model, "init_from", None)
    if init_from is not None and ckpt_path is None:  # a resumed run restores its own weights instead
        _intact_or_fail(Path(init_from).expanduser(), "model.init_from")


def check_resume_schedule(ckpt_path: Optional[str], max_steps: Optional[int], model: Any, train_longer: bool) -> None:
    """A resume's learning-rate schedule against the checkpoint's, before the data is prepared: the same
    length, or a longer one with ``--train_longer true`` (the module repeats the check for any caller)."""
    if train_longer and ckpt_path is None:
        raise UsageError("--train_longer extends a resumed run: add --ckpt_path last (or the checkpoint to extend)")
    if ckpt_path is None or ckpt_path in SPECIAL_CKPT or not max_steps or max_steps < 0:
        return
    from nca.lit_modules.causal_lm import requested_schedule, resumed_schedule
    from nca.lit_modules.checkpoint import read_meta

    meta = read_meta(ckpt_path)
    hp = getattr(model, "hparams", {})
    if meta.get("lr_schedule") is None or "warmup_steps" not in hp:
        return
    try:
        resumed_schedule(meta["lr_schedule"], requested_schedule(hp, max_steps),
                         int(meta.get("global_step", 0)), train_longer, 0.0)
    except ValueError as err:
        raise UsageError(f"--ckpt_path {ckpt_path}: {err}") from None
