"""Random NCA rules: one rule = one integer id = one small conv net with its own weights.

Net per cell (docs/paper.md §1): one-hot state -> 3x3 periodic conv (n -> h1, no nonlinearity)
-> 1x1 conv (h1 -> h2) -> ReLU -> 1x1 conv (h2 -> n logits). Weights are LeCun-normal
(truncated at 2 std, variance 1/fan_in, as Flax's ``lecun_normal``); biases are zero, so they are
omitted. Because the input is one-hot, the 3x3 conv is a sum of 9 gathered rows of its kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nca.automaton.config import NCAConfig
from nca.automaton.rng import Domain, hash_keys, stream, to_uniform64

# Standard-normal CDF at +-2 and the std of a normal truncated there (Flax's correction constant).
_PHI_LO, _PHI_HI = 0.022750131948179195, 0.9772498680518208
_TRUNC_STD = 0.87962566103423978


@dataclass
class RuleBatch:
    ids: torch.Tensor  # [R] int64
    w1: torch.Tensor  # [R, 9 * n, h1]: rows ordered (neighbour k of the 3x3 window, input state)
    w2: torch.Tensor  # [R, h1, h2]
    w3: torch.Tensor  # [R, h2, n]

    def __len__(self) -> int:
        return len(self.ids)


def _truncated_lecun(keys: torch.Tensor, shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    count = math.prod(shape)
    u = to_uniform64(stream(keys[:, None], torch.arange(count, device=keys.device)[None, :]))
    z = torch.special.ndtri(_PHI_LO + u * (_PHI_HI - _PHI_LO))  # N(0,1) truncated to [-2, 2]
    w = z * (math.sqrt(1.0 / fan_in) / _TRUNC_STD)
    return w.to(torch.float32).view(len(keys), *shape)


def sample_rules(rule_ids: torch.Tensor, cfg: NCAConfig, seed: int) -> RuleBatch:
    """Weights of each rule id; a pure function of (seed, rule id), on the ids' device."""
    ids = torch.as_tensor(rule_ids, dtype=torch.int64)
    n, (h1, h2) = cfg.n_states, cfg.hidden
    base = hash_keys(seed, ids)
    return RuleBatch(
        ids=ids,
        w1=_truncated_lecun(hash_keys(base, Domain.RULE_W1), (9 * n, h1), fan_in=9 * n),
        w2=_truncated_lecun(hash_keys(base, Domain.RULE_W2), (h1, h2), fan_in=h1),
        w3=_truncated_lecun(hash_keys(base, Domain.RULE_W3), (h2, n), fan_in=h2),
    )
