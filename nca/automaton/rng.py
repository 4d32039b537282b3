"""Counter-based random numbers: every draw is a pure function of integer keys.

A rule's weights, a trajectory's initial state and each update's noise are hashes of
(seed, rule id, trajectory, step, cell), never of call order. That is what makes the stream
independent of batch size, worker count and resume point. The mixer is splitmix64's finaliser,
done in int64 tensor arithmetic (wrapping multiply, masked right shifts), on CPU or CUDA alike.
"""

from __future__ import annotations

from enum import IntEnum

import torch


class Domain(IntEnum):
    """Every key domain in one registry: each use of randomness hashes its own number, so no two uses ever
    share a stream. A new use takes a new number here; changing a number changes every token it feeds."""

    RULE_W1 = 1  # rule weights: the three kernels
    RULE_W2 = 2
    RULE_W3 = 3
    INIT_LOGITS = 11  # a trajectory's initial state: softmax logits, then cells
    INIT_CELLS = 12
    STEP = 13  # update noise of each step
    COMPLEXITY_PROBE = 21  # the gzip probe's own rollout
    FRESH_RULE = 31  # stream: candidate rules of a sequence
    FRESH_TRAJECTORY = 32
    POOL_TRAJECTORY = 33
    POOL_PERMUTATION = 34
    SHUFFLE = 41  # control streams (nca.datamodules.controls): the permutation of a row's patch tokens
    RANDOM_TOKENS = 42  # control streams: iid uniform patch tokens
    PREVIEW = 99  # pictures for people
    SAMPLING = 101  # language-model sampling (nca.lit_modules.sampling)

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as signed int64
_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685  # 0x94D049BB133111EB


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift (torch's >> on int64 is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    x = x ^ _shr(x, 30)
    x = x * _M1
    x = x ^ _shr(x, 27)
    x = x * _M2
    return x ^ _shr(x, 31)


def hash_keys(*parts: int | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Combine integers/int64 tensors (broadcast) into one well-mixed int64 key per element."""
    if device is None:
        device = next((p.device for p in parts if isinstance(p, torch.Tensor)), torch.device("cpu"))
    h = torch.tensor(0x2545F4914F6CDD1D, dtype=torch.int64, device=device)
    for p in parts:
        h = mix(h ^ mix(torch.as_tensor(p, dtype=torch.int64, device=device) + _GOLDEN))
    return h


def stream(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """splitmix64 outputs ``counters`` of each key's stream: shape broadcast(keys, counters)."""
    return mix(keys + counters * _GOLDEN)


def to_uniform(h: torch.Tensor) -> torch.Tensor:
    """float32 in the open interval (0, 1) from the top 24 bits (exact in float32)."""
    return (_shr(h, 40).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def to_uniform64(h: torch.Tensor) -> torch.Tensor:
    """float64 in (0, 1) from the top 53 bits, for weight sampling where tails matter."""
    return (_shr(h, 11).to(torch.float64) + 0.5) * (1.0 / (1 << 53))


def to_normal(h: torch.Tensor) -> torch.Tensor:
    """Standard normal (float64) by the inverse CDF."""
    return torch.special.ndtri(to_uniform64(h))
