import numpy as np
import pytest
import torch

from nca.automaton.complexity import Band, BandUnreachable, gzip_ratio, rule_ratios
from nca.automaton.config import NCAConfig
from nca.automaton.pool import RulePool
from nca.automaton.stream import NCAStream

SMALL = NCAConfig(n_states=4, grid=6, patch=2)


def test_gzip_ratio_matches_the_reference_scale():
    rng = np.random.default_rng(0)
    assert abs(gzip_ratio(rng.integers(0, 10000, 360)) - 0.67) < 0.02  # uniform random ids
    assert abs(gzip_ratio(np.tile(rng.integers(0, 10000, 36), 10)) - 0.12) < 0.02  # frozen frame
    assert gzip_ratio(np.full(360, 5)) < 0.03  # constant grid
    assert gzip_ratio(np.arange(4, dtype="<i4").tobytes()) == gzip_ratio(np.arange(4))
    with pytest.raises(ValueError):
        gzip_ratio(b"")


def test_reference_rules_reproduce_the_published_ratio_distribution():
    """Spec section 3: quantiles 0.02/0.28/0.49/0.57/0.62 and 46% in (0.5, 1.0) over 1,024 rules."""
    r = rule_ratios(torch.arange(1024) * 2, NCAConfig(), seed=0)
    q = np.quantile(r, [0.05, 0.25, 0.5, 0.75, 0.95])
    assert np.allclose(q, [0.02, 0.28, 0.49, 0.57, 0.62], atol=0.04), q
    assert 0.40 < Band(0.5, 1.0).contains(r).mean() < 0.52


@pytest.mark.parametrize("text,lo,hi", [("50+", 0.5, 1.0), ("30-40", 0.3, 0.4), ("0.2-0.3", 0.2, 0.3), ("50%+", 0.5, 1.0)])
def test_band_parsing(text, lo, hi):
    assert Band.parse(text) == Band(lo, hi)
    assert Band.parse([lo, hi]) == Band(lo, hi)
    assert Band.parse(None) is None


def test_impossible_band_is_a_clear_error():
    with pytest.raises(ValueError, match="impossible band"):
        Band.parse([0.6, 0.5])


def test_unreachable_band_stops_with_an_explanation():
    with pytest.raises(BandUnreachable, match="Widen the band"):
        RulePool(4, SMALL, Band(0.97, 0.99), batch=1024)
    with pytest.raises(BandUnreachable, match="Widen the band"):
        NCAStream(SMALL, seq_len=32, band=(0.97, 0.99)).rows(torch.arange(8))


def test_pool_respects_the_band_and_is_independent_of_batching():
    band = Band(0.3, 0.6)
    pool = RulePool(50, SMALL, band, seed=3, batch=64)
    assert len(pool) == 50 and band.contains(pool.ratios).all()
    assert np.allclose(rule_ratios(pool.ids, SMALL, 3), pool.ratios)
    assert torch.equal(RulePool(50, SMALL, band, seed=3, batch=256).ids, pool.ids)
    assert (pool.ids % 2 == 0).all()
    val = RulePool(50, SMALL, band, seed=3, split="val", batch=64)
    assert (val.ids % 2 == 1).all() and not set(val.ids.tolist()) & set(pool.ids.tolist())
    assert pool.stats()["rules"] == 50 and 0 < pool.acceptance <= 1
