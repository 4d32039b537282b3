"""What every evaluation task hands the runner: problems with a prompt and what is needed to score them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One benchmark item.

    ``prompt`` is a list of text pieces joined by the end-of-text token (few-shot exemplars closed by
    end-of-text, as in the fine-tuning rows); ``index`` is its stable position in the full problem list,
    the prompt id that makes its samples a pure function of (seed, index, sample)."""

    id: str
    index: int
    prompt: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict, compare=False)


def prompt_ids(problem: Problem, tokenizer, max_len: int | None = None) -> list[int]:
    """The prompt's ids (pieces separated by end-of-text). Past ``max_len`` ids, whole leading pieces (the
    earliest exemplars) are dropped first; then only the last ``max_len`` ids of what is left are kept."""
    pieces = [tokenizer.encode(piece) for piece in problem.prompt]
    size = lambda: sum(map(len, pieces)) + len(pieces) - 1  # noqa: E731
    while max_len is not None and len(pieces) > 1 and size() > max_len:
        pieces.pop(0)
    ids = [t for n, piece in enumerate(pieces) for t in ([tokenizer.eot_id] if n else []) + piece]
    return ids[-max_len:] if max_len is not None and len(ids) > max_len else ids


def verdicts_by_problem(problems: list[Problem], scored: dict) -> tuple[dict[str, list[bool]], int]:
    """Each problem's verdicts from the score log (keyed (problem id, sample index)), and the fewest samples any
    problem has: the largest k every problem can estimate."""
    verdicts: dict[str, list[bool]] = {p.id: [] for p in problems}
    for (pid, _), record in scored.items():
        if pid in verdicts:
            verdicts[pid].append(bool(record["verdict"]))
    return verdicts, min((len(v) for v in verdicts.values()), default=0)
