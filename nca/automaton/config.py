"""The automaton's hyper-parameters in one place (defaults: the paper, docs/paper.md §1-2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class NCAConfig:
    """The automaton: every default is the paper's (docs/paper.md §1-2), and this is the one place it is written.

    Args:
        n_states: alphabet size n (cell states).
        grid: side of the periodic square grid.
        patch: side of the square patch that makes one token (n ** (patch ** 2) patch tokens).
        hidden: widths of the 3x3 conv and of the 1x1 conv before the ReLU.
        temperature: sampling temperature of each update (reference launch 1e-4; paper text 1e-3).
        identity_bias: logit bonus of a cell's current state.
        burn_in: steps discarded before the first recorded frame.
    """

    n_states: int = 10
    grid: int = 12
    patch: int = 2
    hidden: tuple[int, int] = (4, 16)  # 3x3 conv width, then 1x1 conv width before ReLU
    temperature: float = 1e-4  # reference launch; the paper's text says 1e-3
    identity_bias: float = 0.0
    burn_in: int = 10

    def __post_init__(self) -> None:
        problems = []
        if self.n_states < 2:
            problems.append(f"n_states must be >= 2, got {self.n_states}")
        if self.patch < 1 or self.grid < 3 or self.grid % self.patch:
            problems.append(f"grid ({self.grid}) must be >= 3 and a multiple of patch ({self.patch})")
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.burn_in < 0:
            problems.append(f"burn_in must be >= 0, got {self.burn_in}")
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            problems.append(f"hidden must be two positive widths, got {self.hidden}")
        if self.n_states ** (self.patch**2) + 2 > 2**31 - 1:
            problems.append(f"n_states**(patch**2) = {self.n_states}**{self.patch**2} patch tokens do not fit int32")
        if problems:
            raise ValueError("invalid NCA config: " + "; ".join(problems))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def to_dict(self) -> dict:
        return asdict(self)
