"""What every evaluation task hands the runner: problems with a prompt and what is needed to score them, and
how a prompt is fitted into the model's context without cutting the question."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Problem:
    """One benchmark item.

    ``prompt`` is a tuple of text pieces: exemplars first (the earliest is the first to go when the prompt does
    not fit), the question last. ``separator`` None joins them with the end-of-text token (few-shot exemplars
    closed by end-of-text, as in the GSM8K fine-tuning rows); a string joins their text with it (BBL's
    exemplars end in a blank line). ``index`` is its stable position in the full problem list, the prompt id
    that makes its samples a pure function of (seed, index, sample)."""

    id: str
    index: int
    prompt: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict, compare=False)
    separator: Optional[str] = None


@dataclass(frozen=True)
class Fitted:
    """A prompt as it goes to the model: its ids (None when the problem is skipped), how many leading exemplars
    were dropped and the reply budget left; ``reason`` says why a problem was skipped."""

    ids: Optional[list[int]]
    exemplars_dropped: int
    reply_budget: int
    reply_asked: int
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return self.ids is None

    def record(self) -> dict[str, Any]:
        """What a completion record keeps of the fitting (recorded per sample)."""
        return {"exemplars_dropped": self.exemplars_dropped, "reply_budget": self.reply_budget,
                "reply_shortened": self.reply_budget < self.reply_asked}


def encode_pieces(problem: Problem, tokenizer, first: int = 0) -> list[int]:
    """The ids of the prompt from piece ``first`` on (earlier exemplars left out)."""
    pieces = problem.prompt[first:]
    if problem.separator is not None:
        return tokenizer.encode(problem.separator.join(pieces))
    return [t for n, piece in enumerate(pieces) for t in ([tokenizer.eot_id] if n else []) + tokenizer.encode(piece)]


def fit_prompt(problem: Problem, tokenizer, context: int, reply: int, min_reply: int = 1) -> Fitted:
    """The prompt in ``context`` positions with room for ``reply`` new tokens, never cut inside the question:
    the earliest exemplars are dropped first, then the reply budget is shortened, down to ``min_reply``; a
    problem whose question alone leaves less than ``min_reply`` is skipped (``Fitted.ids`` None)."""
    last = len(problem.prompt) - 1
    for dropped in range(last + 1):
        ids = encode_pieces(problem, tokenizer, dropped)
        if len(ids) + reply <= context:
            return Fitted(ids, dropped, reply, reply)
    room = context - len(ids)
    if room >= min_reply:
        return Fitted(ids, last, room, reply)
    return Fitted(None, last, 0, reply, f"the question alone is {len(ids)} tokens; with {min_reply} for the reply it "
                                 f"does not fit the model's context of {context}")


def verdicts_by_problem(problems: list[Problem], scored: dict) -> tuple[dict[str, list[bool]], int]:
    """Each problem's verdicts from the score log (keyed (problem id, sample index)), and the fewest samples any
    problem has: the largest k every problem can estimate."""
    verdicts: dict[str, list[bool]] = {p.id: [] for p in problems}
    for (pid, _), record in scored.items():
        if pid in verdicts:
            verdicts[pid].append(bool(record["verdict"]))
    return verdicts, min((len(v) for v in verdicts.values()), default=0)
