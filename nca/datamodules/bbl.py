"""BIG-bench Lite stage-3 fine-tuning rows (docs/paper.md §7.3). The task data (lists, examples, loading, the
deterministic split, the prompt format) is ``nca.datamodules.bbl_tasks``, re-exported here; the tasks actually
used are logged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from nca.datamodules.bbl_tasks import (  # noqa: F401 (re-exported: the BBL data API in one import)
    BBL_TASKS, ENGLISH_TASKS, NON_ENGLISH, REFERENCE_TASKS, SOURCE_HELP, TASK_LISTS, BBLExample, load_tasks,
    parse_example, split_tasks, task_list as named_tasks)
from nca.datamodules.prompts import SupervisedRowsDataModule, fit_row, pack_row


class BBLDataModule(SupervisedRowsDataModule):
    """BBL stage-3 rows: each training example with 0-3 in-task exemplars, loss on its answer only.

    Args:
        source: the task JSON archive (.tar.xz) or directory.
        tasks: task names (default: those of ``task_list`` that the source holds); ``used_tasks``: those kept.
        task_list: "reference" (the reference release's 18 English tasks), "english" (20) or "all" (24).
        max_per_task: training (and validation) examples kept per task (paper 350).
        max_exemplars: each row gets a uniform 0..max_exemplars in-task train exemplars (paper 3).
        val_fraction, min_train_examples: the split and the reference's small-task filter (see module doc).
    """

    def __init__(self, source: str, tokenizer: str = "gpt2", seq_len: int = 1024, batch_size: int = 8,
                 num_workers: int = 0, tasks: list[str] | None = None, max_per_task: int = 350,
                 max_exemplars: int = 3, val_fraction: float = 0.2, min_train_examples: int = 100, seed: int = 0,
                 task_list: str = "reference"):
        super().__init__(tokenizer, seq_len, batch_size, num_workers, seed)
        self.save_hyperparameters()
        unknown = sorted(set(tasks or ()) - set(BBL_TASKS))
        if unknown:
            raise ValueError(f"Unknown BBL tasks {unknown}; choose from {list(BBL_TASKS)}")
        if not Path(source).expanduser().exists():
            raise FileNotFoundError(f"BBL source {source} does not exist; {SOURCE_HELP}")
        if max_per_task < 1 or max_exemplars < 0 or not 0.0 < val_fraction < 1.0:
            raise ValueError("need max_per_task >= 1, max_exemplars >= 0 and 0 < val_fraction < 1")
        self.default_tasks = named_tasks(task_list)
        self.data_source, self.tasks = source, (tuple(tasks) if tasks else None)
        self.max_per_task, self.max_exemplars = max_per_task, max_exemplars
        self.val_fraction, self.min_train_examples = val_fraction, min_train_examples
        self.used_tasks: list[str] = []
        self._splits = None

    def splits(self) -> dict[str, tuple[list[BBLExample], list[BBLExample]]]:
        if self._splits is None:
            self._splits = split_tasks(load_tasks(self.data_source, self.tasks, self.default_tasks), self.val_fraction,
                                       self.max_per_task, self.min_train_examples)
            self.used_tasks = list(self._splits)
            rank_zero_info(f"BBL tasks used ({len(self.used_tasks)}): {', '.join(self.used_tasks)}")
        return self._splits

    def build_rows(self, split: str) -> list[dict[str, torch.Tensor]]:
        """Rows of "train" or "val"; "test" is the validation side too (the raw tasks hold nothing else)."""
        rows = []
        for t, (task, (train, val)) in enumerate(self.splits().items()):
            exemplars = [[(self.tokenizer.encode(e.exemplar), False)] for e in train]
            for i, example in enumerate(train if split == "train" else val):
                rng = np.random.default_rng([self.seed, 0 if split == "train" else 1, t, i])
                k = int(rng.integers(0, self.max_exemplars + 1))
                pool = [j for j in rng.permutation(len(train))[: k + 1].tolist() if split != "train" or j != i][:k]
                target = self.encode_pair(example.prompt, example.answer, close=True)
                segments = fit_row([exemplars[j] for j in pool], target, self.seq_len + 1)
                rows.append(pack_row(segments, self.seq_len, self.tokenizer.eot_id))
        return rows
