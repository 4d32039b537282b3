"""Pictures for people: labelled strips, GIFs in the PNG's orientation, the overview, `nca preview` (also
--html), the coloured complexity histogram and the `nca complexity --sweep` of the complexity knobs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nca.analysis import complexity_plots as cp
from nca.analysis.viewer import band_rollouts
from nca.automaton.complexity import Band, rule_ratios
from nca.automaton.config import NCAConfig
from nca.automaton.render import gif_frames, label_width, labelled_strip, save_gif, stack, strip, to_rgb
from nca.cli import main

SMALL = ["--nca.n_states", "4", "--nca.grid", "6", "--nca.patch", "2"]
CFG = NCAConfig(n_states=4, grid=6, patch=2)


def asymmetric(rules=2, frames=3, side=5) -> torch.Tensor:
    """States whose every grid differs from its transpose, so an orientation mistake shows."""
    g = torch.zeros(rules, frames, side, side, dtype=torch.uint8)
    for r in range(rules):
        for t in range(frames):
            g[r, t, 0, :] = 1 + (r + t) % 3  # a coloured top row, blank left column below it
    return g


def find(image: Image.Image, block: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``block`` appears exactly in ``image``."""
    a = np.asarray(image.convert("RGB"))
    h, w, _ = block.shape
    hits = []
    for y in range(a.shape[0] - h + 1):
        for x in range(a.shape[1] - w + 1):
            if a[y, x, 0] == block[0, 0, 0] and np.array_equal(a[y : y + h, x : x + w], block):
                hits.append((y, x))
    return hits


def test_labelled_strip_keeps_the_grids_and_adds_text():
    traj = asymmetric()
    img = labelled_strip(traj, 4, "band 30-40", ["rule 2 gzip 0.351", "rule 8 gzip 0.372"], scale=3)
    plain = strip(traj, 4, scale=3)
    assert img.width > plain.width and img.height > plain.height
    assert len(find(img, np.asarray(plain))) == 1  # the grid block, unchanged, once
    a = np.asarray(img)
    (y, x), = find(img, np.asarray(plain))
    assert (a[:y] != 255).any() and (a[:, :x] != 255).any()  # title/frame indices above, rule labels left
    with pytest.raises(ValueError, match="one label per rule"):
        labelled_strip(traj, 4, "t", ["only one"])


def test_gif_frames_show_grids_as_the_png_does(tmp_path):
    traj = asymmetric()
    frames = gif_frames(traj, 4, scale=3, title="band x", labels=["rule 0", "rule 2"])
    assert len(frames) == 3
    for t, frame in enumerate(frames):
        for r in range(2):
            block = to_rgb(traj[r, t], 4, 3)
            assert find(frame, block), f"rule {r} frame {t} not drawn as stored"
            assert not find(frame, np.ascontiguousarray(block.transpose(1, 0, 2)))  # not transposed
        assert (np.asarray(frame)[:10] != 255).any()  # the title line with the frame index
    save_gif(traj, 4, tmp_path / "a.gif", scale=3, title="band x", labels=["rule 0", "rule 2"])
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 3 and gif.size == frames[0].size
    with pytest.raises(ValueError, match="one label per rule"):
        gif_frames(traj, 4, labels=["a"])


def test_stack_puts_images_one_under_another():
    a, b = Image.new("RGB", (10, 4), "red"), Image.new("RGB", (6, 5), "blue")
    s = stack([a, b], gap=3)
    assert s.size == (10, 12) and s.getpixel((0, 0)) == (255, 0, 0) and s.getpixel((0, 7)) == (0, 0, 255)
    assert s.getpixel((8, 8)) == (255, 255, 255)
    with pytest.raises(ValueError, match="at least one"):
        stack([])


