"""How the sampler picks a token (``SamplingConfig``) and the KV cache it decodes with, including the one-token
step with fixed shapes that torch.compile and CUDA graphs capture (``fixed_step``, as gpt-fast decodes): every
batch slot runs each step, attention covers the whole preallocated cache (positions after a row's own are
masked), and nothing in the step reads a value back to the host. Used by ``nca.lit_modules.sampling``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from litgpt.model import GPT, KVCache

from nca.automaton.rng import Domain, hash_keys, to_uniform


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens. Filters apply as in litgpt: top-k, then temperature, then top-p.

    ``max_new_tokens`` is cut where prompt + completion would pass the model's context (finish "context").
    ``temperature`` 0 is greedy (argmax). ``top_p`` keeps the smallest set of most likely tokens whose mass
    is >= top_p; ``top_k`` keeps the tokens whose logit is >= the k-th largest (ties at the k-th are kept).
    A ``stop_ids`` token ends its row and is left out of ``tokens``; a ``stop_strings`` match ends it after the
    token that completes the string (``tokens`` keeps that token, ``text`` is cut before the string).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    stop_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 0:
            problems.append(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"top_k must be >= 1 or None, got {self.top_k}")
        if any(not s for s in self.stop_strings):
            problems.append("stop_strings must not contain the empty string")
        if problems:
            raise ValueError("invalid SamplingConfig: " + "; ".join(problems))
        object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))


# --------------------------------------------------------------------------------------------- choosing
def filtered_probs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """[rows, V] logits -> float32 probabilities after top-k, temperature and top-p (rows sum to 1)."""
    x = logits.float()
    if cfg.top_k is not None and cfg.top_k < x.size(-1):
        kth = torch.topk(x, cfg.top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x / cfg.temperature, dim=-1)
    if cfg.top_p < 1:
        ordered, order = probs.sort(dim=-1, descending=True)
        mass_before = ordered.cumsum(-1) - ordered  # a token is kept while the mass above it is < top_p
        drop = (mass_before >= cfg.top_p).scatter(-1, order, mass_before >= cfg.top_p)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor, block: int = 256) -> torch.Tensor:
    """Per row, the first index whose cumulative weight exceeds ``uniform * total`` (never a zero weight).

    Two levels (sums of blocks of ``block`` ids, then a cumulative sum inside the chosen block only): a full
    cumulative sum over 50k ids is slow on CPU and sums its rounding over the whole vocabulary.
    """
    rows, vocab = weights.shape
    blocks = -(-vocab // block)
    w = torch.nn.functional.pad(weights, (0, blocks * block - vocab)).view(rows, blocks, block)
    sums = w.sum(-1)
    cum = sums.cumsum(-1)
    target = uniforms.to(cum.dtype) * cum[:, -1]
    last = (cum < cum[:, -1:]).sum(-1, keepdim=True)  # the last block with weight: rounding cannot pass it
    b = torch.searchsorted(cum, target.unsqueeze(-1), right=True).clamp_(max=last)
    rest = (target.unsqueeze(-1) - (cum.gather(-1, b) - sums.gather(-1, b))).clamp_(min=0)
    inner = w[torch.arange(rows, device=w.device), b.squeeze(-1)].cumsum(-1)
    last = (inner < inner[:, -1:]).sum(-1, keepdim=True)
    i = torch.searchsorted(inner, rest, right=True).clamp_(max=last)
    return (b * block + i).squeeze(-1)


def choose_tokens(logits: torch.Tensor, cfg: SamplingConfig, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row: argmax when greedy, else the inverse CDF (in vocabulary order) at ``uniforms``.

    Vocabulary order, not probability order, keeps a tiny change of the logits a tiny move of the CDF.
    """
    if cfg.temperature == 0:
        return logits.argmax(-1)
    return inverse_cdf(filtered_probs(logits, cfg), uniforms)


def step_uniforms(seed: int, prompt_ids: torch.Tensor, sample_ids: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    return to_uniform(hash_keys(seed, int(Domain.SAMPLING), prompt_ids, sample_ids, steps))


# --------------------------------------------------------------------------------------------- the cache
class RowKVCache(KVCache):
    """litgpt's KV cache with a position per row (``input_pos`` [rows, 1], written by one scatter instead of
    litgpt's loop over rows), and a prefill mode: with ``slots`` set, a prompt chunk starting at position 0 is
    written into those cache rows and attends only to itself."""

    slots: torch.Tensor | None = None

    def forward(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)
        if self.slots is not None:
            t = k.size(2)
            self.k[self.slots, :, :t] = k
            self.v[self.slots, :, :t] = v
            return k, v
        if input_pos.dim() == 1:
            return super().forward(input_pos, k, v)
        rows = k.size(0)
        index = input_pos.view(rows, 1, -1, 1).expand(-1, k.size(1), -1, k.size(3))
        k_rows, v_rows = self.k[:rows], self.v[:rows]
        k_rows.scatter_(2, index, k)
        v_rows.scatter_(2, index, v)
        return k_rows, v_rows


def install_caches(model: GPT, rows: int, length: int, device: torch.device, dtype: torch.dtype) -> list[RowKVCache]:
    """One ``RowKVCache`` of ``rows`` x ``length`` positions per block, and litgpt's mask for ``length``; on CUDA the
    buffers are marked static so that CUDA graphs replay on them (they are written in place, never replaced)."""
    if any(block.attn.apply_sliding_window_attention for block in model.transformer.h):
        raise ValueError("nca.lit_modules.sampling does not handle sliding-window attention models")
    model.set_kv_cache(1, length, device=device, dtype=dtype)  # litgpt's mask cache for `length` positions
    caches = []
    for block in model.transformer.h:
        shape = block.attn.build_kv_cache(rows, length, model.rope_cache_length(), torch.device("meta"))
        cache = RowKVCache(tuple(shape.k.shape), tuple(shape.v.shape), device=device, dtype=dtype)
        block.attn.kv_cache = cache
        caches.append(cache)
        if device.type == "cuda":
            torch._dynamo.mark_static_address(cache.k)
            torch._dynamo.mark_static_address(cache.v)
    return caches


# --------------------------------------------------------------------------------------------- the fixed step
def fixed_step(model: GPT, tokens: torch.Tensor, input_pos: torch.Tensor, uniforms: torch.Tensor,
               cfg: SamplingConfig, vocab: int) -> torch.Tensor:
    """The next token of every slot: last tokens [slots, 1] at positions [slots, 1] -> [slots], on the device.

    Shapes depend only on the slot count and the cache length, so one capture serves the whole run; without
    ``input_pos_maxp1`` litgpt attends over the whole cache (whole 128-position spans, as the dynamic path's)
    under its causal mask, which zeroes the positions past each row's own."""
    logits = model(tokens, input_pos)[:, 0, :vocab]
    return choose_tokens(logits, cfg, uniforms)


_COMPILED: dict[tuple[str, str | None], Callable] = {}


def compiled_step(device: torch.device, backend: str = "inductor") -> Callable:
    """``fixed_step`` under torch.compile (whole graph, static shapes), made once per process and backend: on CUDA
    with ``mode="reduce-overhead"`` (CUDA graphs: one replay per token instead of a few hundred kernel launches),
    elsewhere inductor's default. Recompiles for another model size, sampling setting, slot count or cache length
    (the sampler rounds the length up to a multiple of 128), not for other weights or prompts."""
    mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
    key = (backend, mode)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(fixed_step, backend=backend, mode=mode, fullgraph=True, dynamic=False)
    return _COMPILED[key]
