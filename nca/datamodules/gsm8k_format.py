"""GSM8K data (docs/paper.md §7.1) without Lightning or torch: the record format, the splits and the exemplar
draw, shared by the fine-tuning rows (``nca.datamodules.gsm8k``) and the evaluation (``nca.evaluation.gsm8k``).

Each example renders as "Question:\\n{question}\\nAnswer:\\n{reasoning}\\nFinal Answer: {number}", where the
reasoning is the reference answer's text before "####" (calculator annotations "<<48/2=24>>" kept).
Validation is held out from the TRAIN split (the reference used the test split): a question is held out
when the hash of its text falls below ``val_fraction`` (``nca.datamodules.text_sources.is_validation``), so the
split is the same on every machine and for every file order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nca.datamodules.text_sources import is_hf_name, is_validation

HF_NAME, HF_SUBSET = "openai/gsm8k", "main"
SOURCE_HELP = ("give a directory holding {train,test}.jsonl (fields 'question', 'answer') or a Hugging Face "
               "dataset name such as 'openai/gsm8k' (subset 'main'; needs network)")


@dataclass(frozen=True)
class GSM8KExample:
    question: str
    reasoning: str  # the worked solution before "####", annotations kept
    number: str  # the final answer after "####" (thousands separators removed)

    @property
    def prompt(self) -> str:
        return f"Question:\n{self.question}\nAnswer:\n"

    @property
    def answer(self) -> str:
        return f"{self.reasoning}\nFinal Answer: {self.number}"


def parse_example(record: dict) -> GSM8KExample:
    """One GSM8K record ({'question', 'answer': '... #### 72'}) -> question, reasoning and final number."""
    try:
        question, answer = record["question"], record["answer"]
    except KeyError as err:
        raise KeyError(f"GSM8K records need 'question' and 'answer' fields; got {sorted(record)}") from err
    reasoning, marker, number = answer.rpartition("####")
    if not marker:
        raise ValueError(f"GSM8K answer without '####': {answer[:80]!r}")
    return GSM8KExample(question.strip(), reasoning.strip(), number.strip().replace(",", ""))


def load_split(source: str, split: str) -> list[GSM8KExample]:
    """The examples of one split, from ``<dir>/<split>.jsonl`` or a Hugging Face dataset."""
    path = Path(source).expanduser()
    if path.is_dir():
        file = path / f"{split}.jsonl"
        if not file.is_file():
            raise FileNotFoundError(f"{file} does not exist; {SOURCE_HELP}")
        with open(file, encoding="utf-8") as f:
            return [parse_example(json.loads(line)) for line in f if line.strip()]
    if not is_hf_name(source):
        raise FileNotFoundError(f"GSM8K source {source!r} is no directory; {SOURCE_HELP}")
    from datasets import load_dataset

    subset = HF_SUBSET if source.removeprefix("hf:") == HF_NAME else None
    return [parse_example(r) for r in load_dataset(source.removeprefix("hf:"), subset, split=split)]


def train_val_split(examples: list[GSM8KExample], val_fraction: float) -> tuple[list[GSM8KExample], list[GSM8KExample]]:
    held = [is_validation(e.question, val_fraction) for e in examples]
    return [e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h]


def pick_exemplars(pool_size: int, k: int, key: tuple[int, ...], exclude: int | None = None) -> list[int]:
    """``k`` distinct pool indices (never ``exclude``): a pure function of ``key``, e.g. (seed, split, index)."""
    rng = np.random.default_rng(list(key))
    candidates = [i for i in rng.permutation(pool_size)[: k + 1].tolist() if i != exclude]
    return candidates[:k]
