"""Stage transition: carry the transformer blocks of a stage-1 checkpoint into a fresh stage-2 model.

Paper, section 5: every block (attention, MLP, norms) and the final norm are carried over; the input
embedding and the output head stay at the target model's fresh initialisation because the vocabulary
changes (NCA 10,002 ids -> GPT-2 50,257). ``reinit_embeddings=False`` is the "no re-init" variant.

Parameters are addressed by their *logical* litgpt names (``transformer.h.0.attn.qkv.weight``), taken
from a meta-device copy of the model, so the same code works on a plain ``GPT``, on one wrapped by
FSDP1 (Lightning's ``FSDPStrategy``; pass ``fsdp_root``) and on one sharded into DTensors (FSDP2).
The re-init / freeze callbacks share these helpers.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from torch import nn

from nca.lit_modules.checkpoint import read_checkpoint

EMBEDDING_PREFIXES = ("transformer.wte.", "lm_head.")
_LAYER = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")

# Which logical names each ablation part covers; per-layer parts are restricted by ``layers``.
PARTS: dict[str, re.Pattern] = {
    "attention": re.compile(r"^transformer\.h\.\d+\.attn\."),
    "mlp": re.compile(r"^transformer\.h\.\d+\.mlp\."),
    "norms": re.compile(r"^transformer\.h\.\d+\.(norm_1|norm_2|post_attention_norm|post_mlp_norm)\."),
    "final_norm": re.compile(r"^transformer\.ln_f\."),
    "embeddings": re.compile(r"^(transformer\.wte|lm_head)\."),
}


# --------------------------------------------------------------------------- parameter addressing
def logical_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Name -> full shape of every tensor of a litgpt GPT, independent of any sharding wrapper."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "n_layer"):
        raise TypeError(
            f"expected a litgpt GPT (with a .config), got {type(model).__name__}; "
            "pass the LightningModule's GPT (pl_module.model), not the LightningModule"
        )
    from litgpt.model import GPT

    with torch.device("meta"):
        meta = GPT(config)
    return {name: tensor.shape for name, tensor in meta.state_dict().items()}


def resolve(model: nn.Module, name: str) -> torch.Tensor:
    """The tensor a logical name refers to; attribute access looks through FSDP/checkpoint wrappers."""
    obj = model
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _has_fsdp1(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return any(isinstance(m, FullyShardedDataParallel) for m in module.modules())


def is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


@contextlib.contextmanager
def full_parameters(model: nn.Module, fsdp_root: nn.Module | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Yield logical name -> tensor with full logical shapes, writable in place.

    Plain modules and DTensor (FSDP2) parameters need nothing: a DTensor reports its global shape and is
    written through :func:`assign_`. FSDP1 keeps flat shards, so its full parameters are summoned on
    ``fsdp_root`` (``trainer.model``, the FSDP module wrapping the LightningModule) with write-back.
    Fails before anything is written if a parameter is still a shard.
    """
    shapes = logical_shapes(model)
    scope = fsdp_root if fsdp_root is not None else model
    if _has_fsdp1(scope):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        context = FSDP.summon_full_params(scope, writeback=True, recurse=True)
    else:
        context = contextlib.nullcontext()
    with context:
        tensors = {name: resolve(model, name) for name in shapes}
        for name, tensor in tensors.items():
            if tensor.shape != shapes[name]:
                raise RuntimeError(
                    f"parameter {name} is visible as shape {tuple(tensor.shape)}, not its full shape "
                    f"{tuple(shapes[name])}: the model is inside an FSDP1 wrapper that was not given. "
                    "Pass fsdp_root=trainer.model (the FSDP root) so its full parameters can be summoned."
                )
        yield tensors


@torch.no_grad()
def assign_(target: torch.Tensor, value: torch.Tensor) -> None:
    """Write a full CPU tensor into a parameter in place (optimizer references stay valid).

    A DTensor target gets ``value`` laid out like itself; every rank holds the same full value, so no
    communication is needed (``src_data_rank=None``).
    """
    if is_dtensor(target):
        from torch.distributed.tensor import distribute_tensor

        value = distribute_tensor(
            value.to(device=target.device, dtype=target.dtype),
            target.device_mesh,
            target.placements,
            src_data_rank=None,
        )
    target.copy_(value)


def select_parameters(model: nn.Module, parts: Iterable[str] | str, layers: Iterable[int] | None = None) -> list[str]:
    """Logical names of a litgpt GPT's tensors belonging to ``parts``, optionally only in ``layers``.

    ``layers`` (negative indices count from the end) restricts the per-layer parts (attention, mlp,
    norms); ``final_norm`` and ``embeddings`` are not per-layer and are unaffected by it.
    """
    parts = check_parts(parts)
    names = list(logical_shapes(model))
    n_layer = model.config.n_layer
    chosen_layers = None if layers is None else {_layer_index(i, n_layer) for i in layers}
    selected = []
    for name in names:
        if not any(PARTS[p].match(name) for p in parts):
            continue
        layer = _LAYER.match(name)
        if layer and chosen_layers is not None and int(layer.group(1)) not in chosen_layers:
            continue
        selected.append(name)
    return selected


def check_parts(parts: Iterable[str] | str) -> list[str]:
    """Validate part names early (at callback construction), with the valid ones in the message."""
    parts = [parts] if isinstance(parts, str) else list(parts)
    if not parts:
        raise ValueError(f"parts is empty; choose one or more of {sorted(PARTS)}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; valid parts are {sorted(PARTS)}")
    return parts


def _layer_index(index: int, n_layer: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"layer indices must be integers, got {index!r}")
    if not -n_layer <= index < n_layer:
        raise ValueError(
            f"layer {index} is out of range for a model with {n_layer} layers "
            f"(use 0..{n_layer - 1}, or -{n_layer}..-1 from the end)"
        )
    return index % n_layer


