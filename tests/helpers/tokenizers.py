"""Tiny GPT-2-format byte-level vocabularies, made by the tests themselves (no shared data)."""

import json
from pathlib import Path

from nca.datamodules.tokenizers import _byte_decoder

TO_CHAR = {b: c for c, b in _byte_decoder().items()}  # byte -> GPT-2's printable character


def write_bpe(directory: Path, merges: list[tuple[str, str]], names=("encoder.json", "vocab.bpe")) -> Path:
    """A tiny GPT-2-format vocabulary: 256 byte tokens in tiktoken's order, the merges, then <|endoftext|>."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder = {c: i for i, c in enumerate(_byte_decoder())}
    for a, b in merges:
        encoder[a + b] = len(encoder)
    encoder["<|endoftext|>"] = len(encoder)
    (directory / names[0]).write_text(json.dumps(encoder))
    (directory / names[1]).write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return directory


def write_tokenizer(directory: Path) -> Path:
    """A byte-level GPT-2-style tokenizer (256 byte ids + end-of-text 256, no merges)."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder = {c: i for i, c in enumerate(_byte_decoder())}
    encoder["<|endoftext|>"] = 256
    (directory / "encoder.json").write_text(json.dumps(encoder))
    (directory / "vocab.bpe").write_text("#version: 0.2\n")
    return directory


# Merges of a tiny GPT-2-style byte-level BPE, each forming a token in exactly one way.
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ c", "e l", "Ġc el", "l l", "o r", "Ġ w", "Ġw or", "l d",
          "Ġwor ld"]


def write_bpe_files(directory) -> int:
    """encoder.json + vocab.bpe of a 272-id byte-level BPE (256 bytes, the merges, <|endoftext|>)."""
    byte_to_char = {b: c for c, b in _byte_decoder().items()}
    vocab = {byte_to_char[b]: i for i, b in enumerate(sorted(byte_to_char, key=lambda b: ord(byte_to_char[b])))}
    for pair in MERGES:
        vocab["".join(pair.split())] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    return len(vocab)
