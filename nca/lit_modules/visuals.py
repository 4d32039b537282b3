"""``NCAPictures``: what a stage-1 run trains on and what it predicts, as TensorBoard images.

- ``nca/rollouts`` once at the start of fit: a strip per rule (a row per rule, a column per frame) of a few
  training-split rules drawn in the run's complexity band, rendered with ``nca.automaton.render.strip``.
- ``nca/predicted_frames`` at the end of every validation: for a few held-out (validation-split) rules,
  the true frames (odd rows) and the model's predicted frames beneath them (even rows). Predictions are
  greedy per-token argmax under teacher forcing: every patch is predicted from the true preceding tokens,
  not from the model's own earlier predictions. A predicted delimiter where a patch belongs is drawn as
  state 0. Also logs ``nca/predicted_patch_accuracy``, the fraction of patches predicted exactly.

Runs on rank 0 and does nothing (one message) when the DataModule is not NCA (it needs ``cfg``,
``band``, ``seed``, ``seq_len`` and a ``PatchTokenizer`` as ``tokenizer``, as ``nca.datamodules.nca`` has).
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from nca.automaton.render import strip
from nca.automaton.stream import NCAStream
from nca.automaton.tokenize import PatchTokenizer


def nca_datamodule(trainer: L.Trainer) -> Optional[Any]:
    dm = trainer.datamodule
    ok = dm is not None and isinstance(getattr(dm, "tokenizer", None), PatchTokenizer) and hasattr(dm, "cfg")
    return dm if ok else None


def whole_frame_rows(dm: Any, split: str, rules: int, frames: int) -> torch.Tensor:
    """[rules, frames * frame_len] ids: the first ``frames`` frames of sequences 0.. of a split's stream."""
    stream = NCAStream(dm.cfg, frames * dm.tokenizer.frame_len - 1, dm.band, seed=dm.seed, split=split)
    return stream.rows(torch.arange(rules))


def predicted_frames(model, rows: torch.Tensor, tok: PatchTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(true [R, F-1, H, W], predicted [R, F-1, H, W]) states of frames 1.. of whole-frame ``rows`` under
    teacher forcing (greedy argmax per token)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        guess = model(rows[:, :-1].to(device)).argmax(-1).cpu()  # guess[:, t] predicts rows[:, t + 1]
    predicted = torch.cat([rows[:, :1], guess], dim=1)
    framed = predicted.view(len(rows), -1, tok.frame_len).clone()
    framed[..., 0], framed[..., -1] = tok.start_id, tok.end_id  # delimiters are not what is being shown
    patches = framed[..., 1:-1]
    patches[patches >= tok.start_id] = 0
    truth = tok.decode(rows)[:, 1:]
    return truth, tok.decode(framed.flatten(1))[:, 1:]


class NCAPictures(L.Callback):
    """Rollout strips at fit start and predicted-vs-true frames at each validation (see the module docs).

    Args:
        rules: rules per picture.
        frames: frames shown per rule (capped so the rows fit the model's block_size).
        scale: pixels per cell.
    """

    def __init__(self, rules: int = 4, frames: int = 8, scale: int = 6):
        if rules < 1 or frames < 2 or scale < 1:
            raise ValueError("NCAPictures needs rules >= 1, frames >= 2 and scale >= 1")
        self.rules, self.frames, self.scale = rules, frames, scale
        self._val_rows: Optional[torch.Tensor] = None

    def _frames(self, dm: Any, pl_module: L.LightningModule) -> int:
        return max(2, min(self.frames, pl_module.model.config.block_size // dm.tokenizer.frame_len))

    def _log_image(self, trainer: L.Trainer, tag: str, image: np.ndarray) -> None:
        for logger in trainer.loggers:
            if hasattr(getattr(logger, "experiment", None), "add_image"):
                logger.experiment.add_image(tag, image, trainer.global_step, dataformats="HWC")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = nca_datamodule(trainer)
        if dm is None:
            rank_zero_info("NCAPictures: the DataModule is not NCA; no pictures are logged")
            return
        if not trainer.is_global_zero:
            return
        rows = whole_frame_rows(dm, "train", self.rules, self._frames(dm, pl_module))
        picture = strip(dm.tokenizer.decode(rows), dm.cfg.n_states, scale=self.scale)
        self._log_image(trainer, "nca/rollouts", np.asarray(picture))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = nca_datamodule(trainer)
        if dm is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if self._val_rows is None:
            self._val_rows = whole_frame_rows(dm, "val", self.rules, self._frames(dm, pl_module))
        truth, guess = predicted_frames(pl_module.model, self._val_rows, dm.tokenizer)
        pairs = torch.stack([truth, guess], dim=1).flatten(0, 1)  # true, predicted, true, predicted, ...
        self._log_image(trainer, "nca/predicted_frames", np.asarray(strip(pairs, dm.cfg.n_states, scale=self.scale)))
        accuracy = float((dm.tokenizer.patch_ids(guess) == dm.tokenizer.patch_ids(truth)).float().mean())
        for logger in trainer.loggers:
            logger.log_metrics({"nca/predicted_patch_accuracy": accuracy}, step=trainer.global_step)
