"""GSM8K fine-tuning rows (stage 3, docs/paper.md §7.1); the record format, the splits and the exemplar draw
are ``nca.datamodules.gsm8k_format`` (re-exported here), shared with the evaluation.

A training row is 5 random train exemplars and then the target example, each closed by end-of-text; every
question is masked and every answer (with its end-of-text) supervised. The exemplars of row i are a pure
function of (seed, i). Validation is held out from the TRAIN split by question hash; the test split is only
read by the evaluation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nca.datamodules.gsm8k_format import (  # noqa: F401 (re-exported: the GSM8K data API in one import)
    HF_NAME, HF_SUBSET, SOURCE_HELP, GSM8KExample, load_split, parse_example, pick_exemplars, train_val_split)
from nca.datamodules.prompts import SupervisedRowsDataModule, fit_row, pack_row
from nca.datamodules.text_sources import is_hf_name


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
