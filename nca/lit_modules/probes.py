"""``InductionProbe``: induction-head and in-context-learning scores measured during training.

Every ``every_n_steps`` optimizer steps (and once when training starts) rank 0 puts the GPT in eval mode,
measures under ``no_grad`` on a small fixed probe batch, and puts it back in train mode. Logged scalars:

- ``probe/prefix_matching_max`` (the top head's prefix-matching score on repeated random tokens; the
  headline), ``probe/copying_of_top`` (that head's OV copying score), ``probe/transformerlens_max``,
  ``probe/induction_heads`` (heads with prefix matching > ``threshold`` and positive copying);
- on the first validation batch (held out, fixed for the run): NCA data: ``probe/frame_slope`` (mean loss
  per frame against the frame index; negative = rule inference in context); text: ``probe/icl_score``
  (loss_late - loss_early) when rows are long enough, and ``probe/slope_vs_log_t`` always. Text rows are
  packed documents, so a row may span a document boundary (an approximation of the per-document score).

plus ``probe/heads`` (prefix-matching and copying heatmaps) as a TensorBoard image. Definitions:
``docs/paper.md`` (analysis section). In YAML (``configs/analysis/induction_probe.yaml``)::

    trainer:
      callbacks:
        - class_path: nca.lit_modules.probes.InductionProbe
          init_args: {every_n_steps: 100}

Under FSDP the weights are sharded and a forward pass on rank 0 alone would hang, so the probe refuses
FSDP; single-device and DDP runs are supported.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import FSDPStrategy

from nca.analysis.icl import batch_losses, icl_summary, loss_slope, nca_summary
from nca.analysis.induction import candidate_ids, heads_figure, induction_report, repeated_random_tokens


def figure_to_array(fig) -> np.ndarray:
    """[H, W, 3] uint8 pixels of a matplotlib Figure, drawn with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def special_ids(datamodule: Any) -> list[int]:
    """Ids that random probe blocks must avoid: NCA frame delimiters, a text tokenizer's end-of-text."""
    tok = getattr(datamodule, "tokenizer", None)
    ids = [getattr(tok, name) for name in ("start_id", "end_id", "eot_id") if isinstance(getattr(tok, name, None), int)]
    return ids


def frame_length(datamodule: Any) -> Optional[int]:
    """Tokens per frame when the run trains on NCA rows (its DataModule has a PatchTokenizer), else None."""
    return getattr(getattr(datamodule, "tokenizer", None), "frame_len", None)


class InductionProbe(L.Callback):
    """Induction and ICL scores every ``every_n_steps`` steps (rank 0, eval mode, no_grad); see the module docs.

    Args:
        every_n_steps: optimizer steps between probes.
        block_len, repeats, sequences: the repeated-random-token batch (``sequences`` rows of ``block_len``
            distinct ids repeated ``repeats`` times; capped to the model's block_size).
        rows: rows of the first validation batch used for the loss curves (0: none).
        early, late: positions of the ICL score (text rows of >= late + 1 tokens).
        threshold: prefix matching above which a copying head counts as an induction head.
        log_image: also log the heatmaps as an image (TensorBoard loggers).
        seed: the random blocks' seed.
    """

    def __init__(self, every_n_steps: int = 100, block_len: int = 64, repeats: int = 2, sequences: int = 4,
                 rows: int = 4, early: int = 50, late: int = 500, threshold: float = 0.4, log_image: bool = True,
                 seed: int = 0):
        if every_n_steps < 1 or block_len < 2 or repeats < 2 or sequences < 1 or rows < 0:
            raise ValueError("InductionProbe needs every_n_steps >= 1, block_len >= 2, repeats >= 2, sequences >= 1, rows >= 0")
        self.every_n_steps, self.block_len, self.repeats, self.sequences = every_n_steps, block_len, repeats, sequences
        self.rows, self.early, self.late, self.threshold = rows, early, late, threshold
        self.log_image, self.seed = log_image, seed
        self._tokens: Optional[torch.Tensor] = None
        self._curve_batch: Optional[dict[str, torch.Tensor]] = None
        self._last_step = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):
            raise ValueError("InductionProbe does not support FSDP (sharded weights): drop it from trainer.callbacks "
                             "and measure checkpoints afterwards with `nca induction`")

    # ------------------------------------------------------------------------------------- probe data
    def _probe_tokens(self, model, datamodule) -> torch.Tensor:
        if self._tokens is None:
            cfg = model.config
            block = min(self.block_len, cfg.block_size // self.repeats)
            candidates = candidate_ids(cfg.vocab_size, exclude=special_ids(datamodule))
            self._tokens = repeated_random_tokens(candidates, block, self.repeats, self.sequences, seed=self.seed)
        return self._tokens

    def _validation_batch(self, trainer: L.Trainer) -> Optional[dict[str, torch.Tensor]]:
        """The first validation batch's first ``rows`` rows, read once (None without a validation loader)."""
        if self._curve_batch is None and self.rows and trainer.datamodule is not None:
            try:
                batch = next(iter(trainer.datamodule.val_dataloader()))
            except (NotImplementedError, StopIteration, AttributeError, TypeError):
                self.rows = 0  # no validation data: curves are skipped for the rest of the run
                return None
            self._curve_batch = {k: batch[k][: self.rows].clone() for k in ("input_ids", "labels")}
        return self._curve_batch

    # ---------------------------------------------------------------------------------------- measure
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[dict[str, float], dict]:
        """(scalars, the full induction report) of the model as it is now."""
        model, datamodule = pl_module.model, trainer.datamodule
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                tokens = self._probe_tokens(model, datamodule)
                report = induction_report(model, tokens, tokens.shape[1] // self.repeats, self.threshold)
                top = report["top_prefix_matching"]
                scalars = {"probe/prefix_matching_max": top["score"], "probe/copying_of_top": top["copying"],
                           "probe/transformerlens_max": float(np.max(report["transformerlens_mul"])),
                           "probe/induction_heads": float(len(report["induction_heads"]))}
                batch = self._validation_batch(trainer)
                if batch is not None:
                    scalars.update(self._curve_scalars(model, batch, frame_length(datamodule)))
        finally:
            model.train(was_training)
        return scalars, report

    def _curve_scalars(self, model, batch: dict[str, torch.Tensor], frame_len: Optional[int]) -> dict[str, float]:
        losses = batch_losses(model, batch["input_ids"], batch["labels"])
        if frame_len is not None:
            return {"probe/frame_slope": nca_summary(losses, frame_len)["frame_slope"]}
        curve = losses.nanmean(0).numpy()
        out = {"probe/slope_vs_log_t": loss_slope(curve, np.log(np.arange(1, len(curve) + 1)))}
        if losses.shape[1] >= self.late:
            out["probe/icl_score"] = icl_summary(losses, self.early, self.late)["icl_score"]
        return out

    def _probe(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step or not trainer.is_global_zero:
            return
        self._last_step = step
        scalars, report = self.measure(trainer, pl_module)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            if self.log_image and hasattr(getattr(logger, "experiment", None), "add_image"):
                fig = heads_figure(report["prefix_matching"], report["copying"], title=f"step {step}")
                logger.experiment.add_image("probe/heads", figure_to_array(fig), step, dataformats="HWC")

    # ------------------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probe(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._probe(trainer, pl_module)
