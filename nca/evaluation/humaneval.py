"""HumanEval (docs/paper.md §7.2): problems, the zero-shot prompt, stop strings, truncation and sandboxed scoring.

The evaluation is zero-shot on the raw prompt; a sampled completion is cut at the first stop string and
the program prompt + completion + test + ``check(entry_point)`` must run to the end within 3 s. Used by
``nca evaluate``::

    problems = load_problems("HumanEval.jsonl.gz")            # {task_id: problem}
    text = prompt(problems["HumanEval/0"])                    # what the model continues
    completion = truncate(sample)                             # cut at STOP_STRINGS
    verdicts = score(problems, [("HumanEval/0", 0, completion)], workers=2, timeout=3.0)

Execution is in `nca.evaluation.sandbox` (its own process per program in namespaces made by bubblewrap or
unshare, refused where neither works unless isolation='none' is asked for, and a pass that only a completed
check can produce), not the openai/human-eval guard.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path
from typing import Iterable, NamedTuple

from nca.evaluation.sandbox import Job, Limits, Sandbox

HF_DATASET = "openai_humaneval"
FIELDS = ("task_id", "prompt", "entry_point", "test")
# The zero-shot prompt is the problem's raw prompt (signature + docstring), nothing added.
PROMPT = "{prompt}"
# The paper's reference list; the Codex paper adds "\n#", bigcode-evaluation-harness also "\n@" and "\n```".
STOP_STRINGS = ("\nclass ", "\ndef ", "\nif __name__", "\nprint(")
STOP_VARIANTS = {
    "reference": STOP_STRINGS,
    "codex": STOP_STRINGS + ("\n#",),
    "bigcode": STOP_STRINGS + ("\n#", "\n@", "\n```"),
}


class Verdict(NamedTuple):
    task_id: str
    sample_index: int
    passed: bool
    reason: str


def _check_problem(problem: dict, where: str) -> dict:
    missing = [name for name in FIELDS if not isinstance(problem.get(name), str)]
    if missing:
        raise ValueError(f"{where}: a HumanEval problem needs text fields {FIELDS}; missing {missing}")
    return problem


def load_problems(source: str | Path) -> dict[str, dict]:
    """Problems by task_id, in file order, from a local ``HumanEval.jsonl(.gz)`` or, for online users,
    ``source="openai_humaneval"`` (the Hugging Face dataset, via `datasets`; it downloads)."""
    if source is None:
        raise ValueError("load_problems needs the path of HumanEval.jsonl.gz (github.com/openai/human-eval) "
                         f"or {HF_DATASET!r} to download it from the Hugging Face hub")
    if str(source) == HF_DATASET:
        from datasets import load_dataset

        rows = list(load_dataset(HF_DATASET, split="test"))
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"HumanEval file {path} not found: pass the path of HumanEval.jsonl.gz "
                                    f"(github.com/openai/human-eval) or {HF_DATASET!r} to download it")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
    checked = [_check_problem(dict(row), f"{source} row {n}") for n, row in enumerate(rows)]
    problems = {problem["task_id"]: problem for problem in checked}
    if not problems:
        raise ValueError(f"{source} holds no problems")
    return problems


def prompt(problem: dict) -> str:
    """The zero-shot prompt: the raw prompt (`PROMPT`)."""
    return PROMPT.format(prompt=problem["prompt"])


def stop_strings(variant: str = "reference") -> tuple[str, ...]:
    """The stop strings of ``variant``: 'reference' (the paper's), 'codex' or 'bigcode'."""
    if variant not in STOP_VARIANTS:
        raise ValueError(f"unknown stop-string variant {variant!r}: choose one of {sorted(STOP_VARIANTS)}")
    return STOP_VARIANTS[variant]


def truncate(completion: str, stops: Iterable[str] = STOP_STRINGS) -> str:
    """``completion`` up to (not including) the earliest occurrence of any stop string."""
    cut = len(completion)
    for stop in stops:
        found = completion.find(stop)
        if found != -1:
            cut = min(cut, found)
    return completion[:cut]


def assemble(problem: dict, completion: str) -> str:
    """The reference's program text, prompt + completion + test + check(entry_point), for reading and
    logging; `score` runs the same parts but compiles the test apart, so that a completion which opens a
    string or bracket cannot swallow the test."""
    return f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})\n"


def job(problem: dict, completion: str) -> Job:
    """The sandbox job for one completion (already truncated)."""
    return Job(problem["prompt"] + completion, problem["test"], problem["entry_point"])


def score(problems: dict[str, dict], completions: list[tuple[str, int, str]], workers: int = 2,
          timeout: float = 3.0, limits: Limits | None = None, isolation: str = "auto") -> list[Verdict]:
    """Execute every (task_id, sample_index, completion) in the sandbox, ``workers`` programs at a time;
    verdicts come back in input order. Completions are run as given: truncate them first. ``timeout``
    (wall-clock seconds per program) overrides ``limits.timeout``."""
    unknown = sorted({task for task, _, _ in completions if task not in problems})
    if unknown:
        raise ValueError(f"completions for unknown task ids {unknown[:5]}: score them against the problems "
                         "they were sampled from")
    limits = replace(limits or Limits(), timeout=timeout)
    if not completions:
        return []
    with Sandbox(workers, limits, isolation) as sandbox:
        results = sandbox.run_many(job(problems[task], text) for task, _, text in completions)
    return [Verdict(task, index, result.passed, result.reason)
            for (task, index, _), result in zip(completions, results)]
