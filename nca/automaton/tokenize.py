"""Patch tokenizer (docs/paper.md §2): grids <-> token ids, with frame delimiters and the label mask.

A p x p patch in raster order becomes ``sum_j c_j * n**j`` over its cells in raster order, so
2 x 2 patches of 10 states give 10,000 ids; ``start = n**(p*p)`` and ``end = start + 1`` wrap
each frame. A training row is ``seq_len + 1`` consecutive ids of one trajectory.
"""

from __future__ import annotations

import math

import torch

from nca.automaton.config import NCAConfig


class PatchTokenizer:
    def __init__(self, n_states: int = 10, grid: int = 12, patch: int = 2):
        if grid % patch:
            raise ValueError(f"grid ({grid}) must be a multiple of patch ({patch})")
        self.n, self.grid, self.patch = n_states, grid, patch
        self.side = grid // patch
        self.patches_per_frame = self.side**2
        self.start_id = n_states ** (patch * patch)
        self.end_id = self.start_id + 1
        self.vocab_size = self.start_id + 2
        self.frame_len = self.patches_per_frame + 2
        self._powers = n_states ** torch.arange(patch * patch, dtype=torch.int64)

    @classmethod
    def from_config(cls, cfg: NCAConfig) -> "PatchTokenizer":
        return cls(cfg.n_states, cfg.grid, cfg.patch)

    def frames_for(self, seq_len: int) -> int:
        """Whole frames needed for a row of ``seq_len + 1`` ids (27 for the reference 1024)."""
        return math.ceil((seq_len + 1) / self.frame_len)

    @property
    def mask_first(self) -> int:
        """Label positions masked per row: the targets inside the first frame (its start is never a target)."""
        return self.frame_len - 1

    def patch_ids(self, frames: torch.Tensor) -> torch.Tensor:
        """[..., F, H, W] states -> [..., F, patches] ids (no delimiters)."""
        *lead, f, h, w = frames.shape
        p, s = self.patch, self.side
        x = frames.reshape(*lead, f, s, p, s, p).transpose(-3, -2).reshape(*lead, f, s * s, p * p)
        return (x.to(torch.int64) * self._powers.to(x.device)).sum(-1)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[..., F, H, W] -> [..., F * frame_len] ids with start/end around each frame."""
        ids = self.patch_ids(frames)
        start = torch.full((*ids.shape[:-1], 1), self.start_id, dtype=ids.dtype, device=ids.device)
        return torch.cat([start, ids, start + 1], dim=-1).flatten(-2)

    def rows(self, frames: torch.Tensor, seq_len: int) -> torch.Tensor:
        """[R, F, H, W] -> [R, seq_len + 1] training rows (the tail of the last frame is cut)."""
        ids = self.encode(frames)
        if ids.shape[-1] < seq_len + 1:
            raise ValueError(f"{frames.shape[-3]} frames give {ids.shape[-1]} ids < seq_len + 1 = {seq_len + 1}")
        return ids[..., : seq_len + 1]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., F * frame_len] ids -> [..., F, H, W] states. Strict: delimiters must sit where encode puts them."""
        tokens = torch.as_tensor(tokens, dtype=torch.int64)
        if tokens.shape[-1] % self.frame_len:
            raise ValueError(f"length {tokens.shape[-1]} is not a whole number of {self.frame_len}-token frames")
        fr = tokens.reshape(*tokens.shape[:-1], -1, self.frame_len)
        if (fr[..., 0] != self.start_id).any() or (fr[..., -1] != self.end_id).any():
            raise ValueError("malformed sequence: frames must start with <start> and end with <end>")
        ids = fr[..., 1:-1]
        if (ids < 0).any() or (ids >= self.start_id).any():
            raise ValueError(f"patch ids must lie in [0, {self.start_id})")
        digits = (ids.unsqueeze(-1) // self._powers.to(ids.device)) % self.n  # [..., F, patches, p*p]
        p, s = self.patch, self.side
        x = digits.reshape(*digits.shape[:-2], s, s, p, p).transpose(-3, -2)
        return x.reshape(*digits.shape[:-2], self.grid, self.grid)