def test_preview_writes_labelled_strips_gifs_overview_and_page(tmp_path, capsys):
    out = tmp_path / "pv"
    assert main(["preview", "--out", str(out), "--html", str(out), "--bands", "[30-40, 50+]", "--rules", "2",
                 "--frames", "3", "--scale", "2", *SMALL]) == 0
    r = band_rollouts(CFG, "50+", 2, 3)
    png = Image.open(out / "band_50plus.png")
    assert find(png, np.asarray(strip(r.frames, 4, 2)))  # the rollout's grids, labelled around
    assert png.width > 3 * 12 + 4
    overview = Image.open(out / "overview.png")
    assert overview.height > 2 * png.height - 1 and find(overview, np.asarray(png))
    gif = Image.open(out / "band_30-40.gif")
    assert gif.n_frames == 3
    assert (out / "viewer.html").read_text().startswith("<!DOCTYPE html>")
    printed = capsys.readouterr().out
    assert f"rules {r.ids}" in printed and "overview.png" in printed
    before = (out / "overview.png").read_bytes()
    assert main(["preview", "--out", str(out), "--bands", "[20-30]", "--rules", "1", *SMALL]) == 2  # overview exists
    assert "already exist" in capsys.readouterr().err and (out / "overview.png").read_bytes() == before
    assert main(["preview", "--html", str(out), "--bands", "[20-30]", "--rules", "1", *SMALL]) == 2  # page exists
    assert main(["preview", *SMALL]) == 2 and "nothing to write" in capsys.readouterr().err


def test_histogram_colours_each_band(tmp_path):
    ratios = np.array([0.05, 0.25, 0.26, 0.35, 0.45, 0.55, 0.56, 0.6])
    cp.plot_histogram(ratios, ["20-30", "30-40", "40-50", "50+"], {"code.py": {"median": 0.33}}, "t", tmp_path / "h.png")
    pixels = {tuple(p) for p in np.asarray(Image.open(tmp_path / "h.png").convert("RGB")).reshape(-1, 3)}
    for i in range(4):
        colour = tuple(int(cp.band_colour(i)[k : k + 2], 16) for k in (1, 3, 5))
        assert colour in pixels, f"no bar in band {i}'s colour"
    assert tuple(int(cp.OUTSIDE[k : k + 2], 16) for k in (1, 3, 5)) in pixels  # 0.05 lies in no band


def test_sweep_configs_expand_and_validate_first():
    configs = cp.sweep_configs(CFG, {"grid": [6, 8], "n_states": [2, 4]})
    assert [(c.n_states, c.grid, c.patch) for c in configs] == [(2, 6, 2), (2, 8, 2), (4, 6, 2), (4, 8, 2)]
    assert all(c.temperature == CFG.temperature for c in configs)
    for sweep, message in [({"alphabet": [2]}, "cannot sweep alphabet"), ({"grid": []}, "non-empty list"),
                           ({"grid": [6, 7]}, r"grid': 7.*multiple of patch"), ({}, "empty sweep")]:
        with pytest.raises(ValueError, match=message):
            cp.sweep_configs(CFG, sweep)


def test_complexity_sweep_reports_pass_rates_per_setting(tmp_path, capsys):
    out = tmp_path / "cx"
    assert main(["complexity", "--rules", "32", "--out", str(out), "--seed", "1", "--bands", "[20-40, 40+]",
                 "--sweep", "{n_states: [2, 4], grid: [6]}", *SMALL]) == 0
    report = json.loads((out / "complexity.json").read_text())
    rows = {(r["n_states"], r["grid"], r["patch"]): r for r in report["sweep"]}
    assert set(rows) == {(2, 6, 2), (4, 6, 2)}
    for n in (2, 4):
        ratios = rule_ratios(torch.arange(32) * 2, NCAConfig(n_states=n, grid=6, patch=2), 1)
        for text in ("20-40", "40+"):
            assert rows[(n, 6, 2)]["pass_rate"][text] == pytest.approx(Band.parse(text).contains(ratios).mean())
    assert rows[(4, 6, 2)]["pass_rate"] == report["pass_rate"]  # the base setting agrees with the main report
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "histogram.png").exists()
    assert "n=2 grid=6 patch=2" in capsys.readouterr().out
    assert main(["complexity", "--rules", "8", "--out", str(tmp_path / "bad"), "--sweep", "{grid: [7]}", *SMALL]) == 2
    assert "--sweep" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_strips_share_a_label_margin_to_align_in_the_overview():
    traj = asymmetric(rules=1)
    short = labelled_strip(traj, 4, "a", ["r1"], scale=3)
    wide = labelled_strip(traj, 4, "b", ["rule 123456 gzip 0.5"], scale=3)
    aligned = labelled_strip(traj, 4, "a", ["r1"], scale=3, left=label_width(["r1", "rule 123456 gzip 0.5"]))
    block = np.asarray(strip(traj, 4, 3))
    assert find(short, block)[0][1] < find(wide, block)[0][1] == find(aligned, block)[0][1]
