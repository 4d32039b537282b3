"""The model itself: a Llama-style litgpt ``GPT`` built from a small size config, with litgpt's pre-training
init. Everything that builds, initialises or measures a model reads from here (the LightningModule, the
checkpoint reader, the re-init callbacks, the benchmarks)."""

from __future__ import annotations

import math
from functools import partial
from typing import Optional, TypedDict

import torch
from lightning.fabric.utilities.throughput import measure_flops
from litgpt.config import Config
from litgpt.model import GPT, RMSNorm
from torch import nn
NORM_TYPES = (nn.LayerNorm, RMSNorm)


def is_norm(module: nn.Module) -> bool:
    """The one test for normalisation layers (no weight decay; ones when re-initialised)."""
    return isinstance(module, NORM_TYPES)


class ModelConfig(TypedDict, total=False):
    """Sizes of a Llama-style model; every key is a field of ``litgpt.Config``. Unset keys take ``DEFAULTS``.

    A TypedDict (not a dataclass) so that YAML files replace it whole (a model-size file never inherits
    stray keys from the stage file) while ``--model.config.n_layer 4`` still overrides one key, and a
    misspelt key is rejected by the parser.
    """

    block_size: int  # context length
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int  # default n_embd // n_head
    n_query_groups: int  # default n_head (no GQA)
    intermediate_size: int  # SwiGLU hidden size, default 4 * n_embd
    rope_base: int
    norm_eps: float
    vocab_size: int  # leave unset: the vocabulary follows the data
    padded_vocab_size: int  # embedding rows; must be >= the data's vocab_size
    padding_multiple: int  # pad the data's vocab_size up to a multiple of this


DEFAULTS: ModelConfig = dict(block_size=1024, n_layer=2, n_embd=128, n_head=4, rope_base=10000, norm_eps=1e-5,
                             padding_multiple=64)

# What makes the model Llama-style; not configurable on purpose.
LLAMA_STYLE = dict(
    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", bias=False, lm_head_bias=False,
    parallel_residual=False, rotary_percentage=1.0, scale_embeddings=False,
)


def build_config(config: Optional[ModelConfig], data_vocab_size: Optional[int]) -> Config:
    """The litgpt Config for ``config`` with the data's vocabulary; fails early if it cannot hold the data's ids."""
    cfg = {**DEFAULTS, **(config or {})}
    unknown = set(cfg) - set(ModelConfig.__annotations__)
    if unknown:
        raise ValueError(f"Unknown model config keys {sorted(unknown)}; allowed: {sorted(ModelConfig.__annotations__)}")
    cfg.setdefault("intermediate_size", 4 * cfg["n_embd"])
    model_vocab = cfg.get("padded_vocab_size", cfg.get("vocab_size"))
    if data_vocab_size is None:
        if model_vocab is None:
            raise ValueError(
                "The model's vocabulary size is unknown: pass `vocab_size` (the CLI links it from "
                "`data.vocab_size`) or set `model.config.padded_vocab_size`."
            )
        cfg.setdefault("vocab_size", model_vocab)
    else:
        if model_vocab is not None and model_vocab < data_vocab_size:
            raise ValueError(
                f"The model config sets a vocabulary of {model_vocab} rows, smaller than the data's vocab_size "
                f"{data_vocab_size}: token ids would index past the embedding. Remove `vocab_size`/"
                f"`padded_vocab_size` from `model.config` (the vocabulary then follows the data) or set it "
                f">= {data_vocab_size}."
            )
        cfg["vocab_size"] = data_vocab_size
    return Config(**cfg, **LLAMA_STYLE)


def init_std(name: str, config: Config) -> float:
    """Std of a linear/embedding weight under litgpt's pre-training init (``litgpt.pretrain.initialize_weights``,
    GPT-NeoX / TinyLlama scheme): residual output projections shrink with depth, all others sqrt(2 / 5d)."""
    if name.endswith((".attn.proj.weight", ".mlp.proj.weight")):
        return 1 / math.sqrt(config.n_embd) / config.n_layer
    return math.sqrt(2.0 / 5 / config.n_embd)


def init_weights_(model: GPT) -> None:
    """Install litgpt's pre-training init as each module's ``reset_parameters``, so FSDP can materialise
    meta-device modules with the same init (``init_std`` gives the spread of every weight)."""

    def normal_(module: nn.Module, std: float) -> None:
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Embedding, nn.Linear)):
            mod.reset_parameters = partial(normal_, mod, std=init_std(f"{name}.weight", model.config))


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_HELP = (f"model.compile takes auto (on when training on a CUDA GPU), true, false or a torch.compile mode "
                f"({', '.join(COMPILE_MODES)})")


def check_compile(setting: bool | str) -> None:
    if not isinstance(setting, bool) and setting not in ("auto", *COMPILE_MODES):
        raise ValueError(f"Unknown model.compile {setting!r}: {COMPILE_HELP}.")


def compile_mode(setting: bool | str, device: torch.device) -> Optional[str]:
    """The torch.compile mode that ``setting`` means on ``device``, or None for eager. ``auto`` compiles on CUDA
    GPUs that Triton supports (compute capability 7.0 or newer); on CPU a fresh inductor compile costs more
    (tens of seconds of C++ builds) than short CPU runs gain."""
    check_compile(setting)
    if setting == "auto":
        on = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (7, 0)
        return "default" if on else None
    if isinstance(setting, bool):
        return "default" if setting else None
    return setting


def compile_blocks_(model: GPT, mode: str = "default", backend: str = "inductor") -> None:
    """torch.compile every transformer block in place (``nn.Module.compile``), as torchtitan does.

    In place, so parameter names and state-dict keys stay the plain GPT's (no ``_orig_mod.``): checkpoints,
    ``init_from``, the re-init/freeze callbacks and resume see the same model. Per block, so FSDP can still wrap
    and activation-checkpoint each block around its compiled code, and the identical blocks share one graph
    (one compile, not ``n_layer``). Embedding, final norm, head and loss stay eager.
    """
    options = {"mode": None if mode == "default" else mode} if backend == "inductor" else {}
    for block in model.transformer.h:
        block.compile(backend=backend, **options)


def measure_model_flops(config: Config, batch: int, seq_len: int, training: bool = True) -> int:
    """FLOPs of one forward (+ backward when ``training``) of ``config`` at [batch, seq_len], counted on meta by
    torch's FLOP counter: matrix products and attention as the model defines them, so an activation-checkpointing
    recompute is not counted (MFU, not hardware FLOPs utilisation)."""
    with torch.device("meta"):
        model = GPT(config)
        x = torch.randint(0, 1, (batch, seq_len))
        loss_fn = (lambda y: y.sum()) if training else None
        return int(measure_flops(model, lambda: model(x), loss_fn))

