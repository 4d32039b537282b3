"""BIG-bench Lite task data (docs/paper.md §7.3) without Lightning or torch: the task lists, examples, loading
and the deterministic split, shared by the fine-tuning rows (``nca.datamodules.bbl``) and the evaluation
(``nca.evaluation.bbl``), whose scoring stage must start fast.

Source: the raw BIG-bench task JSON, as a ``.tar.xz`` of ``<task>/[<subtask>/]task.json`` files or a
directory of them (subtasks are pooled into their task).

Task lists: ``reference`` (the default) is the reference release's 18 English tasks, ``english`` the 20
English tasks of the 24 (the reference also leaves out hindu_knowledge and linguistics_puzzles), ``all`` the
24. Tasks with fewer than ``min_train_examples`` training examples are then dropped (the reference's rule:
11 of the 18 remain on the full archive, 13 of the 20).

Split: the raw files have none. An example is validation when the hash of (task, input) falls below
``val_fraction`` (``nca.datamodules.text_sources.is_validation``), so questions sharing one input (e.g.
logical_deduction asks several about one paragraph) never straddle the split; within each side, examples are
ordered by another hash of (task, input, choices) and the first ``max_per_task`` kept. The same on every
machine and for any file order.

Prompt: "Question:\\n{input}\\n" + one "choice: X\\n" line per choice + "\\nAnswer:\\n"; an exemplar adds
"{answer}\\n\\n". The answer of a multiple-choice example is its first highest-scoring choice; every
highest-scoring choice (or every generative target) counts as correct at evaluation. ``shuffled(seed)``
permutes an example's choices, a pure function of (seed, example).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from nca.datamodules.text_sources import is_validation

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
# The reference release's English list: the 20 without hindu_knowledge and linguistics_puzzles.
REFERENCE_TASKS = tuple(t for t in ENGLISH_TASKS if t not in ("hindu_knowledge", "linguistics_puzzles"))
TASK_LISTS = {"reference": REFERENCE_TASKS, "english": ENGLISH_TASKS, "all": BBL_TASKS}
SOURCE_HELP = "give the BIG-bench task JSON as a .tar.xz of <task>/.../task.json files or a directory of them"


def order_key(*parts: str) -> int:
    """A stable 64-bit hash of text parts: a deterministic order or split that no file order can change."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def task_list(name: str) -> tuple[str, ...]:
    if name not in TASK_LISTS:
        raise ValueError(f"unknown BBL task list {name!r}: choose one of {sorted(TASK_LISTS)}")
    return TASK_LISTS[name]


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

    def shuffled(self, seed: int) -> "BBLExample":
        """The choices in a seeded order (a pure function of seed and example); ``answer`` stays a correct one."""
        if len(self.choices) < 2:
            return self
        choices = list(self.choices)
        random.Random(f"{seed}/{self.key}").shuffle(choices)
        targets = tuple(c for c in choices if c in self.targets)
        return replace(self, choices=tuple(choices), targets=targets)


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


def load_tasks(source: str | Path, tasks: tuple[str, ...] | list[str] | None = None,
               default: tuple[str, ...] = REFERENCE_TASKS) -> dict[str, list[BBLExample]]:
    """Examples of each task (subtasks pooled), in order-hash order; repeated (input, choices) dropped.

    Named ``tasks`` must all be in the source; without them, the tasks of ``default`` that the source holds."""
    named = tasks is not None
    tasks = tuple(tasks) if named else tuple(default)
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
                min_train_examples: int = 100, dropped: dict[str, str] | None = None,
                ) -> dict[str, tuple[list[BBLExample], list[BBLExample]]]:
    """task -> (train, validation), each at most ``max_per_task``; tasks with too few training examples go
    (with the reason in ``dropped`` when given)."""
    out: dict[str, tuple[list[BBLExample], list[BBLExample]]] = {}
    for task, items in examples.items():
        held = [is_validation(f"{task}\n{e.input}", val_fraction) for e in items]
        train = [e for e, h in zip(items, held) if not h]
        val = [e for e, h in zip(items, held) if h]
        if len(train) < min_train_examples:
            log.info("BBL: dropping %s (%d training examples < %d)", task, len(train), min_train_examples)
            if dropped is not None:
                dropped[task] = f"{len(train)} training examples < {min_train_examples}"
            continue
        out[task] = (train[:max_per_task], val[:max_per_task])
    if not out:
        raise ValueError(f"No BBL task has {min_train_examples} training examples; lower min_train_examples")
    return out
