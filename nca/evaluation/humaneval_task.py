"""HumanEval as an ``nca evaluate`` task (docs/paper.md §7.2), on ``nca.evaluation.humaneval``'s problems,
prompt, stop strings and sandboxed execution.

Zero-shot on the raw prompt. Sampling stops at end-of-text or the first stop string (the reference never
stopped early and always generated 500 tokens; the completion it scored was cut at the same strings, so
the verdicts agree and only time is saved). Each completion is cut again with ``truncate`` before it runs,
so completions written by another sampler are scored the same way.
"""

from __future__ import annotations

from typing import Any, Optional

from nca.evaluation import humaneval
from nca.evaluation.passk import mean_pass_at_k, powers_of_two
from nca.evaluation.problems import Problem, verdicts_by_problem
from nca.evaluation.sandbox import resolve_isolation
from nca.evaluation.task import Sampling


class HumanEvalTask:
    """The 164 problems (``limit``: the first ones), scored ``workers`` programs at a time in the sandbox
    (``sandbox``: 'auto', 'bwrap', 'unshare', or 'none' to opt in to running them without namespaces)."""

    name = "humaneval"
    paper = Sampling(64, 0.4, 0.95, 500)  # docs/paper.md §7.2
    decoding = "sample"
    stop_at_eot = True

    def __init__(self, source: str, stops: str = "reference", workers: int = 2, timeout: float = 3.0,
                 limit: int | None = None, sandbox: str = "auto"):
        self.stop_strings = humaneval.stop_strings(stops)  # fails at once on an unknown variant
        self.source, self.stops, self.workers, self.timeout, self.limit = source, stops, workers, timeout, limit
        self.sandbox = sandbox
        self.isolation: Optional[str] = None  # what the sandbox uses here, once scoring starts
        self.raw: dict[str, dict] = {}

    def settings(self) -> dict[str, Any]:
        return {"source": self.source, "stops": self.stops, "timeout": self.timeout, "sandbox": self.sandbox}

    def notes(self) -> list[str]:
        return [f"sandbox: {self.isolation}"] if self.isolation else []

    def ready_to_score(self) -> None:
        """The sandbox this machine can make (one line naming bubblewrap when it can make none)."""
        self.isolation = resolve_isolation(self.sandbox)

    def problems(self) -> list[Problem]:
        self.raw = humaneval.load_problems(self.source)
        chosen = list(self.raw.values())[: self.limit]
        return [Problem(p["task_id"], i, (humaneval.prompt(p),)) for i, p in enumerate(chosen)]

    def score(self, problems: dict[str, Problem], completions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        programs = [humaneval.truncate(c["completion"], self.stop_strings) for c in completions]
        verdicts = humaneval.score(self.raw, [(c["problem"], int(c["sample"]), text)
                                              for c, text in zip(completions, programs)],
                                   workers=self.workers, timeout=self.timeout, isolation=self.isolation or self.sandbox)
        return [{"extracted": text, "verdict": bool(v.passed), "reason": v.reason} for text, v in zip(programs, verdicts)]

    def summarize(self, problems: list[Problem], scored: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
        verdicts, n = verdicts_by_problem(problems, scored)
        counts = [(len(v), sum(v)) for v in verdicts.values() if v]
        metrics = {f"pass@{k}": v for k, v in mean_pass_at_k(counts, powers_of_two(n)).items()}
        return {"metrics": metrics, "headline": "pass@1", "sandbox": self.isolation or self.sandbox}
