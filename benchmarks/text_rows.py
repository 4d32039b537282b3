"""How fast stage 2 reads its cached token rows (the training stream of TextDataModule).

    python benchmarks/text_rows.py data/text_cache/<name>-<key>/train --batch 16 --batches 200
"""

from __future__ import annotations

import argparse
import time

from nca.datamodules.streaming import NumberedBatches, ShardRows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", help="a shard directory (manifest.json + shards), e.g. a text cache's train/")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=200)
    a = p.parse_args()
    it = iter(NumberedBatches(ShardRows(a.corpus, batch_size=a.batch, seed=0)))
    first = next(it)  # opens the memmaps
    t = time.perf_counter()
    for _ in range(a.batches):
        next(it)
    dt = time.perf_counter() - t
    tokens = a.batches * first["input_ids"].numel()
    print(f"{tokens / dt:,.0f} tokens/s, {a.batches / dt:,.0f} batches/s of {tuple(first['input_ids'].shape)} "
          "(main process, no workers)")


if __name__ == "__main__":
    main()
