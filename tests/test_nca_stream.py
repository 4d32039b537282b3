import numpy as np
import pytest
import torch

from nca.automaton.complexity import Band, rule_ratios
from nca.automaton.config import NCAConfig
from nca.automaton.pool import RulePool
from nca.automaton.stream import NCAStream

SMALL = NCAConfig(n_states=4, grid=6, patch=2)


def test_same_seed_same_tokens_any_batch_size():
    s = NCAStream(SMALL, seq_len=64, band=(0.3, 1.0), seed=1)
    whole = s.rows(torch.arange(40))
    assert whole.shape == (40, 65)
    parts = torch.cat([NCAStream(SMALL, seq_len=64, band=(0.3, 1.0), seed=1).rows(torch.arange(i, i + 7)) for i in range(0, 40, 7)])
    assert torch.equal(parts[:40], whole)
    assert torch.equal(s.rows(torch.tensor([31, 5])), whole[[31, 5]])
    assert not torch.equal(NCAStream(SMALL, seq_len=64, band=(0.3, 1.0), seed=2).rows(torch.arange(40)), whole)


def test_every_sequence_is_one_rule_in_the_band():
    band = Band(0.3, 0.6)
    s = NCAStream(SMALL, seq_len=64, band=band, seed=0)
    b = s.batch(torch.arange(64))
    assert band.contains(b.ratios).all()
    assert np.allclose(rule_ratios(b.rule_ids, SMALL, 0), b.ratios)  # the recorded ratio is the rule's
    assert b.candidates >= 64 and len(set(b.rule_ids.tolist())) == 64
    assert (b.rule_ids % 2 == 0).all()
    val = NCAStream(SMALL, seq_len=64, band=band, seed=0, split="val").batch(torch.arange(64))
    assert (val.rule_ids % 2 == 1).all()


def test_rows_are_whole_frames_of_one_trajectory():
    s = NCAStream(SMALL, seq_len=64, band=None)
    rows = s.rows(torch.arange(4))
    tok = s.tokenizer
    frames = rows[:, : (65 // tok.frame_len) * tok.frame_len]
    grids = tok.decode(frames)  # raises if delimiters are misplaced
    assert grids.shape[1:] == (65 // tok.frame_len, 6, 6)


def test_pool_stream_gives_fresh_trajectories_of_the_pool_rules_each_epoch():
    pool = RulePool(8, SMALL, Band(0.3, 1.0), seed=0)
    s = NCAStream(SMALL, seq_len=64, band=(0.3, 1.0), seed=0, pool=pool)
    b0, b1 = s.batch(torch.arange(8)), s.batch(torch.arange(8, 16))
    assert sorted(b0.rule_ids.tolist()) == sorted(pool.ids.tolist()) == sorted(b1.rule_ids.tolist())
    same_rule_epoch1 = {r: i for i, r in enumerate(b1.rule_ids.tolist())}
    i0 = 0
    i1 = same_rule_epoch1[b0.rule_ids[i0].item()]
    assert not torch.equal(b0.rows[i0], b1.rows[i1])  # same rule, fresh initial state
    with pytest.raises(ValueError, match="cannot feed"):
        NCAStream(SMALL, pool=pool, split="val")