# --------------------------------------------------------------------------- reporting
def summarize_names(names: list[str]) -> str:
    """Compress per-layer names: 'blocks 0-23 [attn.qkv.weight, ...], transformer.ln_f.weight'."""
    per_layer: dict[int, list[str]] = {}
    others = []
    for name in names:
        match = _LAYER.match(name)
        if match:
            per_layer.setdefault(int(match.group(1)), []).append(match.group(2))
        else:
            others.append(name)
    pieces = []
    if per_layer:
        suffix_sets = {tuple(v) for v in per_layer.values()}
        if len(suffix_sets) == 1:
            pieces.append(f"blocks {_ranges(sorted(per_layer))} [{', '.join(suffix_sets.pop())}]")
        else:
            pieces += [f"transformer.h.{i}.{s}" for i, v in sorted(per_layer.items()) for s in v]
    return ", ".join(pieces + others) if pieces or others else "nothing"


def _ranges(indices: list[int]) -> str:
    spans, start = [], indices[0]
    for prev, cur in zip(indices, indices[1:] + [None]):
        if cur != prev + 1:
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(spans)


@dataclass
class TransferReport:
    """What a stage transition did: carried tensors, re-initialised (kept fresh) tensors, oddities."""

    source: str
    format: str
    carried: list[str] = field(default_factory=list)
    carried_params: int = 0
    reinitialised: list[str] = field(default_factory=list)
    reinitialised_params: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"carried {len(self.carried)} tensors ({get_human_readable_count(self.carried_params)} params) from "
            f"{self.source} [{self.format}]: {summarize_names(self.carried)}; re-initialised: "
            f"{summarize_names(self.reinitialised)} ({get_human_readable_count(self.reinitialised_params)} params)"
        )
        if self.missing:
            text += f"; missing from the checkpoint, kept fresh: {summarize_names(self.missing)}"
        if self.unexpected:
            text += f"; in the checkpoint but not the model, ignored: {summarize_names(self.unexpected)}"
        return text


# --------------------------------------------------------------------------- the transfer
def load_stage_weights(
    model: nn.Module,
    path: str | Path,
    reinit_embeddings: bool = True,
    *,
    strict: bool = True,
    fsdp_root: nn.Module | None = None,
) -> TransferReport:
    """Copy a stage-1 checkpoint's blocks and final norm into ``model`` (a litgpt GPT) in place.

    With ``reinit_embeddings`` (default) ``transformer.wte`` and ``lm_head`` keep the model's fresh
    initialisation; without it they are copied too and must have the same shape. Every check
    (shapes, missing and, with ``strict``, unexpected tensors) runs before anything is written.
    Under Lightning's FSDPStrategy pass ``fsdp_root=trainer.model``; DTensor (FSDP2) needs nothing.
    """
    shapes = logical_shapes(model)
    state, fmt = read_checkpoint(path, shapes)
    embeddings = [n for n in shapes if n.startswith(EMBEDDING_PREFIXES)]
    wanted = [n for n in shapes if not (reinit_embeddings and n in embeddings)]
    missing = [n for n in wanted if n not in state]
    unexpected = [n for n in state if n not in shapes]
    _check_shapes(state, shapes, wanted, path)
    if strict and (missing or unexpected):
        raise ValueError(_key_problem(path, missing, unexpected))

    carried = [n for n in wanted if n in state]
    with full_parameters(model, fsdp_root) as params:
        for name in carried:
            assign_(params[name], state[name])

    fresh = [n for n in shapes if n not in carried]
    return TransferReport(
        source=str(path),
        format=fmt,
        carried=carried,
        carried_params=sum(shapes[n].numel() for n in carried),
        reinitialised=[n for n in fresh if n not in missing],
        reinitialised_params=sum(shapes[n].numel() for n in fresh if n not in missing),
        missing=missing,
        unexpected=unexpected,
    )


def _check_shapes(state, shapes, wanted, path) -> None:
    bad = [n for n in wanted if n in state and state[n].shape != shapes[n]]
    if not bad:
        return
    embedding = [n for n in bad if n.startswith(EMBEDDING_PREFIXES)]
    if embedding and len(embedding) == len(bad):
        n = embedding[0]
        raise ValueError(
            f"vocabulary mismatch: {n} has shape {tuple(state[n].shape)} in {path} but {tuple(shapes[n])} in "
            "the model, so the embeddings cannot be kept (reinit_embeddings=False). Either re-create them "
            "(model.reinit_embeddings: true, the paper's default) or start from a stage-1 checkpoint trained "
            "with the same tokenizer and padded_vocab_size."
        )
    n = next(n for n in bad if n not in embedding)
    more = f" (and {len(bad) - 1} more mismatched tensors)" if len(bad) > 1 else ""
    raise ValueError(
        f"shape mismatch: {n} has shape {tuple(state[n].shape)} in {path} but {tuple(shapes[n])} in the model"
        f"{more}. The checkpoint was most likely trained with another model size (n_embd, n_head, "
        "n_query_groups, intermediate_size); give stage 2 the same model config as stage 1. Nothing was copied."
    )


def _key_problem(path, missing: list[str], unexpected: list[str]) -> str:
    lines = [f"checkpoint {path} does not match the model's blocks; nothing was copied."]
    if missing:
        lines.append(f"missing from the checkpoint ({len(missing)}): {summarize_names(missing)}")
    if unexpected:
        lines.append(f"not in the model ({len(unexpected)}): {summarize_names(unexpected)}")
    lines.append(
        "A different n_layer (or another architecture) is the usual cause; use stage 1's model config, "
        "or pass strict=False to carry only the matching tensors."
    )
    return "\n".join(lines)
