"""A study's arms as labelled runs: which stage-1 source each stage-2 arm starts from, and what that source is
(kind, band, alphabet). Labels: ``scratch``, ``nca-50plus``, ``shuffled-50plus``, ``random``, ``dyck``, ``c4``,
``c4_10x``, ``c4_noreinit``, ``nca-50plus-reinit_attention``; an alphabet n other than the paper's 10 adds
``-n<n>`` after the band (``nca-50plus-n4``, ``random-n4``).

Alphabets: the gzip ratio of a rule depends on n (iid noise gives 0.67 at n = 10, 0.25 at n = 2), so a band
such as 50%+ is unreachable at n = 2. A band is therefore scaled by noise(n) / noise(10): the same complexity
relative to noise (50%+ at n = 2 keeps rules above 0.18, about 10% of them; at n = 10 it keeps 44%).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from nca.replication.config import PAPER_ALPHABET, STAGE1_OF_ARM, Study

BAND_RANGES = {"20-30": (0.2, 0.3), "30-40": (0.3, 0.4), "40-50": (0.4, 0.5), "50plus": (0.5, 1.0)}
ABLATIONS = ("reinit_attention", "reinit_mlp")


@dataclass(frozen=True)
class Source:
    """A stage-1 source: its label (and run-id part), kind (nca, shuffled, random, dyck, c4, c4_10x), band, n."""

    label: str
    kind: str
    band: Optional[str] = None
    n: int = PAPER_ALPHABET


@dataclass(frozen=True)
class Arm:
    """A stage-2 arm: its label, the study's arm name, its stage-1 source (None for scratch), its ablation."""

    label: str
    arm: str
    source: Optional[Source] = None
    ablation: Optional[str] = None


def _suffix(n: int) -> str:
    return "" if n == PAPER_ALPHABET else f"-n{n}"


def source_of(kind: str, band: Optional[str], n: int) -> Source:
    if kind in ("nca", "shuffled"):
        return Source(f"{kind}-{band}{_suffix(n)}", kind, band, n)
    if kind == "random":
        return Source(f"random{_suffix(n)}", kind, None, n)
    return Source(kind, kind)


def arms(study: Study) -> list[Arm]:
    """Every stage-2 arm in the study's order: bands x alphabets for the NCA-format arms; ablations use the
    first band and alphabet."""
    out = []
    for arm in study.arms:
        kind = STAGE1_OF_ARM[arm]
        if arm in ("nca", "shuffled_nca"):
            out += [Arm(s.label, arm, s) for band in study.bands for n in study.alphabets
                    for s in [source_of(kind, band, n)]]
        elif arm == "random_tokens":
            out += [Arm(s.label, arm, s) for n in study.alphabets for s in [source_of("random", None, n)]]
        elif arm.startswith("nca_"):
            source, ablation = source_of("nca", study.bands[0], study.alphabets[0]), arm.removeprefix("nca_")
            out.append(Arm(f"{source.label}-{ablation}", arm, source, ablation))
        else:
            out.append(Arm(arm, arm, None if kind is None else source_of(kind, None, PAPER_ALPHABET)))
    return out


def stage1_sources(study: Study) -> list[Source]:
    """The distinct stage-1 sources the arms need, NCA first."""
    seen: dict[str, Source] = {}
    for a in arms(study):
        if a.source is not None:
            seen.setdefault(a.source.label, a.source)
    order = {"nca": 0, "shuffled": 1, "random": 2, "dyck": 3, "c4": 4, "c4_10x": 5}
    return sorted(seen.values(), key=lambda s: order[s.kind])


@lru_cache(maxsize=None)
def noise_ratio(n: int) -> float:
    """Mean gzip ratio of iid uniform patch ids of alphabet n (10 frames of 36 patches, 64 draws, seed 0): the
    top of the complexity scale at that alphabet (0.67 at n = 10, as docs/paper.md §3 says)."""
    import numpy as np

    from nca.automaton.complexity import COMPLEXITY_FRAMES, gzip_ratio

    rng = np.random.default_rng(0)
    return float(np.mean([gzip_ratio(rng.integers(0, n**4, size=COMPLEXITY_FRAMES * 36)) for _ in range(64)]))


def band_range(band: str, n: int) -> Optional[list[float]]:
    """The gzip-ratio interval of a band at alphabet n; None when n is the paper's (the band file holds it)."""
    if n == PAPER_ALPHABET:
        return None
    lo, hi = BAND_RANGES[band]
    scale = noise_ratio(n) / noise_ratio(PAPER_ALPHABET)
    return [round(lo * scale, 3), 1.0 if hi >= 1.0 else round(hi * scale, 3)]


def comparisons(labels: list[str]) -> list[tuple[str, str]]:
    """(method, baseline) pairs: every arm against scratch; each NCA arm against its controls (the shuffled
    arm of its band and alphabet, the random arm of its alphabet: a positive difference = the dynamics did not
    help) and the other stage-1 sources; each shuffled control against the random arm of its alphabet (what each
    row's token statistics add to the format); each re-init ablation against the NCA arm it ablates."""
    def random_arm(rest: str) -> str:  # 'random' of the alphabet in a '<band>[-n<N>]' label rest
        n = rest.partition("-n")[2]
        return "random" + (f"-n{n}" if n else "")

    pairs = [(label, "scratch") for label in labels if label != "scratch"]
    nca = [label for label in labels if label.startswith("nca-") and not label.endswith(ABLATIONS)]
    for label in nca:
        rest = label.removeprefix("nca-")
        others = (f"shuffled-{rest}", random_arm(rest), "c4", "dyck", "c4_10x", "c4_noreinit")
        pairs += [(label, other) for other in others if other in labels]
    for label in labels:
        if label.startswith("shuffled-") and random_arm(label.removeprefix("shuffled-")) in labels:
            pairs.append((label, random_arm(label.removeprefix("shuffled-"))))
    for label in labels:
        if label.endswith(ABLATIONS):
            pairs.append((label, label.rsplit("-", 1)[0]))
    return pairs
