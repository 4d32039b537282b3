"""BIG-bench Lite evaluation (docs/paper.md §7.3): generative exact match or log-probability choice.

Problems: the validation side of the split of ``nca.datamodules.bbl_tasks`` (at most 350 per task) of the
reference's 18 English tasks (``task_list="english"``: the 20), each prompt led by 2 fixed exemplars of its
task (the first two training examples in hash order), "{prompt}{answer}\\n\\n". ``shuffle_choices=SEED``
presents every example's choices in a seeded order (in two tasks the first choice is correct unusually often).

Modes:
  generate  sampled replies (stopped at end-of-text or a blank line, the exemplar separator), correct when
            the lower-cased, stripped reply equals any correct target;
  logprob   each choice scored by its summed log-probability after the prompt, the best one taken (one
            "sample" per problem; free-form examples have no choices and are left out).

Two normalisations of pass@k per task, each averaged over tasks (C = an example's number of choices, 0 for
free-form examples, whose raw score is used):
  paper            max(0, (pass@k - 1/C) / (1 - 1/C)), 1/C the mean over the task's examples (``chance="first"``:
                   its first example's, as the reference): the reference's formula, kept for comparison. At
                   k >= 2 a uniform guesser scores above 0 on it (about 0.31 at pass@2 on BBL).
  chance_corrected (pass@k - c_k) / (1 - c_k) per example, c_k = 1 - (1 - 1/C)^k the pass@k of a uniform
                   guesser, averaged over the task's examples and not floored: 0 for guessing, 1 for always
                   right, negative below chance. The headline (pass@2/chance_corrected). Reported for the k at
                   which every task's mean c_k is at most ``MAX_CHANCE`` (beyond, guessing alone nearly always
                   passes and the estimate's spread grows as 1 / (1 - c_k)); at k = 2 that holds for any C >= 2.
(The reference's other defects, replies never stored and skipped examples scored 1.0, are not reproduced.)
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from nca.datamodules.bbl_tasks import BBLExample, load_tasks, split_tasks, task_list
from nca.evaluation.passk import mean_pass_at_k, pass_at_k, powers_of_two
from nca.evaluation.problems import Problem, verdicts_by_problem
from nca.evaluation.task import Sampling

EXEMPLARS = 2
MAX_CHANCE = 0.9
NORMALISATIONS = {
    "paper": "max(0, (pass@k - 1/C) / (1 - 1/C)) per task, 1/C averaged over its examples (chance='first': its "
             "first example's), free-form tasks raw; mean over tasks. The reference's formula, for comparison: "
             "a uniform guesser scores above 0 at k >= 2",
    "chance_corrected": "(pass@k - c_k) / (1 - c_k) per example, c_k = 1 - (1 - 1/C)^k (a uniform guesser's "
                        "pass@k; 0 for free-form), averaged over the task's examples, not floored; mean over "
                        f"tasks, for the k at which every task's mean c_k <= {MAX_CHANCE}. 0 = guessing; the headline",
}


def normalise(score: float, chance: float) -> float:
    """The paper's normalisation, floored at 0; the raw score when chance is 0 (free-form)."""
    return max(0.0, (score - chance) / (1.0 - chance)) if chance > 0 else score


def task_chance(choice_counts: list[int], rule: str = "example") -> float:
    """Chance level of a task from its examples' choice counts (0 = free-form): the mean of 1/C ("example")
    or 1/C of the first example ("first", the reference)."""
    if not choice_counts:
        return 0.0
    inverse = [1.0 / c if c else 0.0 for c in choice_counts]
    return inverse[0] if rule == "first" else sum(inverse) / len(inverse)


def guess_rate(choices: int, k: int) -> float:
    """c_k: the chance that at least one of k uniform guesses among ``choices`` is right (0 when free-form)."""
    return 1.0 - (1.0 - 1.0 / choices) ** k if choices else 0.0


def chance_corrected(samples: int, correct: int, choices: int, k: int) -> Optional[float]:
    """(pass@k - c_k) / (1 - c_k) of one example; None when it cannot be told from guessing (one choice)."""
    rate = guess_rate(choices, k)
    return None if rate >= 1.0 else (pass_at_k(samples, correct, k) - rate) / (1.0 - rate)


def matches(reply: str, targets: list[str]) -> bool:
    return reply.strip().lower() in {t.strip().lower() for t in targets}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


