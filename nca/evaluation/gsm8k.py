"""GSM8K evaluation (docs/paper.md §7.1): few-shot prompts from TRAIN, answer extraction, math-verify scoring.

Prompt: 3 exemplars rendered as in fine-tuning ("Question:\\n...\\nAnswer:\\n...\\nFinal Answer: N"), each
closed by end-of-text, then "Question:\\n{question}\\nAnswer:\\n". The exemplars of problem i are a pure
function of (seed, i), drawn from the train split (``exemplar_split="test"`` reproduces the reference, which
drew them from the test split it scores). ``prompt_style="release"`` ends the prompt after the question line,
as the reference did (our fine-tuning rows mask "Answer:\\n" as prompt, so by default it is given).

A reply is the text up to end-of-text. Three extractions are reported side by side:
  strict     the number after the last "Final Answer:" or "####" (the fine-tuning format): THE HEADLINE,
             pass@1/strict (``HEADLINE_RULE``);
  flexible   the last number anywhere in the reply;
  last_word  the last whitespace-separated word (the paper's and the reference's rule).
A number may carry a sign (also the Unicode minus), "$", thousands separators ("1,234", "1 234", thin
spaces), decimals, an exponent ("4.2e1") and a denominator ("4/2"). Plain numbers are compared exactly
(Decimal), anything else (fractions) by math-verify (``parse``/``verify``).
A reply that never produced end-of-text (cut at max_new_tokens or the context) is scored wrong: its last
words are wherever generation stopped, not an answer. ``score_truncated=True`` scores it anyway, as the
reference did.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from nca.datamodules.gsm8k_format import GSM8KExample, load_split, pick_exemplars
from nca.evaluation.passk import mean_pass_at_k, powers_of_two
from nca.evaluation.problems import Problem
from nca.evaluation.task import Sampling

MODES = ("strict", "flexible", "last_word")
HEADLINE = "pass@1/strict"
HEADLINE_RULE = ("strict: the number after the last 'Final Answer:' (or '####') of a reply that ended with "
                 "end-of-text, compared with the gold number exactly or by math-verify. The paper's rule, the "
                 "reply's last word, is pass@1/last_word beside it")
GROUPED = r"\d{1,3}(?:[,\u00a0\u2009\u202f ]\d{3}(?!\d))+"  # 1,234 / 1 234 / thin or no-break spaces
NUMBER = re.compile(rf"(-)?\s?\$?\s?((?:{GROUPED}|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
                    r"(?:\s?/\s?(\d+)(?![\d.]))?")
FINAL = re.compile(r"(?:Final Answer:|####)([^\n]*)")
MINUS = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-"})  # minus signs that are no ASCII hyphen


def _number(match: re.Match) -> str:
    digits = re.sub(r"[,\u00a0\u2009\u202f ]", "", match.group(2))
    return (match.group(1) or "") + digits + (f"/{match.group(3)}" if match.group(3) else "")


def extract_strict(reply: str) -> str | None:
    """The first number after the last "Final Answer:" / "####" on its line, or None."""
    finals = FINAL.findall(reply.translate(MINUS))
    if not finals:
        return None
    match = NUMBER.search(finals[-1])
    return _number(match) if match else None


def extract_flexible(reply: str) -> str | None:
    """The last number of the reply, or None."""
    matches = list(NUMBER.finditer(reply.translate(MINUS)))
    return _number(matches[-1]) if matches else None


def extract_last_word(reply: str) -> str | None:
    """The reply's last whitespace-separated word, trailing punctuation and "$"/"," removed (the reference)."""
    words = reply.translate(MINUS).split()
    if not words:
        return None
    return words[-1].rstrip(".!?;:").replace(",", "").replace("$", "") or None


EXTRACT = {"strict": extract_strict, "flexible": extract_flexible, "last_word": extract_last_word}


@lru_cache(maxsize=65536)
def is_equivalent(gold: str, answer: str | None) -> bool:
    """math-verify's equivalence of the gold number and an extracted answer (False when it cannot parse).

    Two plain decimal numbers (exponents too) are compared exactly (Decimal), which is math-verify's verdict on
    them too at a small fraction of its cost (~10 ms a call through sympy); anything else (a fraction such as
    "4/2") goes to math-verify."""
    if answer is None:
        return False
    try:
        return Decimal(gold) == Decimal(answer)
    except InvalidOperation:
        pass
    from math_verify import parse, verify

    try:
        return bool(verify(parse(gold), parse(answer)))
    except Exception:  # math-verify raises on odd input (and times out); either way not a correct answer
        return False


