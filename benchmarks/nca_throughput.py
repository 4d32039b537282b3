"""End-to-end NCA data throughput: rule sampling + band filter + rollout + tokenisation.

Measures what a training run sees: batches from ``NCADataModule.train_dataloader()`` with N
worker processes (one thread each), a fresh band-filtered rule per sequence. Also reports the
band filter alone (rules/s) and the peak RSS of the whole process tree after each measured
chunk, which must stay flat as tokens stream.

    python benchmarks/nca_throughput.py --workers 2 --tokens 20_000_000
    python benchmarks/nca_throughput.py --device cuda --workers 0 --batch 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import psutil
import torch

from nca.datamodules.nca import NCADataModule
from nca.automaton.complexity import Band, rule_ratios
from nca.automaton.config import NCAConfig


def tree_rss_mb() -> float:
    me = psutil.Process()
    procs = [me] + me.children(recursive=True)
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def filter_rate(device: str, n: int = 2048) -> float:
    cfg = NCAConfig()
    ids = torch.arange(n, dtype=torch.int64, device=device) * 2
    rule_ratios(ids[:64], cfg, 0)  # warm-up
    t = time.perf_counter()
    rule_ratios(ids, cfg, 0)
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=float, default=10e6, help="tokens to stream after warm-up")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the main process (workers=0)")
    p.add_argument("--batch", type=int, default=32, help="training batch size (sequences)")
    p.add_argument("--group", type=int, default=512, help="sequences generated together per worker")
    p.add_argument("--device", default="cpu")
    p.add_argument("--band", default="0.5-1.0")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}")
    if a.device.startswith("cuda"):
        print(f"gpu: {torch.cuda.get_device_name()}")
    print(f"band filter alone: {filter_rate(a.device):,.0f} candidate rules/s (20-step probe rollout + gzip, {a.threads} thread)")

    dm = NCADataModule(seq_len=1024, batch_size=a.batch, band=a.band, num_workers=a.workers,
                       generate_group=a.group, device=a.device, val_rules=None)
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    per_batch = a.batch * 1024
    warm = max(1, (a.group // a.batch) * max(1, a.workers))
    for _ in range(warm):
        next(loader)
    n_batches = int(a.tokens // per_batch)
    t0 = time.perf_counter()
    rss = []
    for i in range(n_batches):
        batch = next(loader)
        assert batch["input_ids"].shape == (a.batch, 1024)
        if (i + 1) % max(1, n_batches // 5) == 0:
            rss.append(tree_rss_mb())
    dt = time.perf_counter() - t0
    print(f"streamed {n_batches * per_batch:,} tokens in {dt:.1f}s: {n_batches * per_batch / dt:,.0f} tokens/s "
          f"({a.workers} workers, batch {a.batch}, band {Band.parse(a.band)}, device {a.device})")
    print("peak RSS of process tree (MiB) at 20/40/60/80/100%: " + ", ".join(f"{r:.0f}" for r in rss))


if __name__ == "__main__":
    main()
