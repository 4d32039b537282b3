"""Time building a text token cache (read + tokenise + pack + write) and report tokens per second.

    python benchmarks/text_tokenize.py /work/shared/data/openwebtext/openwebtext-1000.jsonl.gz \
        --tokenizer /work/shared/data/gpt2_tokenizer

Builds into a fresh temporary directory (deleted afterwards) unless --cache-dir is given, so the cache is
never reused by accident.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

from nca.datamodules.text import TextDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="+", help="files, directories or globs (or one HF dataset name)")
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("--cache-dir", default=None, help="keep the cache here (default: a temporary directory)")
    args = parser.parse_args()

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="text_cache_")
    try:
        source = args.source[0] if len(args.source) == 1 else args.source
        start = time.perf_counter()
        dm = TextDataModule(source, tokenizer=args.tokenizer, seq_len=args.seq_len, cache_dir=cache_dir,
                            text_field=args.text_field, max_tokens=args.max_tokens, exclude=args.exclude)
        loaded = time.perf_counter()
        dm.prepare_data()
        built = time.perf_counter()
        summary = {s: json.loads((dm.split_path(s) / "cache.json").read_text()) for s in ("train", "val")}
        tokens = summary["train"]["tokens_read"] + summary["val"]["tokens_read"]
        docs = summary["train"]["documents"] + summary["val"]["documents"]
        print(json.dumps({
            "cache": str(dm.split_path("train").parent),
            "tokenizer": dm.tokenizer.name,
            "documents": docs,
            "tokens": tokens,
            "train_rows": summary["train"]["rows"],
            "val_rows": summary["val"]["rows"],
            "tokenizer_load_s": round(loaded - start, 3),
            "build_s": round(built - loaded, 3),
            "tokens_per_s": round(tokens / (built - loaded)),
        }, indent=2))
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