def score_reply(gold: str, reply: str, finished: bool, score_truncated: bool = False) -> dict[str, Any]:
    """Extracted answers, verdicts per mode and the strict verdict's reason."""
    extracted = {mode: EXTRACT[mode](reply) for mode in MODES}
    scorable = finished or score_truncated
    verdict = {mode: scorable and is_equivalent(gold, extracted[mode]) for mode in MODES}
    if not scorable:
        reason = "no end-of-text (cut at max_new_tokens or the context)"
    elif extracted["strict"] is None:
        reason = "no 'Final Answer:' number"
    else:
        reason = "correct" if verdict["strict"] else f"wrong: {extracted['strict']} != {gold}"
    return {"extracted": extracted, "verdict": verdict, "reason": reason}


class GSM8KTask:
    """The 1,319 test questions (``limit``: the first ones) with few-shot prompts."""

    name = "gsm8k"
    paper = Sampling(32, 0.6, 1.0, 250)  # docs/paper.md §7.1
    decoding = "sample"
    stop_at_eot = True
    stop_strings: tuple[str, ...] = ()

    def __init__(self, source: str, exemplars: int = 3, exemplar_split: str = "train", prompt_style: str = "paper",
                 score_truncated: bool = False, seed: int = 0, limit: int | None = None):
        if exemplar_split not in ("train", "test") or prompt_style not in ("paper", "release"):
            raise ValueError("exemplar_split must be 'train' or 'test' and prompt_style 'paper' or 'release'")
        self.source, self.exemplars, self.exemplar_split = source, exemplars, exemplar_split
        self.prompt_style, self.score_truncated, self.seed, self.limit = prompt_style, score_truncated, seed, limit

    def settings(self) -> dict[str, Any]:
        return {"source": self.source, "exemplars": self.exemplars, "exemplar_split": self.exemplar_split,
                "prompt_style": self.prompt_style, "score_truncated": self.score_truncated}

    def notes(self) -> list[str]:
        return [f"headline: {HEADLINE} ({HEADLINE_RULE})"]

    def ready_to_score(self) -> None:
        return None

    def problems(self) -> list[Problem]:
        test = load_split(self.source, "test")
        pool = test if self.exemplar_split == "test" else load_split(self.source, "train")
        chosen = test if self.limit is None else test[: self.limit]
        return [self._problem(i, e, pool) for i, e in enumerate(chosen)]

    def _problem(self, index: int, example: GSM8KExample, pool: list[GSM8KExample]) -> Problem:
        picks = pick_exemplars(len(pool), self.exemplars, (self.seed, 2, index),
                               exclude=index if self.exemplar_split == "test" else None)
        shots = [pool[j].prompt + pool[j].answer for j in picks]
        question = example.prompt if self.prompt_style == "paper" else f"Question:\n{example.question}\n"
        return Problem(f"test/{index}", index, (*shots, question), {"gold": example.number})

    def score(self, problems: dict[str, Problem], completions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [score_reply(problems[c["problem"]].data["gold"], c["completion"], c["finish"] == "stop",
                            self.score_truncated) for c in completions]

    def summarize(self, problems: list[Problem], scored: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
        per_problem: dict[str, list[dict]] = {p.id: [] for p in problems}
        for (pid, _), record in scored.items():
            if pid in per_problem:
                per_problem[pid].append(record)
        n = min((len(v) for v in per_problem.values()), default=0)
        metrics = {}
        for mode in MODES:
            counts = [(len(v), sum(r["verdict"][mode] for r in v)) for v in per_problem.values() if v]
            for k, value in mean_pass_at_k(counts, powers_of_two(n)).items():
                metrics[f"pass@{k}/{mode}"] = value
        finished = [r["finish"] == "stop" for v in per_problem.values() for r in v]
        metrics["finished_fraction"] = sum(finished) / max(1, len(finished))
        return {"metrics": metrics, "headline": HEADLINE, "headline_rule": HEADLINE_RULE}
