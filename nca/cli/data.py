"""The data verbs ``nca generate | preview | complexity``: each a typed function parsed by jsonargparse."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from nca.automaton.complexity import COMPLEXITY_FRAMES, PAPER_BAND, PAPER_BANDS, Band, gzip_ratio, rule_ratios
from nca.automaton.config import NCAConfig
from nca.cli import parsing
from nca.cli.errors import UsageError, refuse_existing


def run(function, argv: list[str], prog: str) -> int:
    """Parse ``argv`` into ``function``'s typed keyword arguments (nca.cli.parsing: ``--config FILE``,
    ``--print_config``, ``--nca.temperature 1e-3``: the same keys as the DataModule's ``nca`` argument)."""
    return parsing.run(function, argv, prog)


def gather_list_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """List flags as their help shows them, ``--bands 50+ 30-40`` (values up to the next ``--`` option), become
    jsonargparse's single list value ``--bands '["50+", "30-40"]'``; ``--bands '[30-40, 50+]'`` passes as it is."""
    out, i = [], 0
    while i < len(argv):
        name, eq, inline = argv[i].partition("=")
        i += 1
        if name not in flags:
            out.append(argv[i - 1])
            continue
        values = [inline] if eq else []
        while not eq and i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if not values:
            raise UsageError(f"{name} needs at least one value, e.g. {name} 30-40 50+")
        bracketed = len(values) == 1 and values[0].lstrip().startswith("[")
        out += [name, values[0] if bracketed else json.dumps(values)]
    return out


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
    return run(write_corpus, argv, "nca generate")


def write_corpus(out: str, tokens: float, band: Optional[str] = PAPER_BAND, seq_len: int = 1024,
                 rules: Optional[int] = None, split: Literal["train", "val", "test"] = "train", chunk: int = 512,
                 workers: int = 2, nca: NCAConfig = NCAConfig(), seed: int = 0, device: str = "cpu") -> int:
    """Write an NCA token corpus (memmap shards + manifest) for a training run to stream.

    Args:
        out: a new directory (an existing non-empty one is never overwritten).
        tokens: training targets to write (rows = ceil(tokens / seq_len)).
        band: gzip band, e.g. 0.5-1.0, 30-40, 50+, or 'none' (unfiltered).
        seq_len: tokens per training row (rows hold seq_len + 1 ids).
        rules: draw this many rules once and cycle them (default: a fresh rule per sequence).
        split: train, val or test: disjoint rule ids (even, 1 mod 4, 3 mod 4).
        chunk: sequences generated together.
        workers: generator processes.
        nca: the automaton (defaults: the paper).
        seed: the stream's seed.
        device: where rollouts run (cpu or cuda).
    """
    from tqdm import tqdm

    from nca.datamodules.shards import ShardWriter
    from nca.datamodules.streaming import NumberedBatches
    from nca.automaton.pool import RulePool
    from nca.automaton.stream import NCAStream

    if not tokens >= 1 or seq_len < 1 or chunk < 1 or workers < 0 or (rules is not None and rules < 1):
        raise UsageError(f"need --tokens >= 1, --seq_len >= 1, --chunk >= 1, --workers >= 0 and --rules >= 1 or "
                         f"unset; got {tokens}, {seq_len}, {chunk}, {workers}, {rules}")
    cfg, band = nca, None if band is None or band.lower() == "none" else Band.parse(band)
    target = Path(out)
    if target.exists() and (target.is_file() or any(target.iterdir())):  # before any work: never overwrite
        raise UsageError(f"{target} already exists (and is a file or not empty); choose a new --out")
    pool = RulePool(rules, cfg, band, seed=seed, split=split, device=device) if rules else None
    stream = NCAStream(cfg, seq_len, band, seed=seed, split=split, pool=pool, device=device)
    rows_needed = math.ceil(tokens / seq_len)
    chunks = math.ceil(rows_needed / chunk)
    loader = torch.utils.data.DataLoader(NumberedBatches(_ChunkSource(stream, chunk), limit=chunks),
                                         batch_size=None, num_workers=workers)
    meta = {"nca": cfg.to_dict(), "seed": seed, "split": split, "band": None if band is None else [band.lo, band.hi],
            "seq_len": seq_len, "rule_pool": rules}
    t0, written, generated, tried, ratios = time.time(), 0, 0, 0, []
    writer = ShardWriter(target, row_len=seq_len + 1, vocab_size=stream.vocab_size,
                         mask_first=stream.tokenizer.mask_first, metadata=meta)
    with tqdm(total=rows_needed * seq_len, unit="tok", unit_scale=True, desc=f"NCA {band or 'unfiltered'}") as bar:
        for rows, r, cand in loader:
            generated += len(rows)  # the filter's work covers whole chunks, also the unwritten tail
            rows = rows[: rows_needed - written]
            writer.write(rows)
            written += len(rows)
            tried += cand
            ratios.append(r[: len(rows)])
            bar.update(len(rows) * seq_len)
    r = np.concatenate(ratios)
    stats = {"sequences_generated": generated, "candidates_tried": tried,
             "acceptance": (generated / tried) if tried else None, "seconds": round(time.time() - t0, 2)}
    if band is not None:
        q = np.quantile(r, [0.05, 0.25, 0.5, 0.75, 0.95])
        stats.update(ratio_quantiles_5_25_50_75_95=[round(float(x), 4) for x in q], ratio_mean=float(r.mean()))
    if pool is not None:
        stats["rule_pool"] = pool.stats()
    manifest = writer.close(band_stats=stats, target_tokens=written * seq_len)
    print(f"wrote {manifest.rows} sequences ({manifest.rows * seq_len:,} targets, {manifest.tokens:,} ids) to {target}")
    print(json.dumps(stats, indent=2))
    return 0


