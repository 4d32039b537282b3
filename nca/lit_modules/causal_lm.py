"""One LightningModule for causal LM training (stage 1 on NCA tokens, stage 2 on text) on litgpt's ``GPT``.

The architecture is always Llama-style (RMSNorm, SwiGLU, full RoPE, no biases, untied head); the YAML only
picks sizes. The model's vocabulary comes from the DataModule (``vocab_size``, linked by the CLI), so it can
never be smaller than the ids it will see. Batches follow the project contract: ``input_ids`` and
already-shifted ``labels`` ([B, T] each), -100 where no loss is taken.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from functools import partial
from typing import Any, Optional

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from litgpt.model import GPT
from litgpt.utils import instantiate_torch_optimizer, reset_parameters
from torchmetrics.aggregation import MeanMetric

from nca.datamodules.shards import IGNORE_INDEX
from nca.lit_modules.checkpoint import plain
from nca.lit_modules.model import (  # noqa: F401 (ModelConfig, init_std, measure_model_flops: the model's API here too)
    ModelConfig,
    build_config,
    check_compile,
    compile_blocks_,
    compile_mode,
    init_std,
    init_weights_,
    is_norm,
    measure_model_flops,
)

OPTIMIZER_HELP = (
    "model.optimizer takes a class path (AdamW, torch.optim.AdamW, bitsandbytes.optim.AdamW8bit) or "
    "{class_path, init_args}"
)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float, resized_at: Optional[int] = None,
              resized_factor: Optional[float] = None) -> float:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at ``total`` steps (and flat after). A run
    extended at step ``resized_at`` (``--train_longer``) goes on from the factor it had there
    (``resized_factor``) along a cosine re-sized to reach ``min_ratio`` at the new ``total``."""
    if resized_at is not None and step >= resized_at:
        progress = min(1.0, (step - resized_at) / max(1, total - resized_at))
        return min_ratio + (resized_factor - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_size(batch: dict[str, torch.Tensor]) -> int:
    return batch["input_ids"].size(0)


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    return batch["input_ids"].numel()


class CausalLM(L.LightningModule):
    """Next-token training of a Llama-style litgpt ``GPT`` (``self.model``), built in ``configure_model``.

    Args:
        config: model sizes (see ``ModelConfig``); the vocabulary normally comes from ``vocab_size``.
        vocab_size: the data's vocabulary (linked from ``data.vocab_size`` by the CLI).
        optimizer: the optimiser's class path (``AdamW`` = ``torch.optim.AdamW``; ``bitsandbytes.optim.AdamW8bit``
            for 8-bit AdamW with the ``[bnb]`` extra) or ``{class_path, init_args}``; lr, betas, eps and
            weight_decay below are passed to it where it takes them (litgpt's ``instantiate_torch_optimizer``).
        lr: peak learning rate, reached at the end of the warm-up.
        min_lr: the floor the cosine decays to at ``trainer.max_steps``.
        warmup_steps: linear warm-up length in optimizer steps (or use warmup_fraction, not both).
        warmup_fraction: linear warm-up length as a fraction of ``trainer.max_steps``.
        betas: Adam's moment decay rates (beta1, beta2).
        eps: Adam's denominator epsilon.
        weight_decay: decoupled weight decay; never applied to norm weights.
        init_from: weights of an earlier stage, loaded at the start of a fresh (non-resumed) fit.
        reinit_embeddings: re-create the embedding and head when loading ``init_from`` (vocabulary changes).
        compile: torch.compile each transformer block: ``auto`` (on when training on a CUDA GPU, off on CPU),
            true, false, or a torch.compile mode (default, max-autotune, max-autotune-no-cudagraphs,
            reduce-overhead). Checkpoint keys are the same either way.
        compile_backend: the torch.compile backend (``inductor``; ``aot_eager`` traces without generating code,
            to tell a compiler problem from a model one).
    """

    def __init__(
        self,
        config: Optional[ModelConfig] = None,
        vocab_size: Optional[int] = None,
        optimizer: str | dict = "AdamW",
        lr: float = 3e-4,
        min_lr: float = 0.0,
        warmup_steps: Optional[int] = None,
        warmup_fraction: Optional[float] = None,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        init_from: Optional[str] = None,
        reinit_embeddings: bool = True,
        compile: bool | str = "auto",
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        if warmup_steps is not None and warmup_fraction is not None:
            raise ValueError("Set either `warmup_steps` or `warmup_fraction`, not both.")
        if warmup_fraction is not None and not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"`warmup_fraction` must lie in [0, 1), got {warmup_fraction}.")
        if not 0.0 <= min_lr <= lr:
            raise ValueError(f"`min_lr` must lie in [0, lr={lr}], got {min_lr}.")
        if isinstance(optimizer, dict) and "class_path" not in optimizer or not isinstance(optimizer, (str, dict)):
            raise ValueError(f"Unknown optimizer {optimizer!r}: {OPTIMIZER_HELP}.")
        check_compile(compile)
        self.save_hyperparameters()
        # Built here (cheap, no tensors) so that a too-small vocabulary fails before any training starts.
        self.model_config = build_config(config, vocab_size)
        self.init_from = init_from
        self.reinit_embeddings = reinit_embeddings
        self.model: Optional[GPT] = None
        self._tokens_seen = torch.zeros((), dtype=torch.int64)
        self._flops: dict[tuple, int] = {}
        self.eval_loss = MeanMetric()  # token-weighted over the whole split, summed across ranks
        self._schedule: Optional[dict[str, Any]] = None  # {"total_steps", "warmup_steps"[, "resized_*"]} of this fit
        self._resumed_schedule: Optional[dict[str, Any]] = None  # the same, read from a resumed checkpoint
        self._resumed_step = 0
        self._requested_schedule: dict[str, Any] = {}
        self._scheduler: Optional[torch.optim.lr_scheduler.LambdaLR] = None
        # Set by `nca fit --train_longer true` (not a hyper-parameter: it is about this invocation): a resume
        # may then raise trainer.max_steps, the rest of the cosine being re-sized from the resumed step.
        self.extend_schedule = False

    # ----------------------------------------------------------------------------------------------- model
    def configure_model(self) -> None:
        """Create the GPT once (Lightning may call this again). Under FSDP on the meta device: FSDP then
        materialises each module with the ``reset_parameters`` installed by ``init_weights_``. Blocks are compiled
        here, in place and before any wrapping, so FSDP and activation checkpointing wrap compiled blocks."""
        if self.model is not None:
            return
        fsdp = self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy)
        cfg = self.model_config
        with torch.device("meta") if fsdp else nullcontext():
            model = GPT(cfg)
        init_weights_(model)
        if not fsdp:
            reset_parameters(model)
        assert model.lm_head.weight is not model.transformer.wte.weight, "head must stay untied"
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        mode = compile_mode(self.hparams.compile, device)
        if mode is not None:
            compile_blocks_(model, mode, self.hparams.compile_backend)
            rank_zero_info(f"torch.compile: each of the {cfg.n_layer} blocks (mode {mode}, "
                           f"backend {self.hparams.compile_backend})")
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def _losses(self, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
        logits = self.model(batch["input_ids"])
        return F.cross_entropy(
            logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
        )

    # -------------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        if self.init_from is not None and self.trainer.ckpt_path is None:
            from nca.lit_modules.transfer import load_stage_weights

            fsdp_root = self.trainer.model if isinstance(self.trainer.strategy, FSDPStrategy) else None
            report = load_stage_weights(self.model, self.init_from, reinit_embeddings=self.reinit_embeddings,
                                        fsdp_root=fsdp_root)
            rank_zero_info(str(report))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._losses(batch)
        n = torch.tensor(batch["input_ids"].numel(), dtype=torch.int64, device=self.device)
        if self.trainer.world_size > 1:
            n = self.trainer.strategy.reduce(n, reduce_op="sum")
        self._tokens_seen = self._tokens_seen.to(self.device) + n
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", loss.detach().exp())
        self.log("train/tokens_seen", self._tokens_seen.float())
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Total gradient 2-norm before clipping (clipping runs after this hook)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        if isinstance(self.trainer.strategy, FSDPStrategy) and self.trainer.world_size > 1:
            norm = self.trainer.strategy.reduce(norm.float() ** 2, reduce_op="sum").sqrt()  # grads are sharded
        self.log("train/grad_norm", norm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = int(self._tokens_seen)
        if self._schedule is not None:  # a resume must not re-shape the schedule (checked in configure_optimizers)
            checkpoint["lr_schedule"] = dict(self._schedule)
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:  # how the data was made, so sampling/evaluation can rebuild its tokenizer
            checkpoint["data"] = {"class_path": f"{type(dm).__module__}.{type(dm).__qualname__}",
                                  "init_args": plain(dict(getattr(dm, "hparams", {})))}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._tokens_seen = torch.tensor(checkpoint.get("tokens_seen", 0), dtype=torch.int64)
        self._resumed_schedule = checkpoint.get("lr_schedule")
        self._resumed_step = int(checkpoint.get("global_step", 0))
        if self._scheduler is not None:  # FSDP restores a checkpoint after configure_optimizers
            self._scheduler.lr_lambdas = [self._schedule_fn() for _ in self._scheduler.lr_lambdas]

    # ---------------------------------------------------------------------------------------------- eval
    def _eval_step(self, batch: dict[str, torch.Tensor]) -> None:
        count = (batch["labels"] != IGNORE_INDEX).sum()
        if count:
            self.eval_loss.update(self._losses(batch, reduction="sum").float() / count, weight=count.float())

    def _log_eval(self, stage: str) -> None:
        if self.eval_loss.update_count == 0:
            return
        loss = self.eval_loss.compute()
        self.eval_loss.reset()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=False, logger=False)
        self.log(f"{stage}/ppl", loss.exp(), sync_dist=False, logger=False)
        if not self.trainer.sanity_checking:
            # Written at the optimizer steps taken: Lightning's own x during fit is one less (the batches stepped
            # before the current one), which skews curves and speed-ups read off the logs.
            for logger in self.loggers:
                logger.log_metrics({f"{stage}/loss": float(loss), f"{stage}/ppl": float(loss.exp())}, step=self.global_step)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self.eval_loss.reset()

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    # ------------------------------------------------------------------------------------------ throughput
    @property
    def flops_per_batch(self) -> Optional[int]:
        """FLOPs of the last batch seen by this module (per device), read by ``ThroughputMonitor``."""
        return self._flops.get(self._last_flops_key) if hasattr(self, "_last_flops_key") else None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._note_shape(batch, training=True)

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._note_shape(batch, training=False)

    on_test_batch_start = on_validation_batch_start

    def _note_shape(self, batch: dict[str, torch.Tensor], training: bool) -> None:
        key = (tuple(batch["input_ids"].shape), training)
        if key not in self._flops:
            self._flops[key] = measure_model_flops(self.model_config, *key[0], training=training)
        self._last_flops_key = key

    def configure_callbacks(self) -> list[L.Callback]:
        from nca.lit_modules.tb_logging import HParamsSummary, TokenThroughput

        return [TokenThroughput(batch_size_fn=batch_size, length_fn=batch_tokens, window_size=5), HParamsSummary()]

    # ------------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        norm_params = {id(p) for m in self.model.modules() if is_norm(m) for p in m.parameters(recurse=False)}
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if id(p) not in norm_params], "weight_decay": hp.weight_decay},
            {"params": [p for p in params if id(p) in norm_params], "weight_decay": 0.0},
        ]
        kwargs = dict(lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay)
        if self.device.type == "cuda":
            kwargs["fused"] = True  # dropped for optimisers that do not take it
        spec = {"init_args": {}, **hp.optimizer} if isinstance(hp.optimizer, dict) else hp.optimizer
        try:
            optimizer = instantiate_torch_optimizer(spec, groups, **kwargs)
        except (ImportError, AttributeError) as err:
            hint = ' (pip install -e ".[bnb]")' if "bitsandbytes" in str(hp.optimizer) else ""
            raise ImportError(f"cannot load optimizer {hp.optimizer!r}{hint}: {err}. {OPTIMIZER_HELP}.") from err

        total = self.trainer.max_steps
        if total is None or total < 0:
            total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            raise ValueError("The learning-rate schedule needs a finite length: set `trainer.max_steps`.")
        total = int(total)
        self._requested_schedule = requested_schedule(hp, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule_fn())
        self._scheduler = scheduler
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------ lr schedule
    def _schedule_fn(self) -> partial:
        """This fit's schedule as LambdaLR's function: the requested one, or on resume the checkpoint's own
        (re-sized when extended). A partial keeps LambdaLR's state_dict free of it (only a __dict__ is saved)."""
        hp = self.hparams
        min_ratio = hp.min_lr / hp.lr if hp.lr else 0.0
        self._schedule = dict(self._requested_schedule)
        if self._resumed_schedule is not None:
            self._schedule = resumed_schedule(self._resumed_schedule, self._requested_schedule, self._resumed_step,
                                              self.extend_schedule, min_ratio)
        return partial(schedule_factor, self._schedule, min_ratio=min_ratio)


