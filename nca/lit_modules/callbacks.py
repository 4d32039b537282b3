"""Ablation callbacks of the stage transition (paper, section 5): re-initialise or freeze chosen parts.

Both select tensors with :func:`nca.lit_modules.transfer.select_parameters` (parts: attention, mlp, norms,
final_norm, embeddings; optional layer indices) on ``pl_module.model``, the LightningModule's litgpt GPT.
In YAML::

    trainer:
      callbacks:
        - class_path: nca.lit_modules.callbacks.ReinitializeParameters
          init_args: {parts: [attention], layers: [0, -1], seed: 0}
"""

from __future__ import annotations

import zlib
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from torch import nn

from nca.lit_modules.model import init_std, is_norm
from nca.lit_modules.transfer import (
    assign_,
    check_parts,
    full_parameters,
    logical_shapes,
    resolve,
    select_parameters,
    summarize_names,
)


def init_value(model: nn.Module, name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """A fresh full (CPU, fp32) value for one tensor, by litgpt's pre-training scheme.

    The scheme ``CausalLM`` trains with (``init_std``, litgpt's pre-training init): norms to ones, biases to
    zeros, every linear or embedding weight ~ N(0, init_std).
    """
    owner_name, _, leaf = name.rpartition(".")
    owner = resolve(model, owner_name)
    if is_norm(owner):
        return torch.ones(shape) if leaf == "weight" else torch.zeros(shape)
    if leaf == "bias":
        return torch.zeros(shape)
    return torch.empty(shape).normal_(0.0, init_std(name, model.config), generator=generator)


def _tensor_seed(seed: int, name: str) -> int:
    """Per-tensor seed: values depend on (seed, name) only, not on order, device or sharding."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


class ReinitializeParameters(L.Callback):
    """Re-initialise chosen parts of the GPT once, at the start of a fresh (non-resumed) run.

    Runs in ``on_train_start``: after the LightningModule's ``on_fit_start`` (where ``init_from`` is
    loaded), so it overrides carried weights. It never runs twice: its ``applied`` flag is saved in
    checkpoints, and it also skips when the trainer resumes from ``ckpt_path``.

    Args:
        parts: any of attention (attn.*: q/k/v and o), mlp (fc_1/fc_2/proj: gate/up/down), norms (norm_1,
            norm_2 of each layer), final_norm (transformer.ln_f), embeddings (wte and lm_head).
        layers: layer indices for the per-layer parts (negative from the end); None means all layers.
        seed: the values are a function of (seed, tensor name).

    Supported: plain / DDP models, FSDP1 (Lightning's ``FSDPStrategy``: full parameters are summoned on
    ``trainer.model`` with write-back) and DTensor-sharded models (FSDP2: every rank builds the same full
    value and keeps its shard).
    """

    def __init__(self, parts: list[str] = ["attention"], layers: Optional[list[int]] = None, seed: int = 0) -> None:
        self.parts = check_parts(parts)
        self.layers = None if layers is None else list(layers)
        self.seed = seed
        self.applied = False

    @property
    def state_key(self) -> str:
        # Distinct per configuration, so two instances (e.g. attention and mlp) keep separate state.
        return self._generate_state_key(parts=self.parts, layers=self.layers, seed=self.seed)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.applied or trainer.ckpt_path is not None:
            rank_zero_info(f"{type(self).__name__}: resumed run, parameters are not re-initialised again")
            return
        names = reinitialize(pl_module.model, self.parts, self.layers, self.seed, fsdp_root=trainer.model)
        self.applied = True
        shapes = logical_shapes(pl_module.model)
        count = sum(shapes[n].numel() for n in names)
        rank_zero_info(
            f"{type(self).__name__}: re-initialised {len(names)} tensors ({get_human_readable_count(count)} params): "
            f"{summarize_names(names)} (seed {self.seed})"
        )
        for logger in trainer.loggers:
            logger.log_metrics({"ablation/reinitialized_params": float(count)}, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"applied": self.applied}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.applied = bool(state_dict.get("applied", False))


def reinitialize(
    model: nn.Module,
    parts: list[str],
    layers: Optional[list[int]] = None,
    seed: int = 0,
    fsdp_root: Optional[nn.Module] = None,
) -> list[str]:
    """Re-initialise the selected tensors of a litgpt GPT in place; returns their names."""
    names = select_parameters(model, parts, layers)
    shapes = logical_shapes(model)
    with full_parameters(model, fsdp_root) as params:
        for name in names:
            generator = torch.Generator().manual_seed(_tensor_seed(seed, name))
            assign_(params[name], init_value(model, name, shapes[name], generator))
    return names


class FreezeParameters(L.Callback):
    """Keep chosen parts of the GPT fixed, for the whole run or for its first ``steps`` optimizer steps.

    How: their gradients are dropped (set to None) in ``on_before_optimizer_step``, which runs after
    backward and before gradient clipping and the step. torch optimizers skip a parameter whose grad is
    None entirely, so AdamW neither moves it nor applies weight decay nor advances its moments, and the
    clipping norm ignores it. ``requires_grad`` is left alone on purpose: the optimizer was built before
    this callback runs and keeps every parameter (so unfreezing needs nothing), and toggling
    ``requires_grad`` after DDP/FSDP wrapped the model breaks their gradient reducers. Backward still
    computes the frozen gradients (no compute saved). Works for FSDP1 with ``use_orig_params=True``
    (Lightning's default) and DTensor parameters; the step count comes from ``trainer.global_step``, so a
    resumed run freezes exactly as the original would have.

    Args:
        parts: as for :class:`ReinitializeParameters`.
        layers: layer indices for the per-layer parts; None means all layers.
        steps: frozen for optimizer steps 0..steps-1, trained afterwards; None keeps them frozen.
    """

    def __init__(self, parts: list[str], layers: Optional[list[int]] = None, steps: Optional[int] = None) -> None:
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be a positive number of optimizer steps or None (always), got {steps!r}")
        self.parts = check_parts(parts)
        self.layers = None if layers is None else list(layers)
        self.steps = steps
        self._names: Optional[list[str]] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(parts=self.parts, layers=self.layers, steps=self.steps)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._names = select_parameters(pl_module.model, self.parts, self.layers)
        shapes = logical_shapes(pl_module.model)
        count = sum(shapes[n].numel() for n in self._names)
        until = "for the whole run" if self.steps is None else f"until optimizer step {self.steps}"
        rank_zero_info(
            f"{type(self).__name__}: freezing {len(self._names)} tensors ({get_human_readable_count(count)} params) {until}: "
            f"{summarize_names(self._names)}"
        )

    def frozen(self, step: int) -> bool:
        return self.steps is None or step < self.steps

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self._names is None or not self.frozen(trainer.global_step):
            return
        for name in self._names:
            resolve(pl_module.model, name).grad = None
