"""The interactive viewer: ONE self-contained HTML page (no network, no server) playing rules of each
complexity band as canvas animations, with a band picker, play/pause/step and each rule's gzip ratio.

The page embeds precomputed trajectories (``band_rollouts``) as JSON, so what it shows is exactly the
Python rollout: cells are base64 bytes, frame-major then row-major (cell (y, x) of frame t at
``t * grid * grid + y * grid + x``), drawn with row y as pixel row y like the PNG strips and GIFs.

    nca preview --html previews/ --bands '[20-30, 30-40, 40-50, 50+]' --rules 8 --frames 32
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nca.analysis.viewer_page import PAGE
from nca.automaton.complexity import Band
from nca.automaton.config import NCAConfig
from nca.automaton.render import palette

PAGE_NAME = "viewer.html"


@dataclass
class BandRollout:
    """Rules of one band (the first accepted train-split ids for the seed) and their preview trajectories."""

    name: str  # the band as the user wrote it
    band: Band
    ids: list[int]
    ratios: list[float]
    frames: torch.Tensor  # [rules, frames, grid, grid] uint8


def band_rollouts(cfg: NCAConfig, band_text: str, rules: int, frames: int, seed: int = 0,
                  device: str = "cpu") -> BandRollout:
    """What the previews and the viewer show for a band: a pure function of (cfg, band, rules, frames, seed)."""
    from nca.automaton.pool import RulePool
    from nca.automaton.rng import Domain, hash_keys
    from nca.automaton.rules import sample_rules
    from nca.automaton.simulate import Simulator

    if rules < 1 or frames < 1:
        raise ValueError(f"need at least one rule and one frame per band, got rules={rules} frames={frames}")
    band = Band.parse(band_text)
    pool = RulePool(rules, cfg, band, seed=seed, split="train", batch=256, device=device)
    keys = hash_keys(seed, Domain.PREVIEW, pool.ids)
    traj = Simulator(sample_rules(pool.ids, cfg, seed), cfg).rollout(keys, frames).cpu()
    return BandRollout(band_text, band, pool.ids.tolist(), [float(r) for r in pool.ratios], traj)


def viewer_data(cfg: NCAConfig, rollouts: list[BandRollout], seed: int) -> dict:
    """The JSON the page plays: palette, grid, and per band its rules' ids, ratios and cells."""
    if not rollouts:
        raise ValueError("the viewer needs at least one band")
    frames = {r.frames.shape[1] for r in rollouts}
    if len(frames) != 1:
        raise ValueError(f"all bands need the same number of frames, got {sorted(frames)}")
    return {
        "grid": cfg.grid, "n_states": cfg.n_states, "frames": frames.pop(), "seed": seed, "config": cfg.to_dict(),
        "palette": ["#" + "".join(f"{c:02x}" for c in rgb) for rgb in palette(cfg.n_states).tolist()],
        "bands": [{
            "name": r.name, "interval": str(r.band),
            "rules": [{"id": i, "ratio": ratio, "cells": base64.b64encode(np.ascontiguousarray(f.numpy(), dtype=np.uint8).tobytes()).decode()}
                      for i, ratio, f in zip(r.ids, r.ratios, r.frames)],
        } for r in rollouts],
    }


def render_page(data: dict) -> str:
    """The page with ``data`` embedded (``</`` escaped, so no JSON string can end the script element)."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return PAGE.replace("/*NCA_DATA*/", payload)


def write_viewer(directory: str | Path, cfg: NCAConfig, bands: list[str], rules: int, frames: int, seed: int = 0,
                 device: str = "cpu") -> Path:
    """Write DIR/viewer.html; refuses before any work when it exists (outputs are never overwritten)."""
    path = Path(directory) / PAGE_NAME
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another --html directory")
    for b in bands:  # parse every band before any rollout
        Band.parse(b)
    rollouts = [band_rollouts(cfg, b, rules, frames, seed, device) for b in bands]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(viewer_data(cfg, rollouts, seed)), encoding="utf-8")
    return path
