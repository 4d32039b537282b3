"""Batched rollouts of many rules at once (each row its own rule), on CPU or CUDA.

Randomness is keyed per trajectory: ``traj_keys[r]`` fixes row r's initial state and every
update's noise, so a row's frames do not depend on which other rows share the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nca.automaton.config import NCAConfig
from nca.automaton.rng import Domain, hash_keys, stream, to_normal, to_uniform
from nca.automaton.rules import RuleBatch

_SURE_GAP = 20.0  # scaled-logit gap beyond which a draw is certainly the argmax (see Simulator.step)


def _neighbour_index(grid: int, device) -> torch.Tensor:
    """[cells, 9]: flat index of each cell's 3x3 periodic neighbours, row-major over (dy, dx)."""
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    cols = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cols.append((((y + dy) % grid) * grid + (x + dx) % grid).reshape(-1))
    return torch.stack(cols, dim=1).to(device)


def _sample(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF categorical draw over axis 1 of [R, n, cells] logits, one uniform per cell.

    Channels-first keeps the reductions over n vectorised across cells. Exponents are clamped at
    -80: e^-80 is far below float32 resolution next to the maximum's 1, so the draw is unchanged,
    and it avoids the slow denormal path of exp (at temperature 1e-4 most logits sit there).
    """
    z = logits - logits.amax(1, keepdim=True)
    c = z.clamp_min_(-80.0).exp_().cumsum_(1)
    return (c[:, :-1] < (u * c[:, -1]).unsqueeze(1)).sum(1)


def initial_states(traj_keys: torch.Tensor, cfg: NCAConfig) -> torch.Tensor:
    """[R, cells]: z ~ N(0, I_n) once per trajectory, then every cell i.i.d. ~ Categorical(softmax(z))."""
    n, cells = cfg.n_states, cfg.grid * cfg.grid
    dev = traj_keys.device
    z = to_normal(stream(hash_keys(traj_keys, Domain.INIT_LOGITS)[:, None], torch.arange(n, device=dev))).float()
    u = to_uniform(stream(hash_keys(traj_keys, Domain.INIT_CELLS)[:, None], torch.arange(cells, device=dev)))
    return _sample(z[:, :, None].expand(-1, -1, cells), u)


class Simulator:
    """Steps a batch of rules; holds the gather tables so each step is a handful of batched ops.

    Indices are int32 and gathered with ``take``: on CPU, int64 broadcast arithmetic and
    ``max(dim)`` with indices were the slowest ops of a step by far (see benchmarks/).
    """

    def __init__(self, rules: RuleBatch, cfg: NCAConfig):
        self.cfg = cfg
        dev = rules.w1.device
        r, n = len(rules), cfg.n_states
        self.cells = cells = cfg.grid * cfg.grid
        nbr = _neighbour_index(cfg.grid, dev)  # [cells, 9]
        # Flat position of each (rule, cell, neighbour) state, and the w1 row block of each neighbour.
        self.gather = (torch.arange(r, device=dev)[:, None, None] * cells + nbr).reshape(r, cells * 9)
        self.k_offset = (torch.arange(9, device=dev, dtype=torch.int32) * n).repeat(cells)
        self.rule_offset = (torch.arange(r, device=dev, dtype=torch.int32) * (9 * n))[:, None]
        # No nonlinearity sits between the 3x3 conv and the first 1x1 conv, so fold them into one
        # gather table: h2_pre = sum_k (W1 W2)[k, s_k]. Same function, one batched matmul fewer.
        self.w12_flat = torch.bmm(rules.w1, rules.w2).reshape(r * 9 * n, -1)
        self.inv_t = 1.0 / cfg.temperature
        self.w3_scaled = (rules.w3.transpose(1, 2) * self.inv_t).contiguous()  # [R, n, h2], 1/T folded in
        self.state_ids = torch.arange(n, device=dev, dtype=torch.uint8)[None, :, None]

    def logits(self, state: torch.Tensor) -> torch.Tensor:
        """[R, cells] states -> [R, n, cells] next-state logits, already divided by the temperature."""
        r = state.shape[0]
        idx = (state.to(torch.int32) + self.rule_offset).take(self.gather).add_(self.k_offset)
        h = F.embedding_bag(idx.view(-1, 9), self.w12_flat, mode="sum").view(r, self.cells, -1)
        h = h.relu_()  # [R, cells, h2]
        out = torch.bmm(self.w3_scaled, h.transpose(1, 2))  # [R, n, cells]
        if self.cfg.identity_bias:
            bias = torch.full_like(out[:, :1], self.cfg.identity_bias * self.inv_t)
            out.scatter_add_(1, state.long().unsqueeze(1), bias)
        return out

    def step(self, state: torch.Tensor, step_keys: torch.Tensor) -> torch.Tensor:
        """One synchronous update. Exact and lazy: a cell whose top-2 scaled logits differ by more
        than ``_SURE_GAP`` takes its argmax (the other states hold < 9 e^-20 < 2^-25 of the mass,
        below the uniform's resolution, so the inverse-CDF draw would pick it too); only the
        near-ties draw their keyed uniform. At temperature 1e-4 that is about 2% of cells."""
        z = self.logits(state)
        near = (z >= (z.amax(1) - _SURE_GAP).unsqueeze(1)).view(torch.uint8)  # states within the gap of the top
        arg = (near * self.state_ids).amax(1).long()  # the argmax wherever it is the only near state
        unsure = near.sum(1, dtype=torch.uint8) > 1
        rows, cells = unsure.nonzero(as_tuple=True)
        if len(rows):
            u = to_uniform(stream(step_keys[rows], cells))
            arg[rows, cells] = _sample(z[rows, :, cells].unsqueeze(-1), u.unsqueeze(-1)).squeeze(-1)
        return arg

    def rollout(self, traj_keys: torch.Tensor, frames: int) -> torch.Tensor:
        """[R, frames, grid, grid] uint8: the states after ``burn_in`` discarded steps (dT = 1)."""
        cfg = self.cfg
        state = initial_states(traj_keys, cfg)
        out = torch.empty(len(traj_keys), frames, self.cells, dtype=torch.uint8, device=state.device)
        step_base = hash_keys(traj_keys, Domain.STEP)
        for t in range(cfg.burn_in + frames):
            if t >= cfg.burn_in:
                out[:, t - cfg.burn_in] = state
            if t < cfg.burn_in + frames - 1:
                state = self.step(state, hash_keys(step_base, t))
        return out.view(len(traj_keys), frames, cfg.grid, cfg.grid)


def rollout(rules: RuleBatch, traj_keys: torch.Tensor, frames: int, cfg: NCAConfig) -> torch.Tensor:
    return Simulator(rules, cfg).rollout(traj_keys, frames)
