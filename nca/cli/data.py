"""The project's own verbs: ``generate``, ``preview``, ``complexity``. Each takes argv, returns an exit code."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from nca.automaton.complexity import COMPLEXITY_FRAMES, Band, gzip_ratio, rule_ratios
from nca.automaton.config import NCAConfig

PAPER_BANDS = ["20-30", "30-40", "40-50", "50+"]


def _nca_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("automaton (defaults: the paper)")
    g.add_argument("--n-states", type=int, default=10)
    g.add_argument("--grid", type=int, default=12)
    g.add_argument("--patch", type=int, default=2)
    g.add_argument("--hidden", type=int, nargs=2, default=[4, 16], metavar=("H1", "H2"),
                   help="widths of the 3x3 conv and of the 1x1 conv before the ReLU")
    g.add_argument("--temperature", type=float, default=1e-4)
    g.add_argument("--identity-bias", type=float, default=0.0)
    g.add_argument("--burn-in", type=int, default=10)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")


def _refuse_existing(p: argparse.ArgumentParser, paths: list[Path]) -> None:
    """Outputs are never overwritten: fail before any work if one exists."""
    taken = [str(x) for x in paths if x.exists()]
    if taken:
        p.error(f"{', '.join(taken)} already exist(s); choose another --out")


def _cfg(a: argparse.Namespace) -> NCAConfig:
    return NCAConfig(n_states=a.n_states, grid=a.grid, patch=a.patch, hidden=tuple(a.hidden),
                     temperature=a.temperature, identity_bias=a.identity_bias, burn_in=a.burn_in)


# -- generate -------------------------------------------------------------------------------------
class _ChunkSource:
    """Chunk ``c`` = sequences [c * size, (c + 1) * size) with their band statistics; fed through
    ``NumberedBatches`` so worker processes split the chunks and return them in order."""

    def __init__(self, stream, size: int):
        self.stream, self.size = stream, size

    def batches(self, numbers: list[int]) -> list[tuple]:
        out = []
        for c in numbers:
            b = self.stream.batch(torch.arange(c * self.size, (c + 1) * self.size))
            out.append((b.rows.cpu(), b.ratios, b.candidates))
        return out


def generate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="nca generate",
                                description="Write an NCA token corpus (memmap shards + manifest) for a training run to stream.")
    p.add_argument("--out", required=True, help="new directory (an existing non-empty one is never overwritten)")
    p.add_argument("--tokens", type=float, required=True, help="training targets to write (rows = ceil(tokens / seq_len))")
    p.add_argument("--band", default="0.5-1.0", help="gzip band, e.g. 0.5-1.0, 30-40, 50+, or 'none'")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--rules", type=int, default=None, help="draw this many rules once and cycle them (default: a fresh rule per sequence)")
    p.add_argument("--split", default="train", choices=["train", "val"])
    p.add_argument("--chunk", type=int, default=512, help="sequences generated together")
    p.add_argument("--workers", type=int, default=2, help="generator processes")
    _nca_args(p)
    a = p.parse_args(argv)

    from tqdm import tqdm

    from datamodules.shards import ShardWriter
    from datamodules.streaming import NumberedBatches
    from nca.automaton.pool import RulePool
    from nca.automaton.stream import NCAStream

    cfg, band = _cfg(a), None if a.band.lower() == "none" else Band.parse(a.band)
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):  # before any work: never overwrite a user's corpus
        p.error(f"{out} already exists and is not empty; choose a new --out")
    pool = RulePool(a.rules, cfg, band, seed=a.seed, split=a.split, device=a.device) if a.rules else None
    stream = NCAStream(cfg, a.seq_len, band, seed=a.seed, split=a.split, pool=pool, device=a.device)
    rows_needed = math.ceil(a.tokens / a.seq_len)
    chunks = math.ceil(rows_needed / a.chunk)
    loader = torch.utils.data.DataLoader(NumberedBatches(_ChunkSource(stream, a.chunk), limit=chunks),
                                         batch_size=None, num_workers=a.workers)
    meta = {"nca": cfg.to_dict(), "seed": a.seed, "split": a.split, "band": None if band is None else [band.lo, band.hi],
            "seq_len": a.seq_len, "rule_pool": a.rules, "command": "python -m nca generate " + " ".join(argv)}
    t0, written, generated, tried, ratios = time.time(), 0, 0, 0, []
    writer = ShardWriter(out, row_len=a.seq_len + 1, vocab_size=stream.vocab_size,
                         mask_first=stream.tokenizer.mask_first, metadata=meta)
    with tqdm(total=rows_needed * a.seq_len, unit="tok", unit_scale=True, desc=f"NCA {band or 'unfiltered'}") as bar:
        for rows, r, cand in loader:
            generated += len(rows)  # the filter's work covers whole chunks, also the unwritten tail
            rows = rows[: rows_needed - written]
            writer.write(rows)
            written += len(rows)
            tried += cand
            ratios.append(r[: len(rows)])
            bar.update(len(rows) * a.seq_len)
    r = np.concatenate(ratios)
    stats = {"sequences_generated": generated, "candidates_tried": tried,
             "acceptance": (generated / tried) if tried else None, "seconds": round(time.time() - t0, 2)}
    if band is not None:
        q = np.quantile(r, [0.05, 0.25, 0.5, 0.75, 0.95])
        stats.update(ratio_quantiles_5_25_50_75_95=[round(float(x), 4) for x in q], ratio_mean=float(r.mean()))
    if pool is not None:
        stats["rule_pool"] = pool.stats()
    manifest = writer.close(band_stats=stats, target_tokens=written * a.seq_len)
    print(f"wrote {manifest.rows} sequences ({manifest.rows * a.seq_len:,} targets, {manifest.tokens:,} ids) to {out}")
    print(json.dumps(stats, indent=2))
    return 0


# -- preview --------------------------------------------------------------------------------------
def preview(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="nca preview", description="Render trajectories of a few rules per band to PNG and GIF.")
    p.add_argument("--out", required=True)
    p.add_argument("--bands", nargs="+", default=PAPER_BANDS)
    p.add_argument("--rules", type=int, default=4, help="rules per band")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--scale", type=int, default=8, help="pixels per cell")
    _nca_args(p)
    a = p.parse_args(argv)

    from nca.automaton.pool import RulePool
    from nca.automaton.render import save_gif, strip
    from nca.automaton.rng import hash_keys
    from nca.automaton.rules import sample_rules
    from nca.automaton.simulate import Simulator

    cfg, out = _cfg(a), Path(a.out)
    bands = [Band.parse(b) for b in a.bands]  # parse all before any work
    names = ["band_" + t.replace("+", "plus").replace("%", "").replace(".", "p") for t in a.bands]
    _refuse_existing(p, [out / f"{n}{ext}" for n in names for ext in (".png", ".gif")])
    out.mkdir(parents=True, exist_ok=True)
    for text, band, name in zip(a.bands, bands, names):
        pool = RulePool(a.rules, cfg, band, seed=a.seed, split="train", batch=256, device=a.device)
        traj = Simulator(sample_rules(pool.ids, cfg, a.seed), cfg).rollout(hash_keys(a.seed, 99, pool.ids), a.frames)
        strip(traj, cfg.n_states, a.scale).save(out / f"{name}.png")
        save_gif(traj, cfg.n_states, out / f"{name}.gif", a.scale)
        ratios = ", ".join(f"{x:.3f}" for x in pool.ratios)
        print(f"band {band}: rules {pool.ids.tolist()} ratios [{ratios}] -> {out / name}.png/.gif")
    return 0


# -- complexity -----------------------------------------------------------------------------------
def text_ratios(path: Path, tokenizer: str, window: int) -> np.ndarray:
    """gzip ratios of a file's token ids (int32 bytes), in windows as long as one NCA probe rollout."""
    if not path.is_file():
        raise FileNotFoundError(f"--file {path} does not exist")
    from datamodules.tokenizers import load_tokenizer

    ids = np.asarray(load_tokenizer(tokenizer).encode(path.read_text(encoding="utf-8", errors="replace")), dtype=np.int64)
    if len(ids) < window:
        raise ValueError(f"{path} has {len(ids)} tokens, fewer than one {window}-token window; use a longer file")
    return np.array([gzip_ratio(ids[i : i + window]) for i in range(0, len(ids) - window + 1, window)])


