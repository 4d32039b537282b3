"""GSM8K fine-tuning rows (stage 3, docs/paper.md §7.1) and the problem format shared with its evaluation.

Each example renders as "Question:\\n{question}\\nAnswer:\\n{reasoning}\\nFinal Answer: {number}" closed by
end-of-text, where the reasoning is the reference answer's text before "####" (calculator annotations
"<<48/2=24>>" kept). A training row is 5 random train exemplars and then the target example; every question
is masked and every answer (with its end-of-text) supervised. The exemplars of row i are a pure function of
(seed, i).

Validation is held out from the TRAIN split (the reference used the test split): a question is held out
when the hash of its text falls below ``val_fraction`` (``nca.datamodules.text.is_validation``), so the split is
the same on every machine and for every file order. The test split is only read by the evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nca.datamodules.prompts import SupervisedRowsDataModule, fit_row, pack_row
from nca.datamodules.text import is_hf_name, is_validation

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


class GSM8KDataModule(SupervisedRowsDataModule):
    """GSM8K stage-3 rows: 5 train exemplars + the target, questions masked, answers supervised.

    Args:
        source: directory with train.jsonl (and test.jsonl for the evaluation) or a HF dataset name.
        tokenizer: the stage-2 model's tokenizer ("gpt2" or a directory, see ``nca.datamodules.tokenizers``).
        seq_len: tokens per row (paper 1024); exemplars that do not fit are dropped, earliest first.
        exemplars: exemplars per row (paper 5).
        val_fraction: share of TRAIN questions held out for validation (by question hash).
    """

    def __init__(self, source: str = HF_NAME, tokenizer: str = "gpt2", seq_len: int = 1024, batch_size: int = 8,
                 num_workers: int = 0, exemplars: int = 5, val_fraction: float = 0.05, seed: int = 0):
        super().__init__(tokenizer, seq_len, batch_size, num_workers, seed)
        self.save_hyperparameters()
        if exemplars < 0 or not 0.0 < val_fraction < 0.5:
            raise ValueError(f"need exemplars >= 0 and 0 < val_fraction < 0.5; got {exemplars}, {val_fraction}")
        self.data_source, self.exemplars, self.val_fraction = source, exemplars, val_fraction
        path = Path(source).expanduser()
        if path.is_dir() and not (path / "train.jsonl").is_file():
            raise FileNotFoundError(f"{path / 'train.jsonl'} does not exist; {SOURCE_HELP}")
        if not path.is_dir() and not is_hf_name(source):
            raise FileNotFoundError(f"GSM8K source {source!r} is no directory; {SOURCE_HELP}")
        self._splits: tuple[list[GSM8KExample], list[GSM8KExample]] | None = None

    def splits(self) -> tuple[list[GSM8KExample], list[GSM8KExample]]:
        if self._splits is None:
            self._splits = train_val_split(load_split(self.data_source, "train"), self.val_fraction)
            if not self._splits[0] or not self._splits[1]:
                raise ValueError(f"GSM8K train split of {self.data_source} leaves an empty train or validation part "
                                 f"at val_fraction={self.val_fraction}; give more examples")
        return self._splits

    def build_rows(self, split: str) -> list[dict[str, torch.Tensor]]:
        """Rows of "train", "val" (held out from train) or "test" (the test split, for ``nca test`` only)."""
        train, val = self.splits()
        pool = [self.encode_pair(e.prompt, e.answer, close=True) for e in train]  # exemplars: train only
        targets = {"val": val, "test": load_split(self.data_source, "test") if split == "test" else []}.get(split)
        encoded = pool if split == "train" else [self.encode_pair(e.prompt, e.answer, close=True) for e in targets]
        domain = {"train": 0, "val": 1, "test": 2}[split]
        rows = []
        for i, target in enumerate(encoded):
            picks = pick_exemplars(len(pool), self.exemplars, (self.seed, domain, i),
                                   exclude=i if split == "train" else None)
            segments = fit_row([pool[j] for j in picks], target, self.seq_len + 1)
            rows.append(pack_row(segments, self.seq_len, self.tokenizer.eot_id))
        return rows
