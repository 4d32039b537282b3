"""The study's small stage-2 vocabulary: a byte-level BPE trained with Hugging Face ``tokenizers`` on the first
characters of every stage-2 corpus and of C4, saved as ``tokenizer.json`` + ``tokenizer_config.json`` (eos =
``<|endoftext|>``), which ``nca.datamodules.tokenizers.load_tokenizer(DIR)`` reads through litgpt's Tokenizer.

Why: with GPT-2's 50k rows the re-created embedding and head dwarf a small model's blocks, so almost nothing
would be carried across the transition; a 2-4k vocabulary keeps the carried share realistic (docs/paper.md §5).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

from nca.datamodules.text import read_documents, resolve_files
from nca.replication.config import Study

END_OF_TEXT = "<|endoftext|>"
SPEC_FILE = "vocab-spec.json"


class VocabularyChanged(RuntimeError):
    pass


def corpora(study: Study) -> dict[str, tuple[str, list[str]]]:
    """name -> (training source, exclude patterns) of every corpus the vocabulary is trained on."""
    from nca.replication.plan import domain_sources

    out = {d: (domain_sources(study, d)[0], study.data.code_exclude if d == "code" else []) for d in study.domains}
    if any(a.startswith("c4") for a in study.arms):
        out["c4"] = (study.data.c4, [])
    return out


def _characters(source: str, exclude: list[str], budget: int) -> Iterator[str]:
    """Documents of a corpus in file order until ``budget`` characters have been given."""
    used = 0
    for path in resolve_files(source, exclude):
        for text in read_documents(path, txt_document="file"):
            yield text[: budget - used]
            used += min(len(text), budget - used)
            if used >= budget:
                return


def directory_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        digest.update(name.encode() + (directory / name).read_bytes())
    return digest.hexdigest()


def given_tokenizer(study: Study) -> tuple[str, str]:
    """(the tokenizer, its hash) of ``vocab.tokenizer``, after checking its size is the one the plan assumed."""
    from nca.datamodules.tokenizers import load_tokenizer

    spec = study.vocab.tokenizer
    size = load_tokenizer(spec).vocab_size
    if size != study.vocab.size:
        raise ValueError(f"vocab.tokenizer {spec} has {size} ids but vocab.size says {study.vocab.size} (the plan's "
                         f"costs and the recipe use it): set vocab.size {size}")
    path = Path(spec).expanduser()
    return spec, (directory_hash(path) if (path / "tokenizer.json").is_file() and (path / "tokenizer_config.json").is_file()
                  else f"{spec} ({size} ids)")


def prepare_vocabulary(study: Study, out: Path) -> tuple[Path | str, str]:
    """Train the vocabulary into ``out/vocab`` once; later calls reuse it, or refuse if the study changed it.
    A given ``vocab.tokenizer`` is used as it is."""
    if study.vocab.tokenizer is not None:
        return given_tokenizer(study)
    directory = Path(out) / "vocab"
    sources = corpora(study)
    spec = {"size": study.vocab.size, "chars_per_corpus": study.vocab.chars_per_corpus,
            "corpora": {k: [src, ex] for k, (src, ex) in sorted(sources.items())}}
    if (directory / SPEC_FILE).is_file():
        old = json.loads((directory / SPEC_FILE).read_text())
        if old != spec:
            raise VocabularyChanged(
                f"{directory} was trained with {old}, but this config asks for {spec}. Every run of the study uses "
                "it, so it is not replaced: use a new --out, or put the vocab/domains/arms settings back."
            )
        return directory, directory_hash(directory)
    for name, (source, exclude) in sources.items():
        resolve_files(source, exclude)  # a missing corpus fails here, with what to give
    texts = [t for name in sorted(sources) for t in _characters(*sources[name], study.vocab.chars_per_corpus)]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=study.vocab.size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(tmp / "tokenizer.json"))
    (tmp / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": END_OF_TEXT,
                                                           "bos_token": None, "add_bos_token": False}, indent=2))
    (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    tmp.rename(directory)
    return directory, directory_hash(directory)