def schedule_factor(schedule: dict[str, Any], step: int, min_ratio: float) -> float:
    return lr_factor(step, schedule["warmup_steps"], schedule["total_steps"], min_ratio,
                     schedule.get("resized_at"), schedule.get("resized_factor"))


def requested_schedule(hp: Any, total: int) -> dict[str, int]:
    """The schedule a fit of ``total`` steps asks for: explicit warm-up steps, else a fraction of the total."""
    warmup = hp["warmup_steps"] if hp["warmup_steps"] is not None else int((hp["warmup_fraction"] or 0.0) * total)
    return {"total_steps": total, "warmup_steps": warmup}


def resumed_schedule(old: dict[str, Any], new: dict[str, Any], step: int, extend: bool,
                     min_ratio: float) -> dict[str, Any]:
    """The schedule a resumed run goes on with: its own when ``trainer.max_steps`` is unchanged (a run
    extended before keeps its re-sized cosine and warm-up); with ``extend`` and a larger ``max_steps``, the
    rest of the cosine re-sized from ``step`` (the warm-up, if not over, just continues); else an error."""
    if old["total_steps"] == new["total_steps"] and (old.get("extended") or old["warmup_steps"] == new["warmup_steps"]):
        return dict(old)
    if extend and new["total_steps"] > max(old["total_steps"], step):
        extended = {"total_steps": new["total_steps"], "warmup_steps": old["warmup_steps"], "extended": True}
        if step < old["warmup_steps"]:  # the warm-up goes on as it was; the cosine after it is longer
            return extended
        return {**extended, "resized_at": step, "resized_factor": schedule_factor(old, step, min_ratio)}
    if extend:
        raise ValueError(
            f"--train_longer needs a trainer.max_steps above the resumed run's {max(old['total_steps'], step)}, "
            f"got {new['total_steps']}"
        )
    raise ValueError(
        f"the resumed run's learning-rate schedule was sized for {old['total_steps']} steps "
        f"({old['warmup_steps']} of warm-up), this one for {new['total_steps']} ({new['warmup_steps']}): resume "
        f"with the run's own --trainer.max_steps {old['total_steps']} (and warm-up), or train it longer with "
        "--trainer.max_steps N --train_longer true (optimizer, data position and step counter are kept)"
    )
