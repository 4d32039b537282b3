"""Pictures of trajectories for a person to look at: PNG strips and animated GIFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# tab10, then a wrap-around HSV ramp for alphabets larger than ten states.
_TAB10 = ["1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf"]


def palette(n_states: int) -> np.ndarray:
    if n_states <= len(_TAB10):
        return np.array([[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in _TAB10[:n_states]], dtype=np.uint8)
    import colorsys

    return np.array([[int(255 * v) for v in colorsys.hsv_to_rgb(i / n_states, 0.65, 0.95)] for i in range(n_states)], dtype=np.uint8)


def to_rgb(frames: torch.Tensor | np.ndarray, n_states: int, scale: int = 8) -> np.ndarray:
    """[..., H, W] states -> [..., H*scale, W*scale, 3] uint8."""
    arr = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames).astype(np.int64)
    img = palette(n_states)[arr]
    return img.repeat(scale, axis=-3).repeat(scale, axis=-2)


def strip(trajectories: torch.Tensor, n_states: int, scale: int = 8, gap: int = 2) -> Image.Image:
    """[rules, frames, H, W] -> one image: a row per rule, a column per frame, white gaps."""
    rgb = to_rgb(trajectories, n_states, scale)  # [R, F, h, w, 3]
    r, f, h, w, _ = rgb.shape
    canvas = np.full((r * (h + gap) - gap, f * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(r):
        for j in range(f):
            canvas[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = rgb[i, j]
    return Image.fromarray(canvas)


def save_gif(trajectories: torch.Tensor, n_states: int, path: Path, scale: int = 8, gap: int = 2, ms: int = 150) -> None:
    """[rules, frames, H, W] -> an animation of all rules side by side."""
    frames = [strip(trajectories[:, t : t + 1], n_states, scale, gap).transpose(Image.Transpose.TRANSPOSE)
              for t in range(trajectories.shape[1])]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)