def complexity(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="nca complexity",
                                description="gzip-ratio distribution of random rules, band pass rates, and the ratio of text/code files.")
    p.add_argument("--rules", type=int, default=1024, help="random rules to measure")
    p.add_argument("--bands", nargs="+", default=PAPER_BANDS)
    p.add_argument("--out", default=None, help="directory for histogram.png and complexity.json")
    p.add_argument("--file", nargs="*", default=[], type=Path, help="text/code files to measure on their tokens")
    p.add_argument("--tokenizer", default="gpt2", help="'gpt2' (online) or a directory with encoder.json + vocab.bpe")
    _nca_args(p)
    a = p.parse_args(argv)
    cfg = _cfg(a)
    bands = [Band.parse(b) for b in a.bands]
    for f in a.file:
        if not f.is_file():
            p.error(f"--file {f} does not exist")
    if a.out:
        _refuse_existing(p, [Path(a.out) / "histogram.png", Path(a.out) / "complexity.json"])

    ratios = rule_ratios(torch.arange(a.rules, device=a.device) * 2, cfg, a.seed)
    q = np.quantile(ratios, [0.05, 0.25, 0.5, 0.75, 0.95])
    report = {"rules": a.rules, "quantiles_5_25_50_75_95": [round(float(x), 4) for x in q],
              "pass_rate": {t: float(b.contains(ratios).mean()) for t, b in zip(a.bands, bands)}, "files": {}}
    print(f"{a.rules} random rules, gzip ratio quantiles 5/25/50/75/95%: " + " / ".join(f"{x:.3f}" for x in q))
    for t, b in zip(a.bands, bands):
        print(f"  band {t:>8} {str(b):>12}: {report['pass_rate'][t]:6.1%} of rules pass")
    window = COMPLEXITY_FRAMES * (cfg.grid // cfg.patch) ** 2
    for f in a.file:
        r = text_ratios(f, a.tokenizer, window)
        med = float(np.median(r))
        match = [t for t, b in zip(a.bands, bands) if b.contains(np.array([med]))[0]]
        report["files"][str(f)] = {"median": med, "windows": len(r), "suggested_band": match[0] if match else None}
        print(f"  {f}: median ratio {med:.3f} over {len(r)} windows of {window} tokens -> band {match[0] if match else 'none'}")
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist(ratios, bins=60, color="#1f77b4")
        for b in bands:
            ax.axvspan(b.lo, min(b.hi, 1.0), alpha=0.08, color="k")
            ax.axvline(b.lo, color="k", lw=0.6, ls="--")
        for name, info in report["files"].items():
            ax.axvline(info["median"], color="#d62728", lw=1.2)
            ax.text(info["median"], ax.get_ylim()[1] * 0.9, Path(name).name, rotation=90, color="#d62728", fontsize=7)
        ax.set_xlabel("gzip ratio (compressed / raw int32 patch ids)")
        ax.set_ylabel("rules")
        ax.set_title(f"{a.rules} random NCA rules (n={cfg.n_states}, T={cfg.temperature:g})")
        fig.tight_layout()
        fig.savefig(out / "histogram.png", dpi=120)
        (out / "complexity.json").write_text(json.dumps(report, indent=2))
        print(f"wrote {out / 'histogram.png'} and {out / 'complexity.json'}")
    return 0

