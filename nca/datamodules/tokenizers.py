"""Text tokenizers behind one small interface, loadable offline.

The paper uses GPT-2 BPE (50,257 ids, end-of-text 50256). ``load_tokenizer("gpt2")`` asks tiktoken, which
downloads its files once (or finds them in its cache); with no network, pass a directory holding OpenAI's
``encoder.json`` + ``vocab.bpe`` (or Hugging Face's ``vocab.json`` + ``merges.txt``): tiktoken is then built
from those files, byte-identical in behaviour. A directory with ``tokenizer.json`` / ``tokenizer.model``
(any litgpt / Hugging Face checkpoint) works as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

# The GPT-2 pre-tokenisation regex, in the faster equivalent form tiktoken uses for gpt2/r50k_base.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
END_OF_TEXT = "<|endoftext|>"
# sha256 of OpenAI's files (the hashes tiktoken pins): files with these hashes tokenise exactly like "gpt2".
GPT2_HASHES = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
BPE_FILE_PAIRS = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))
_SPECIAL = re.compile(r"^<\|[^|]+\|>$")

HELP = (
    "--data.tokenizer must be 'gpt2' (tiktoken; needs network once, or its files in TIKTOKEN_CACHE_DIR), "
    "another tiktoken encoding name, or a directory holding encoder.json + vocab.bpe (OpenAI GPT-2 files), "
    "vocab.json + merges.txt, or tokenizer.json / tokenizer.model (a litgpt / Hugging Face checkpoint)"
)


class TextTokenizer:
    """What the data pipeline needs from a tokenizer: batched encoding without special tokens, and the EOT id.

    ``name`` identifies the vocabulary and merges (used in cache keys): two tokenizers with the same name
    produce the same ids.
    """

    def __init__(self, name: str, vocab_size: int, eot_id: int, encode_batch: Callable[[list[str]], list[list[int]]],
                 decode: Callable[[list[int]], str] | None = None):
        self.name = name
        self.vocab_size = int(vocab_size)
        self.eot_id = int(eot_id)
        self._encode_batch = encode_batch
        self._decode = decode

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special-token strings inside the text are ordinary characters."""
        return self._encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._encode_batch(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (sampled completions); special ids become their strings, broken UTF-8 becomes U+FFFD."""
        if self._decode is None:
            raise NotImplementedError(f"{self.name} was built without a decoder")
        return self._decode([int(i) for i in ids])

    def __repr__(self) -> str:
        return f"TextTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"


def load_tokenizer(spec: str | os.PathLike) -> TextTokenizer:
    """'gpt2' or another tiktoken name, or a local tokenizer directory; fails at once with what to provide."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_directory(path)
    if path.exists() or os.sep in spec or spec.startswith("."):
        raise FileNotFoundError(f"Tokenizer directory {spec!r} does not exist or is not a directory. {HELP}.")
    return _from_tiktoken_name(spec)


PARALLEL_TEXTS = 64  # batches at least this long are encoded on several threads


class _TiktokenBatch:
    """Batched tiktoken encoding as a picklable callable (so a DataModule holding it can be pickled)."""

    def __init__(self, enc):
        self.enc, self.threads = enc, max(1, min(8, os.cpu_count() or 1))

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if len(texts) < PARALLEL_TEXTS:  # tiktoken starts a thread pool per batch call: not worth it for a few
            return [self.enc.encode_ordinary(text) for text in texts]
        return self.enc.encode_ordinary_batch(texts, num_threads=self.threads)


class _LitgptBatch:
    """Batched encoding through a litgpt Tokenizer's backend, without BOS/EOS insertion."""

    def __init__(self, tok):
        self.processor, self.hf = tok.processor, tok.backend == "huggingface"

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if self.hf:
            return [e.ids for e in self.processor.encode_batch(texts, add_special_tokens=False)]
        return self.processor.encode(texts)  # sentencepiece encodes lists, adding no BOS by default


class _LitgptDecode:
    """Decoding through a litgpt Tokenizer's backend (picklable, like ``_LitgptBatch``)."""

    def __init__(self, tok):
        self.processor = tok.processor

    def __call__(self, ids: list[int]) -> str:
        return self.processor.decode(ids)


def _tiktoken_encoder(enc, name: str) -> TextTokenizer:
    return TextTokenizer(name=name, vocab_size=enc.n_vocab, eot_id=enc.eot_token, encode_batch=_TiktokenBatch(enc),
                         decode=enc.decode)


def _from_tiktoken_name(name: str) -> TextTokenizer:
    import tiktoken

    if name not in tiktoken.list_encoding_names():
        raise ValueError(f"Unknown tokenizer {name!r}. {HELP}.")
    try:
        enc = tiktoken.get_encoding(name)
    except Exception as err:  # network / cache failures surface as many exception types
        raise RuntimeError(
            f"tiktoken could not load {name!r} ({type(err).__name__}: {err}). It downloads its files on first use; "
            f"offline, {HELP}."
        ) from err
    return _tiktoken_encoder(enc, name)


def _from_directory(path: Path) -> TextTokenizer:
    for encoder_name, merges_name in BPE_FILE_PAIRS:
        if (path / encoder_name).is_file() and (path / merges_name).is_file():
            return bpe_from_files(path / encoder_name, path / merges_name)
    if (path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file():
        return _from_litgpt(path)
    raise FileNotFoundError(f"No tokenizer files in {path}. {HELP}.")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte -> printable-character map, inverted: for writing GPT-2-format files (tests,
    export); reading them goes through tiktoken's own loader."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    decoder = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            decoder[chr(256 + extra)] = b
            extra += 1
    return decoder


def bpe_from_files(encoder_json: str | Path, merges: str | Path) -> TextTokenizer:
    """Build a tiktoken Encoding from a GPT-2-style ``encoder.json`` + ``vocab.bpe`` pair, no network.

    The ranks come from tiktoken's own data-gym loader, which checks that the merges list exactly the merged
    tokens of encoder.json in rank order; the files' sha256 are passed along so that its read cache can never
    serve an older version of a file edited in place.
    """
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder_json, merges = Path(encoder_json), Path(merges)
    raw_encoder, raw_merges = encoder_json.read_bytes(), merges.read_bytes()
    encoder = json.loads(raw_encoder)
    special = {tok: i for tok, i in encoder.items() if _SPECIAL.match(tok)}
    if END_OF_TEXT not in special:
        raise ValueError(f"{encoder_json} has no {END_OF_TEXT} entry; the text pipeline needs an end-of-text id.")
    digest = {p.name: hashlib.sha256(raw).hexdigest() for p, raw in ((encoder_json, raw_encoder), (merges, raw_merges))}
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(str(merges), str(encoder_json), vocab_bpe_hash=digest[merges.name],
                                                encoder_json_hash=digest[encoder_json.name])
    except (AssertionError, KeyError, ValueError) as err:
        raise ValueError(
            f"{merges} and {encoder_json} are not one GPT-2 byte-level BPE (merges and tokens disagree in content or "
            f"order, or a token is not in byte-level form: {type(err).__name__} {err}); mismatched files?"
        ) from err
    if sorted(digest.values()) == sorted(GPT2_HASHES.values()):
        name = "gpt2"  # the same ids as tiktoken's own gpt2: caches built online and offline are shared
    else:
        name = "bpe-" + hashlib.sha256("".join(sorted(digest.values())).encode()).hexdigest()[:12]
    enc = tiktoken.Encoding(
        name=name,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=special,
        explicit_n_vocab=len(ranks) + len(special),
    )
    return _tiktoken_encoder(enc, name)


def _from_litgpt(path: Path) -> TextTokenizer:
    from litgpt.tokenizer import Tokenizer

    try:
        tok = Tokenizer(path)
    except (KeyError, ValueError, NotImplementedError, ImportError) as err:
        raise ValueError(f"litgpt could not load the tokenizer in {path} ({type(err).__name__}: {err}). {HELP}.") from err
    if tok.eos_id is None:
        raise ValueError(
            f"Tokenizer in {path} declares no end-of-text/eos token (tokenizer_config.json or generation_config.json); "
            "documents cannot be separated without one."
        )
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"):
        if (path / name).is_file():
            digest.update(name.encode() + (path / name).read_bytes())
    return TextTokenizer(f"{path.name}-{digest.hexdigest()[:12]}", tok.vocab_size, tok.eos_id, _LitgptBatch(tok),
                         decode=_LitgptDecode(tok))
