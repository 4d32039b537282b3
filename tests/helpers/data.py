"""Toy data that obeys the project's contracts: a deterministic DataModule, text corpora, GSM8K and BBL sets."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch


def pattern_rows(n: int, seq_len: int, vocab_size: int, seed: int) -> torch.Tensor:
    """Arithmetic sequences x_t = (a + k t) mod V, k in {1, 2, 3}: predictable after two tokens."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, vocab_size, (n, 1), generator=g)
    k = torch.randint(1, 4, (n, 1), generator=g)
    return (a + k * torch.arange(seq_len + 1)) % vocab_size


def to_batch(rows: torch.Tensor) -> dict[str, torch.Tensor]:
    labels = rows[:, 1:].clone()
    labels[:, 0] = -100  # the first target is a guess; exercises ignore_index
    return {"input_ids": rows[:, :-1].contiguous(), "labels": labels}


class StepBatches:
    """Batch ``i`` of an epoch is a pure function of (seed, i); resumable through state_dict/load_state_dict.

    Lightning fetches one batch ahead, so the position saved is the number of batches *consumed*
    (``consumed`` is advanced by the module hook below, not by ``__next__``).
    """

    def __init__(self, rows: torch.Tensor, batch_size: int):
        self.rows, self.batch_size = rows, batch_size
        self.start = 0
        self.consumed = 0

    def __len__(self) -> int:
        return len(self.rows) // self.batch_size

    def __iter__(self):
        start, self.start = self.start, 0
        self.consumed = start
        for i in range(start, len(self)):
            yield to_batch(self.rows[i * self.batch_size:(i + 1) * self.batch_size])

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.start = state["consumed"] % len(self)


class PatternDataModule(L.LightningDataModule):
    """Deterministic toy data obeying the batch contract; exposes ``vocab_size`` like every DataModule."""

    def __init__(self, vocab_size: int = 16, seq_len: int = 32, batch_size: int = 8, train_batches: int = 8,
                 val_batches: int = 2, seed: int = 0):
        super().__init__()
        self.vocab_size, self.batch_size = vocab_size, batch_size
        self.train_rows = pattern_rows(train_batches * batch_size, seq_len, vocab_size, seed)
        self.val_rows = pattern_rows(val_batches * batch_size, seq_len, vocab_size, seed + 1)
        self.train_loader = StepBatches(self.train_rows, batch_size)

    def train_dataloader(self):
        return self.train_loader

    def val_dataloader(self):
        return StepBatches(self.val_rows, self.batch_size)

    test_dataloader = val_dataloader

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.trainer is not None and self.trainer.training:
            self.train_loader.consumed += 1
        return batch


def gsm8k_record(i: int) -> dict:
    a, b = i + 2, 3 * i + 1
    return {"question": f"Tom has {a} apples and buys {b}. How many?",
            "answer": f"He has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b:,}"}


def write_gsm8k(directory: Path, train: int = 40, test: int = 6) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", range(train)), ("test", range(1000, 1000 + test))):
        with open(directory / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(gsm8k_record(i)) + "\n" for i in rows)
    return directory


def write_task(path: Path, examples: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": path.parent.name, "examples": examples}))


def write_bbl(directory: Path, per_task: int = 40, reverse: bool = False) -> Path:
    """logical_deduction (3- and 5-way subtasks), winowhy (2-way, twice as many examples), operators
    (free-form) and a non-English task; ``reverse`` writes every file's examples in the opposite order."""
    order = (lambda xs: xs[::-1]) if reverse else (lambda xs: xs)

    def mc(i: int, ways: int) -> dict:
        return {"input": f"Puzzle {i} with {ways} options.",
                "target_scores": {f"option {j}": int(j == i % ways) for j in range(ways)}}

    write_task(directory / "logical_deduction" / "task.json", [])  # metadata only, as in BIG-bench
    write_task(directory / "logical_deduction" / "three" / "task.json", order([mc(i, 3) for i in range(per_task // 2)]))
    write_task(directory / "logical_deduction" / "five" / "task.json",
               order([mc(i, 5) for i in range(per_task // 2, per_task)]))
    write_task(directory / "winowhy" / "task.json", order([mc(i, 2) for i in range(2 * per_task)]))
    write_task(directory / "operators" / "task.json",
               order([{"input": f"{i} op 2 =", "target": [str(i + 2), f"{i + 2}.0"]} for i in range(per_task)]))
    write_task(directory / "language_identification" / "task.json",
               [{"input": f"Bonjour {i}", "target_scores": {"French": 1, "German": 0}} for i in range(per_task)])
    return directory


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def documents(n, seed=0):
    rng = np.random.default_rng(seed)
    return [f"doc {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))) for i in range(n)]


def write_jsonl(path, docs, field="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({field: d, "meta": 1}) + "\n")
    return path