# -- preview --------------------------------------------------------------------------------------
def preview(argv: list[str]) -> int:
    return run(render_previews, gather_list_flags(argv, ("--bands",)), "nca preview")


def render_previews(out: Optional[str] = None, bands: list[str] = PAPER_BANDS, rules: int = 4, frames: int = 16,
                    scale: int = 8, nca: NCAConfig = NCAConfig(), seed: int = 0, device: str = "cpu",
                    html: Optional[str] = None) -> int:
    """Render trajectories of a few rules per complexity band: labelled PNG strips and GIFs, an overview of
    all bands, and (with --html) one self-contained interactive page.

    Args:
        out: directory for band_*.png/.gif and overview.png (existing pictures in it are never overwritten).
        bands: gzip bands, e.g. 20-30 30-40 40-50 50+.
        rules: rules per band.
        frames: frames per rule.
        scale: pixels per cell.
        nca: the automaton (defaults: the paper).
        seed: which rules and trajectories.
        device: where rollouts run.
        html: directory for viewer.html: the same rollouts playing in a browser, offline.
    """
    from nca.analysis.viewer import PAGE_NAME, band_rollouts, render_page, viewer_data
    from nca.automaton.render import label_width, labelled_strip, save_gif, stack

    if out is None and html is None:
        raise UsageError("nothing to write: give --out DIR (PNG strips, GIFs, overview) and/or --html DIR (viewer page)")
    cfg, texts = nca, bands
    for b in texts:  # parse all before any work
        Band.parse(b)
    names = ["band_" + t.replace("+", "plus").replace("%", "").replace(".", "p") for t in texts]
    targets = [Path(out) / f"{n}{ext}" for n in names for ext in (".png", ".gif")] + [Path(out) / "overview.png"] if out else []
    refuse_existing(targets + ([Path(html) / PAGE_NAME] if html else []))
    rollouts = [band_rollouts(cfg, t, rules, frames, seed, device) for t in texts]
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        strips, labels = [], [[f"rule {i}  gzip {x:.3f}" for i, x in zip(r.ids, r.ratios)] for r in rollouts]
        left = label_width([t for band_labels in labels for t in band_labels])  # grids aligned in the overview
        for r, name, band_labels in zip(rollouts, names, labels):
            title = f"band {r.name} {r.band}  n={cfg.n_states} grid={cfg.grid} seed={seed}"
            strips.append(labelled_strip(r.frames, cfg.n_states, title, band_labels, scale, left=left))
            strips[-1].save(Path(out) / f"{name}.png")
            save_gif(r.frames, cfg.n_states, Path(out) / f"{name}.gif", scale, title=f"band {r.name}",
                     labels=[f"rule {i} gz {x:.3f}" for i, x in zip(r.ids, r.ratios)])
            ratios = ", ".join(f"{x:.3f}" for x in r.ratios)
            print(f"band {r.band}: rules {r.ids} ratios [{ratios}] -> {Path(out) / name}.png/.gif")
        stack(strips).save(Path(out) / "overview.png")
        print(f"wrote {Path(out) / 'overview.png'}")
    if html:
        Path(html).mkdir(parents=True, exist_ok=True)
        page = Path(html) / PAGE_NAME
        page.write_text(render_page(viewer_data(cfg, rollouts, seed)), encoding="utf-8")
        print(f"wrote {page} (self-contained; open it in a browser)")
    return 0


