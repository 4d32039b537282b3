"""``nca export``: a checkpoint as a litgpt checkpoint directory or a Hugging Face Llama directory."""

from __future__ import annotations

import argparse
import sys
import warnings


def main(argv: list[str]) -> int:
    from nca.lit_modules.export import DTYPES, FORMATS

    p = argparse.ArgumentParser(
        prog="nca export",
        description="Write a checkpoint (Lightning .ckpt, sharded FSDP directory or litgpt file) as a directory that "
                    "`litgpt generate/chat/evaluate` (--format litgpt) or transformers' "
                    "AutoModelForCausalLM.from_pretrained (--format hf) loads as it is, tokenizer included.")
    p.add_argument("--ckpt", required=True, help="the checkpoint to export")
    p.add_argument("--out", required=True, help="a new (or empty) directory; an existing non-empty one is refused")
    p.add_argument("--format", choices=FORMATS, default="litgpt")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer directory (encoder.json + vocab.bpe, or tokenizer.json + tokenizer_config.json); "
                        "default: the one the checkpoint was trained with")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="dtype of the written weights")
    a = p.parse_args(argv)

    from nca.lit_modules.export import export_checkpoint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = export_checkpoint(a.ckpt, a.out, a.format, tokenizer=a.tokenizer, dtype=a.dtype)
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            print(f"nca export: {err}", file=sys.stderr)
            return 2
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    print(f"wrote {result.format} export of {a.ckpt} ({result.source_format}) to {result.out}: {', '.join(result.files)}")
    return 0
