"""Write a tiny SYNTHETIC set of stage-2 TensorBoard runs (made-up curves, not results) for the example
pictures of `nca band-transfer` and `nca curves` in docs/img/.

    python docs/img/synthetic_runs.py /tmp/synthetic_runs
    # then: nca band-transfer --runs $(cat /tmp/synthetic_runs/labels.txt) --corpus_ratio code=0.36 web=0.58 --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

STEPS = np.arange(100, 2001, 100)
# domain -> band -> (how much faster than scratch, final perplexity factor); made up to look like docs/paper.md §8
SHAPE = {
    "code": {"scratch": (1.0, 1.0), "20-30": (1.2, 0.98), "30-40": (1.6, 0.955), "40-50": (1.4, 0.965), "50+": (1.3, 0.97)},
    "web": {"scratch": (1.0, 1.0), "20-30": (1.1, 0.99), "30-40": (1.25, 0.975), "40-50": (1.35, 0.965), "50+": (1.5, 0.945)},
}
FLOOR = {"code": 1.9, "web": 14.5}


def write(root: Path, seeds: int = 3) -> list[str]:
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} exists and is not empty; choose a new directory")
    labels = []
    for domain, bands in SHAPE.items():
        for band, (speed, final) in bands.items():
            for seed in range(seeds):
                rng = np.random.default_rng([seed, len(labels)])
                tau = 500.0 / speed
                ppl = FLOOR[domain] * final * (1 + 3.0 * np.exp(-STEPS / tau)) * (1 + 0.004 * rng.standard_normal(len(STEPS)))
                d = root / f"{domain}_{band.replace('+', 'plus')}_s{seed}"
                w = SummaryWriter(str(d / "version_0"))
                for step, value in zip(STEPS, ppl):
                    w.add_scalar("val/ppl", float(value), int(step))
                    w.add_scalar("train/tokens_seen", float(step * 512 * 1024), int(step))
                w.close()
                labels.append(f"{domain}/{band}/{seed}={d}")
    (root / "labels.txt").write_text(" ".join(labels) + "\n")
    return labels


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "synthetic_runs")
    print(f"wrote {len(write(out))} synthetic runs under {out} (labels in {out / 'labels.txt'})")
