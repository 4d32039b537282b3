"""What ``nca evaluate`` needs of a benchmark: the `Task` protocol, and `Sampling`, the decoding settings
whose paper values (docs/paper.md §7) each task class carries as ``paper``.

`Task` is what every task implements (gsm8k, humaneval, bbl, perplexity); `SampledTask` adds what the runner
(``nca.evaluation.runner``) needs to generate, score and summarise samples of problems.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Optional, Protocol, runtime_checkable

from nca.evaluation.problems import Problem


@dataclass(frozen=True)
class Sampling:
    """How a sampled task is decoded: ``n`` samples per problem at ``temperature`` / ``top_p``, at most
    ``max_new_tokens`` each (cut at the model's context)."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int

    def __post_init__(self):
        if self.n < 1 or self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need n >= 1, max_new_tokens >= 1, temperature >= 0 and 0 < top_p <= 1; got {self}")

    def override(self, **values: Optional[float]) -> "Sampling":
        """These settings with every value that is not None replaced (the command line over the paper's)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


@runtime_checkable
class Task(Protocol):
    """A benchmark ``nca evaluate`` runs on a checkpoint."""

    name: str

    @property
    def paper(self) -> Optional[Sampling]:
        """The paper's decoding settings, the defaults (None when nothing is sampled: perplexity)."""

    def settings(self) -> dict[str, Any]:
        """What makes this evaluation this one: recorded in its folder, compared when it is resumed."""

    def notes(self) -> list[str]:
        """Lines printed once, after the data is read (BBL: the tasks used and those left out)."""


@runtime_checkable
class SampledTask(Task, Protocol):
    """A task scored from samples of its problems (gsm8k, humaneval, bbl)."""

    stop_at_eot: bool
    stop_strings: tuple[str, ...]

    @property
    def decoding(self) -> Literal["sample", "choose"]:
        """"sample": sampled replies; "choose": each choice scored by log-probability, the best one taken."""

    def problems(self) -> list[Problem]:
        """Read and check the data (before any model is loaded)."""

    def ready_to_score(self) -> None:
        """Fail now, in one line, when scoring cannot run here (HumanEval without a sandbox)."""

    def score(self, problems: dict[str, Problem], completions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One {"extracted", "verdict", "reason"} per completion."""

    def summarize(self, problems: list[Problem], scored: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
        """{"metrics": {...}, "headline": key, ...} from the scored samples of ``problems``."""
