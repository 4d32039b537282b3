"""BIG-bench Lite tasks (stage 3, docs/paper.md §7.3): loading, the deterministic split, prompts and rows.

Source: the raw BIG-bench task JSON, as a ``.tar.xz`` of ``<task>/[<subtask>/]task.json`` files or a
directory of them (subtasks are pooled into their task). The English tasks are the 24 BBL tasks less the
four that are not English (``NON_ENGLISH``); tasks with fewer than ``min_train_examples`` training examples
are then dropped (the reference's rule) and the list actually used is logged.

Split: the raw files have none. An example is validation when the hash of (task, input) falls below
``val_fraction`` (``nca.datamodules.text.is_validation``), so questions sharing one input (e.g. logical_deduction
asks several about one paragraph) never straddle the split; within each side, examples are ordered by another
hash of (task, input, choices) and the first ``max_per_task`` kept. The same on every machine and for any file order.

Prompt: "Question:\\n{input}\\n" + one "choice: X\\n" line per choice + "\\nAnswer:\\n"; an exemplar adds
"{answer}\\n\\n". The answer of a multiple-choice example is its first highest-scoring choice; every
highest-scoring choice (or every generative target) counts as correct at evaluation.
"""

from __future__ import annotations

import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from nca.datamodules.prompts import SupervisedRowsDataModule, fit_row, order_key, pack_row
from nca.datamodules.text import is_validation

log = logging.getLogger(__name__)

BBL_TASKS = (
    "auto_debugging", "bbq_lite_json", "code_line_description", "conceptual_combinations", "conlang_translation",
    "emoji_movie", "formal_fallacies_syllogisms_negation", "hindu_knowledge", "known_unknowns",
    "language_identification", "linguistics_puzzles", "logic_grid_puzzle", "logical_deduction",
    "misconceptions_russian", "novel_concepts", "operators", "parsinlu_reading_comprehension",
    "play_dialog_same_or_different", "repeat_copy_logic", "strange_stories", "strategyqa",
    "symbol_interpretation", "vitaminc_fact_verification", "winowhy",
)
NON_ENGLISH = ("conlang_translation", "language_identification", "misconceptions_russian",
               "parsinlu_reading_comprehension")
ENGLISH_TASKS = tuple(t for t in BBL_TASKS if t not in NON_ENGLISH)
SOURCE_HELP = "give the BIG-bench task JSON as a .tar.xz of <task>/.../task.json files or a directory of them"


@dataclass(frozen=True)
class BBLExample:
    task: str
    input: str
    choices: tuple[str, ...] = ()  # empty for free-form (generative) examples
    targets: tuple[str, ...] = ()  # every correct answer
    key: int = field(default=0, compare=False)  # order hash of (task, input, choices)

    @property
    def answer(self) -> str:
        return self.targets[0]

    @property
    def prompt(self) -> str:
        lines = "".join(f"choice: {c}\n" for c in self.choices)
        return f"Question:\n{self.input}\n{lines}\nAnswer:\n"

    @property
    def exemplar(self) -> str:
        return f"{self.prompt}{self.answer}\n\n"


def parse_example(task: str, record: dict) -> BBLExample | None:
    """A BIG-bench example -> BBLExample; None when it has no input or no correct answer."""
    text = record.get("input")
    scores = record.get("target_scores") or {}
    if scores:
        best = max(scores.values())
        targets = [c for c, s in scores.items() if s == best and s > 0]
        choices = tuple(scores)
    else:
        raw = record.get("target")
        targets = [raw] if isinstance(raw, str) else list(raw or [])
        choices = ()
    targets = [t for t in targets if isinstance(t, str) and t.strip()]
    if not isinstance(text, str) or not targets:
        return None
    return BBLExample(task, text.strip(), choices, tuple(targets), order_key(task, text.strip(), *choices))


