"""BIG-bench Lite evaluation (docs/paper.md §7.3): generative exact match or log-probability choice.

Problems: the validation side of the split of ``nca.datamodules.bbl`` (at most 350 per task), each prompt led by
2 fixed exemplars of its task (the first two training examples in hash order), "{prompt}{answer}\\n\\n".

Modes:
  generate  sampled replies (stopped at end-of-text or a blank line, the exemplar separator), correct when
            the lower-cased, stripped reply equals any correct target;
  logprob   each choice scored by its summed log-probability after the prompt, the best one taken (one
            "sample" per problem; free-form examples have no choices and are left out).

Per task, pass@k is chance-normalised: max(0, (p - chance) / (1 - chance)) with chance the mean of 1/C over
the task's examples, C each example's own number of choices (0 for free-form ones), since tasks mix 3-, 5-
and 7-way items. ``chance="first"`` takes C from the task's first example, as the reference did. The score
is the mean over tasks. (The reference's other defects, replies never stored and skipped examples scored
1.0, are not reproduced: they make every number 1.0.)
"""

from __future__ import annotations

from typing import Any

import torch

from nca.datamodules.bbl import ENGLISH_TASKS, BBLExample, load_tasks, split_tasks
from nca.evaluation.passk import mean_pass_at_k, powers_of_two
from nca.evaluation.problems import Problem, verdicts_by_problem

EXEMPLARS = 2


def normalise(score: float, chance: float) -> float:
    """Chance-normalised score, floored at 0; the raw score when chance is 0 (free-form)."""
    return max(0.0, (score - chance) / (1.0 - chance)) if chance > 0 else score


def task_chance(choice_counts: list[int], rule: str = "example") -> float:
    """Chance level of a task from its examples' choice counts (0 = free-form): the mean of 1/C ("example")
    or 1/C of the first example ("first", the reference)."""
    if not choice_counts:
        return 0.0
    inverse = [1.0 / c if c else 0.0 for c in choice_counts]
    return inverse[0] if rule == "first" else sum(inverse) / len(inverse)


def matches(reply: str, targets: list[str]) -> bool:
    return reply.strip().lower() in {t.strip().lower() for t in targets}


class BBLTask:
    """BBL validation problems of the English tasks (or ``tasks``); ``limit`` caps problems per task."""

    name = "bbl"
    stop_at_eot = True
    stop_strings: tuple[str, ...] = ("\n\n",)

    def __init__(self, source: str, mode: str = "generate", chance: str = "example", tasks: list[str] | None = None,
                 max_per_task: int = 350, val_fraction: float = 0.2, min_train_examples: int = 100,
                 limit: int | None = None):
        if mode not in ("generate", "logprob") or chance not in ("example", "first"):
            raise ValueError("mode must be 'generate' or 'logprob' and chance 'example' or 'first'")
        self.source, self.mode, self.chance, self.tasks = source, mode, chance, (tuple(tasks) if tasks else None)
        self.max_per_task, self.val_fraction, self.min_train_examples = max_per_task, val_fraction, min_train_examples
        self.limit = limit
        self.used_tasks: list[str] = []

    def settings(self) -> dict[str, Any]:
        return {"source": self.source, "mode": self.mode, "chance": self.chance, "tasks": list(self.tasks or ENGLISH_TASKS),
                "max_per_task": self.max_per_task, "val_fraction": self.val_fraction,
                "min_train_examples": self.min_train_examples}

    def problems(self) -> list[Problem]:
        splits = split_tasks(load_tasks(self.source, self.tasks), self.val_fraction, self.max_per_task,
                             self.min_train_examples)
        self.used_tasks = list(splits)
        problems: list[Problem] = []
        for task, (train, val) in splits.items():
            shots = "".join(e.exemplar for e in train[:EXEMPLARS])
            chosen = [e for e in val if self.mode == "generate" or e.choices]
            for i, example in enumerate(chosen[: self.limit]):
                problems.append(self._problem(f"{task}/{i}", len(problems), shots, example))
        return problems

    @staticmethod
    def _problem(pid: str, index: int, shots: str, example: BBLExample) -> Problem:
        data = {"task": example.task, "targets": list(example.targets), "choices": list(example.choices)}
        return Problem(pid, index, (shots + example.prompt,), data)

    def score(self, problems: dict[str, Problem], completions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for c in completions:
            targets = problems[c["problem"]].data["targets"]
            ok = matches(c["completion"], targets)
            out.append({"extracted": c["completion"].strip(), "verdict": ok,
                        "reason": "correct" if ok else f"no match with {targets[:3]}"})
        return out

    def summarize(self, problems: list[Problem], scored: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
        verdicts, n = verdicts_by_problem(problems, scored)
        by_task: dict[str, list[Problem]] = {}
        for p in problems:
            by_task.setdefault(p.data["task"], []).append(p)
        metrics: dict[str, float] = {}
        per_task: dict[str, dict[str, float]] = {}
        for task, items in by_task.items():
            counts = [(len(verdicts[p.id]), sum(verdicts[p.id])) for p in items if verdicts[p.id]]
            chance = task_chance([len(p.data["choices"]) for p in items], self.chance)
            raw = mean_pass_at_k(counts, powers_of_two(n))
            per_task[task] = {"chance": chance, "examples": len(items),
                              **{f"pass@{k}": v for k, v in raw.items()},
                              **{f"pass@{k}/normalised": normalise(v, chance) for k, v in raw.items()}}
        for key in next(iter(per_task.values()), {}):
            if key.startswith("pass@"):
                metrics[key] = sum(t[key] for t in per_task.values()) / len(per_task)
        headline = "pass@2/normalised" if "pass@2/normalised" in metrics else "pass@1/normalised"
        return {"metrics": metrics, "per_task": per_task, "tasks": list(by_task), "headline": headline}


@torch.no_grad()
def choice_logprobs(model, prompt: list[int], choices: list[list[int]]) -> list[float]:
    """Summed log-probability of each choice's ids after ``prompt`` (one forward over the padded choices;
    the prompt is cut from the left so that prompt + the longest choice fits the context)."""
    block = model.config.block_size
    longest = max(len(c) for c in choices)
    prompt = prompt[-max(1, block - longest):]
    rows = [prompt + c for c in choices]
    width = max(map(len, rows))
    device = next(model.parameters()).device
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row, device=device)
    logp = torch.log_softmax(model(ids).float(), dim=-1)
    scores = []
    for r, choice in enumerate(choices):
        positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(choice), device=device)
        targets = torch.tensor(choice, device=device)
        scores.append(float(logp[r, positions, targets].sum()))
    return scores


def choose(model, tokenizer, problem: Problem, prompt: list[int]) -> dict[str, Any]:
    """The log-probability mode's one "sample": the best-scoring choice as the completion."""
    choices = problem.data["choices"]
    scores = choice_logprobs(model, prompt, [tokenizer.encode(c) or [tokenizer.eot_id] for c in choices])
    best = max(range(len(choices)), key=scores.__getitem__)
    return {"completion": choices[best], "finish": "stop", "logprobs": scores}
