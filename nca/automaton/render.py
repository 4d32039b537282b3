"""Pictures of trajectories for a person to look at: PNG strips and animated GIFs.

Grids are drawn as stored: row y of a ``[H, W]`` state is pixel row y, in the PNG strips, the GIFs and
the HTML viewer alike. Text uses PIL's default font, so no font file is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _text_size(text: str) -> tuple[int, int]:
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=_font())
    return right, bottom


def _line_height() -> int:
    return _text_size("Ag0")[1] + 4


def _with_margins(img: Image.Image, left: int, top: int, bottom: int = 0, pad: int = 4) -> tuple[Image.Image, int, int]:
    """``img`` pasted on a white canvas with room for text; returns the canvas and where img's origin went."""
    out = Image.new("RGB", (img.width + left + 2 * pad, img.height + top + bottom + 2 * pad), "white")
    out.paste(img, (left + pad, top + pad))
    return out, left + pad, top + pad


def label_width(labels: Sequence[str]) -> int:
    """Pixels the widest label needs: pass one width to several ``labelled_strip`` calls to align their grids."""
    return max(_text_size(t)[0] for t in labels) + 6


def labelled_strip(trajectories: torch.Tensor, n_states: int, title: str, row_labels: Sequence[str],
                   scale: int = 8, gap: int = 2, first_frame: int = 0, left: int | None = None) -> Image.Image:
    """``strip`` with a title line, the frame index above each column and a label left of each rule's row
    (in a margin ``left`` pixels wide; default: as wide as the widest label)."""
    grid = strip(trajectories, n_states, scale, gap)
    r, f, h, w = trajectories.shape
    if len(row_labels) != r:
        raise ValueError(f"{len(row_labels)} row labels for {r} rules; give one label per rule")
    line = _line_height()
    left = max(left or 0, label_width(row_labels))
    img, x0, y0 = _with_margins(grid, left, 2 * line)
    draw, font = ImageDraw.Draw(img), _font()
    draw.text((4, 4), title, fill="black", font=font)
    cell_w, cell_h = w * scale, h * scale
    for j in range(f):
        label = f"t={first_frame + j}"
        x = x0 + j * (cell_w + gap) + (cell_w - _text_size(label)[0]) // 2
        draw.text((max(x, x0 + j * (cell_w + gap)), y0 - line), label, fill="#444444", font=font)
    for i, text in enumerate(row_labels):
        draw.text((4, y0 + i * (cell_h + gap) + (cell_h - line) // 2 + 2), text, fill="black", font=font)
    return img


def gif_frames(trajectories: torch.Tensor, n_states: int, scale: int = 8, gap: int = 2, title: str = "",
               labels: Sequence[str] | None = None, first_frame: int = 0) -> list[Image.Image]:
    """One image per time step: every rule's grid side by side, in the PNG's orientation, a title line with
    the frame index above and each rule's label below its grid."""
    r, f, h, w = trajectories.shape
    labels = list(labels) if labels is not None else []
    if labels and len(labels) != r:
        raise ValueError(f"{len(labels)} labels for {r} rules; give one label per rule")
    line = _line_height()
    cell_w = max([w * scale] + [_text_size(t)[0] + 4 for t in labels])  # a column is as wide as its label
    frames = []
    for t in range(f):
        row = strip(trajectories[:, t].unsqueeze(0), n_states, scale, 0)  # [1 row, R columns], grids as stored
        spaced = Image.new("RGB", (r * (cell_w + gap) - gap, h * scale), "white")
        for i in range(r):
            spaced.paste(row.crop((i * w * scale, 0, (i + 1) * w * scale, h * scale)), (i * (cell_w + gap), 0))
        img, x0, y0 = _with_margins(spaced, 0, line, line if labels else 0)
        draw, font = ImageDraw.Draw(img), _font()
        draw.text((4, 2), f"{title}  frame {first_frame + t}/{first_frame + f - 1}".strip(), fill="black", font=font)
        for i, text in enumerate(labels):
            draw.text((x0 + i * (cell_w + gap), y0 + h * scale + 2), text, fill="black", font=font)
        frames.append(img)
    return frames


def save_gif(trajectories: torch.Tensor, n_states: int, path: Path, scale: int = 8, gap: int = 2, ms: int = 150,
             title: str = "", labels: Sequence[str] | None = None) -> None:
    """[rules, frames, H, W] -> an animation of all rules side by side, grids oriented as in ``strip``."""
    frames = gif_frames(trajectories, n_states, scale, gap, title, labels)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)


def stack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """Images one under another on white, left-aligned: the overview of several bands' strips."""
    if not images:
        raise ValueError("nothing to stack: give at least one image")
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)), "white")
    y = 0
    for img in images:
        out.paste(img, (0, y))
        y += img.height + gap
    return out