def _task_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every task.json of the archive or directory."""
    if source.is_dir():
        for path in sorted(source.rglob("task.json")):
            yield str(path.relative_to(source)), path.read_bytes()
    elif source.is_file() and source.name.endswith((".tar.xz", ".tar", ".tar.gz", ".tgz")):
        with tarfile.open(source) as archive:
            for member in archive:
                if member.isfile() and member.name.endswith("task.json"):
                    yield member.name.removeprefix("./"), archive.extractfile(member).read()
    else:
        raise FileNotFoundError(f"BBL source {source} is not an existing archive or directory; {SOURCE_HELP}")


def load_tasks(source: str | Path, tasks: tuple[str, ...] | list[str] | None = None) -> dict[str, list[BBLExample]]:
    """Examples of each task (subtasks pooled), in order-hash order; repeated (input, choices) dropped.

    ``tasks`` None means the English tasks that the source holds; named tasks must all be there."""
    named = tasks is not None
    tasks = tuple(tasks) if named else ENGLISH_TASKS
    wanted = set(tasks)
    found: dict[str, dict[tuple, BBLExample]] = {t: {} for t in tasks}
    for name, raw in _task_files(Path(source).expanduser()):
        task = name.split("/")[0]
        if task not in wanted:
            continue
        for record in json.loads(raw).get("examples", []):
            example = parse_example(task, record)
            if example is not None:
                found[task].setdefault((example.input, example.choices), example)
    missing = [t for t, examples in found.items() if not examples]
    if (named and missing) or len(missing) == len(tasks):
        raise ValueError(f"No examples for tasks {missing} in {source}; {SOURCE_HELP} (or pick other tasks)")
    if missing:
        log.warning("BBL: %s holds no examples of %s", source, ", ".join(missing))
    return {t: sorted(found[t].values(), key=lambda e: e.key) for t in tasks if found[t]}


def split_tasks(examples: dict[str, list[BBLExample]], val_fraction: float = 0.2, max_per_task: int = 350,
                min_train_examples: int = 100) -> dict[str, tuple[list[BBLExample], list[BBLExample]]]:
    """task -> (train, validation), each at most ``max_per_task``; tasks with too few training examples go."""
    out: dict[str, tuple[list[BBLExample], list[BBLExample]]] = {}
    for task, items in examples.items():
        held = [is_validation(f"{task}\n{e.input}", val_fraction) for e in items]
        train = [e for e, h in zip(items, held) if not h]
        val = [e for e, h in zip(items, held) if h]
        if len(train) < min_train_examples:
            log.info("BBL: dropping %s (%d training examples < %d)", task, len(train), min_train_examples)
            continue
        out[task] = (train[:max_per_task], val[:max_per_task])
    if not out:
        raise ValueError(f"No BBL task has {min_train_examples} training examples; lower min_train_examples")
    rank_zero_info(f"BBL tasks used ({len(out)}): {', '.join(out)}")
    return out


class BBLDataModule(SupervisedRowsDataModule):
    """BBL stage-3 rows: each training example with 0-3 in-task exemplars, loss on its answer only.

    Args:
        source: the task JSON archive (.tar.xz) or directory.
        tasks: task names (default: the English BBL tasks the source holds); ``used_tasks``: those kept.
        max_per_task: training (and validation) examples kept per task (paper 350).
        max_exemplars: each row gets a uniform 0..max_exemplars in-task train exemplars (paper 3).
        val_fraction, min_train_examples: the split and the reference's small-task filter (see module doc).
    """

    def __init__(self, source: str, tokenizer: str = "gpt2", seq_len: int = 1024, batch_size: int = 8,
                 num_workers: int = 0, tasks: list[str] | None = None, max_per_task: int = 350,
                 max_exemplars: int = 3, val_fraction: float = 0.2, min_train_examples: int = 100, seed: int = 0):
        super().__init__(tokenizer, seq_len, batch_size, num_workers, seed)
        self.save_hyperparameters()
        unknown = sorted(set(tasks or ()) - set(BBL_TASKS))
        if unknown:
            raise ValueError(f"Unknown BBL tasks {unknown}; choose from {list(BBL_TASKS)}")
        if not Path(source).expanduser().exists():
            raise FileNotFoundError(f"BBL source {source} does not exist; {SOURCE_HELP}")
        if max_per_task < 1 or max_exemplars < 0 or not 0.0 < val_fraction < 1.0:
            raise ValueError("need max_per_task >= 1, max_exemplars >= 0 and 0 < val_fraction < 1")
        self.data_source, self.tasks = source, (tuple(tasks) if tasks else None)
        self.max_per_task, self.max_exemplars = max_per_task, max_exemplars
        self.val_fraction, self.min_train_examples = val_fraction, min_train_examples
        self.used_tasks: list[str] = []
        self._splits = None

    def splits(self) -> dict[str, tuple[list[BBLExample], list[BBLExample]]]:
        if self._splits is None:
            self._splits = split_tasks(load_tasks(self.data_source, self.tasks), self.val_fraction, self.max_per_task,
                                       self.min_train_examples)
            self.used_tasks = list(self._splits)
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