class BBLTask:
    """BBL validation problems of the reference's English tasks (or ``tasks``); ``limit`` caps problems per task."""

    name = "bbl"
    stop_at_eot = True
    stop_strings: tuple[str, ...] = ("\n\n",)

    def __init__(self, source: str, mode: str = "generate", chance: str = "example", tasks: list[str] | None = None,
                 max_per_task: int = 350, val_fraction: float = 0.2, min_train_examples: int = 100,
                 limit: int | None = None, task_list_name: str = "reference", shuffle_choices: int | None = None):
        if mode not in ("generate", "logprob") or chance not in ("example", "first"):
            raise ValueError("mode must be 'generate' or 'logprob' and chance 'example' or 'first'")
        self.source, self.mode, self.chance, self.tasks = source, mode, chance, (tuple(tasks) if tasks else None)
        self.task_list, self.default_tasks = task_list_name, task_list(task_list_name)
        self.max_per_task, self.val_fraction, self.min_train_examples = max_per_task, val_fraction, min_train_examples
        self.limit, self.shuffle_choices = limit, shuffle_choices
        self.used_tasks: list[str] = []
        self.left_out: dict[str, str] = {}

    @property
    def paper(self) -> Sampling:
        """64 samples at T 0.4, top-p 0.95, 35 new tokens; the logprob mode makes one choice per problem."""
        return Sampling(1, 0.0, 1.0, 1) if self.mode == "logprob" else Sampling(64, 0.4, 0.95, 35)

    @property
    def decoding(self) -> Literal["sample", "choose"]:
        return "choose" if self.mode == "logprob" else "sample"

    def settings(self) -> dict[str, Any]:
        return {"source": self.source, "mode": self.mode, "chance": self.chance, "task_list": self.task_list,
                "tasks": list(self.tasks or self.default_tasks), "max_per_task": self.max_per_task,
                "val_fraction": self.val_fraction, "min_train_examples": self.min_train_examples,
                "shuffle_choices": self.shuffle_choices}

    def _shown(self, example: BBLExample) -> BBLExample:
        return example if self.shuffle_choices is None else example.shuffled(self.shuffle_choices)

    def problems(self) -> list[Problem]:
        self.left_out = {}
        splits = split_tasks(load_tasks(self.source, self.tasks, self.default_tasks), self.val_fraction,
                             self.max_per_task, self.min_train_examples, dropped=self.left_out)
        problems: list[Problem] = []
        for task, (train, val) in splits.items():
            shots = tuple(self._shown(e).exemplar for e in train[:EXEMPLARS])
            chosen = [e for e in val if self.mode == "generate" or e.choices]
            if not chosen:
                self.left_out[task] = "free-form: nothing to choose in logprob mode"
            for i, example in enumerate(chosen[: self.limit]):
                problems.append(self._problem(f"{task}/{i}", len(problems), shots, self._shown(example)))
        self.used_tasks = list(dict.fromkeys(p.data["task"] for p in problems))
        return problems

    @staticmethod
    def _problem(pid: str, index: int, shots: tuple[str, ...], example: BBLExample) -> Problem:
        data = {"task": example.task, "targets": list(example.targets), "choices": list(example.choices)}
        return Problem(pid, index, (*shots, example.prompt), data, separator="")

    def notes(self) -> list[str]:
        lines = [f"bbl tasks ({len(self.used_tasks)}): {', '.join(self.used_tasks)}"]
        if self.left_out:
            lines.append("left out: " + "; ".join(f"{t} ({why})" for t, why in self.left_out.items()))
        return lines

    def ready_to_score(self) -> None:
        return None

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
            if verdicts[p.id]:
                by_task.setdefault(p.data["task"], []).append(p)
        per_task = {task: self._task_row(items, verdicts, powers_of_two(n)) for task, items in by_task.items()}
        keys = [k for k in next(iter(per_task.values()), {}) if k.startswith("pass@")]
        metrics = {k: mean([row[k] for row in per_task.values()]) for k in keys
                   if all(k in row for row in per_task.values())}
        k = 2 if "pass@2/chance_corrected" in metrics else 1
        return {"metrics": metrics, "per_task": per_task, "tasks": list(per_task),
                "headline": f"pass@{k}/chance_corrected", "normalisations": NORMALISATIONS,
                "per_task_columns": ["chance", "pass@1", f"pass@{k}/paper", f"pass@{k}/chance_corrected"]}

    def _task_row(self, items: list[Problem], verdicts: dict[str, list[bool]], ks: list[int]) -> dict[str, float]:
        counts = [(len(verdicts[p.id]), sum(verdicts[p.id]), len(p.data["choices"])) for p in items]
        chance = task_chance([c for _, _, c in counts], self.chance)
        row: dict[str, float] = {"chance": chance, "examples": len(items)}
        for k, raw in mean_pass_at_k([(n, c) for n, c, _ in counts], ks).items():
            corrected = [v for n, c, C in counts if (v := chance_corrected(n, c, C, k)) is not None]
            row[f"pass@{k}"] = raw
            row[f"pass@{k}/paper"] = normalise(raw, chance)
            if corrected and mean([guess_rate(C, k) for _, _, C in counts]) <= MAX_CHANCE:
                row[f"pass@{k}/chance_corrected"] = mean(corrected)
        return row


def choice_logprobs(model, prompt: list[int], choices: list[list[int]]) -> list[float]:
    """Summed log-probability of each choice's ids after ``prompt`` (one forward over the padded choices);
    the prompt was fitted so that it and the longest choice fit the context (``problems.fit_prompt``)."""
    import torch

    if len(prompt) + max(map(len, choices)) > model.config.block_size:
        raise ValueError("the prompt and its longest choice do not fit the context: fit the prompt first")
    rows = [prompt + c for c in choices]
    width = max(map(len, rows))
    device = next(model.parameters()).device
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row, device=device)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).float(), dim=-1)
    scores = []
    for r, choice in enumerate(choices):
        positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(choice), device=device)
        targets = torch.tensor(choice, device=device)
        scores.append(float(logp[r, positions, targets].sum()))
    return scores


def choose_answer(model, problem: Problem, prompt: list[int], choices: list[list[int]]) -> dict[str, Any]:
    """The log-probability mode's one "sample": the best-scoring choice as the completion."""
    scores = choice_logprobs(model, prompt, choices)
    best = max(range(len(choices)), key=scores.__getitem__)
    return {"completion": problem.data["choices"][best], "finish": "stop", "logprobs": scores}
