"""``nca export``: a checkpoint as a litgpt checkpoint directory or a Hugging Face Llama directory."""

from __future__ import annotations

import sys
import warnings
from typing import Literal, Optional

from nca.cli import parsing
from nca.cli.errors import usage_errors

Format = Literal["litgpt", "hf"]  # nca.lit_modules.export.FORMATS (a test keeps them equal)
Dtype = Literal["float32", "bfloat16", "float16"]  # nca.lit_modules.export.DTYPES


def export(ckpt: str, out: str, format: Format = "litgpt", tokenizer: Optional[str] = None,
           dtype: Dtype = "float32") -> int:
    """Write a checkpoint (Lightning .ckpt, sharded FSDP directory or litgpt file) as a directory that
    `litgpt generate/chat/evaluate` (--format litgpt) or transformers' AutoModelForCausalLM.from_pretrained
    (--format hf) loads as it is, tokenizer included. Every note of the export (no tokenizer recorded, a
    tokenizer that encodes differently, no config.json for litgpt evaluate) is printed as a warning line.

    Args:
        ckpt: the checkpoint to export.
        out: a new (or empty) directory; an existing non-empty one is refused.
        format: litgpt (lit_model.pth + model_config.yaml) or hf (a Llama safetensors directory).
        tokenizer: tokenizer directory (encoder.json + vocab.bpe, or tokenizer.json + tokenizer_config.json);
            default: the one the checkpoint was trained with.
        dtype: dtype of the written weights.
    """
    from nca.lit_modules.export import export_checkpoint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with usage_errors(FileNotFoundError, FileExistsError, ValueError):
                result = export_checkpoint(ckpt, out, format, tokenizer=tokenizer, dtype=dtype)
        finally:  # the notes reach the user also when the export fails after them
            for note in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
                print(f"warning: {note}", file=sys.stderr)
    print(f"wrote {result.format} export of {ckpt} ({result.source_format}) to {result.out}: {', '.join(result.files)}")
    return 0


def main(argv: list[str]) -> int:
    return parsing.run(export, argv, "nca export")