# -- complexity -----------------------------------------------------------------------------------
def text_ratios(path: Path, tokenizer: str, window: int) -> np.ndarray:
    """gzip ratios of a file's token ids (int32 bytes), in windows as long as one NCA probe rollout."""
    if not path.is_file():
        raise FileNotFoundError(f"--file {path} does not exist")
    from nca.datamodules.tokenizers import load_tokenizer

    ids = np.asarray(load_tokenizer(tokenizer).encode(path.read_text(encoding="utf-8", errors="replace")), dtype=np.int64)
    if len(ids) < window:
        raise ValueError(f"{path} has {len(ids)} tokens, fewer than one {window}-token window; use a longer file")
    return np.array([gzip_ratio(ids[i : i + window]) for i in range(0, len(ids) - window + 1, window)])


def complexity(argv: list[str]) -> int:
    return run(measure_complexity, gather_list_flags(argv, ("--bands", "--file")), "nca complexity")


def measure_complexity(rules: int = 1024, bands: list[str] = PAPER_BANDS, out: Optional[str] = None,
                       file: list[str] = [], tokenizer: str = "gpt2", nca: NCAConfig = NCAConfig(), seed: int = 0,
                       device: str = "cpu", sweep: Optional[dict[str, list[int]]] = None) -> int:
    """gzip-ratio distribution of random rules, the pass rate of each band, and the ratio of text/code files.

    Args:
        rules: random rules to measure.
        bands: gzip bands to report pass rates for.
        out: directory for histogram.png and complexity.json (and sweep.png with --sweep).
        file: text/code files to measure on their tokens.
        tokenizer: 'gpt2' (online) or a directory with encoder.json + vocab.bpe.
        nca: the automaton (defaults: the paper).
        seed: which rules.
        device: where rollouts run.
        sweep: complexity knobs to sweep on top of --nca, e.g. '{n_states: [2, 4, 10], grid: [8, 12], patch: [2]}':
            band pass rates of every combination.
    """
    from nca.analysis.complexity_plots import plot_histogram, plot_sweep, sweep_configs, sweep_pass_rates

    cfg, texts, files = nca, bands, [Path(f) for f in file]
    bands = [Band.parse(b) for b in texts]
    for f in files:
        if not f.is_file():
            raise UsageError(f"--file {f} does not exist")
    try:
        settings = sweep_configs(cfg, sweep) if sweep is not None else []
    except ValueError as e:
        raise UsageError(f"--sweep: {e}") from None
    if out:
        refuse_existing([Path(out) / n for n in ("histogram.png", "complexity.json") + (("sweep.png",) if settings else ())])

    ratios = rule_ratios(torch.arange(rules, device=device) * 2, cfg, seed)
    q = np.quantile(ratios, [0.05, 0.25, 0.5, 0.75, 0.95])
    report = {"rules": rules, "quantiles_5_25_50_75_95": [round(float(x), 4) for x in q],
              "pass_rate": {t: float(b.contains(ratios).mean()) for t, b in zip(texts, bands)}, "files": {}}
    print(f"{rules} random rules, gzip ratio quantiles 5/25/50/75/95%: " + " / ".join(f"{x:.3f}" for x in q))
    for t, b in zip(texts, bands):
        print(f"  band {t:>8} {str(b):>12}: {report['pass_rate'][t]:6.1%} of rules pass")
    window = COMPLEXITY_FRAMES * (cfg.grid // cfg.patch) ** 2
    for f in files:
        r = text_ratios(f, tokenizer, window)
        med = float(np.median(r))
        match = [t for t, b in zip(texts, bands) if b.contains(np.array([med]))[0]]
        report["files"][str(f)] = {"median": med, "windows": len(r), "suggested_band": match[0] if match else None}
        print(f"  {f}: median ratio {med:.3f} over {len(r)} windows of {window} tokens -> band {match[0] if match else 'none'}")
    if settings:
        report["sweep"] = sweep_pass_rates(settings, texts, rules, seed, device)
        print(f"sweep: pass rate of {rules} random rules per setting")
        print(f"  {'setting':<28} {'median':>7} " + " ".join(f"{t:>8}" for t in texts))
        for row in report["sweep"]:
            print(f"  {row['label']:<28} {row['median']:>7.3f} " + " ".join(f"{row['pass_rate'][t]:>8.1%}" for t in texts))
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{rules} random NCA rules (n={cfg.n_states}, grid={cfg.grid}, T={cfg.temperature:g})"
        plot_histogram(ratios, texts, report["files"], title, out / "histogram.png")
        if settings:
            plot_sweep(report["sweep"], texts, out / "sweep.png")
        (out / "complexity.json").write_text(json.dumps(report, indent=2))
        print(f"wrote {out / 'histogram.png'}{' and ' + str(out / 'sweep.png') if settings else ''} and {out / 'complexity.json'}")
    return 0
