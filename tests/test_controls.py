"""Stage-1 controls (nca.datamodules.controls): the shuffled NCA keeps each sequence's tokens and destroys its
frame-to-frame structure; random tokens keep only the format. Both are deterministic by seed."""

from __future__ import annotations

import pytest
import torch

from nca.automaton.config import NCAConfig
from nca.datamodules.controls import RandomTokensDataModule, ShuffledNCADataModule
from nca.datamodules.nca import NCADataModule

BINARY = dict(nca=NCAConfig(n_states=2), seq_len=38 * 8 - 1, batch_size=4, band=[0.1, 1.0], val_rules=2, val_sequences=4,
              seed=3, generate_group=4)  # 8 frames of a binary automaton: 3x3 neighbourhoods repeat, so the rule can be checked


def determinism(tokenizer, rows: torch.Tensor) -> torch.Tensor:
    """Per row: the share of cells whose next state is the majority next state of their 3x3 neighbourhood in the
    previous frame (1.0 = the next frame is a function of the previous one, as an NCA rule makes it)."""
    grids = tokenizer.decode(rows[:, : rows.shape[1] // tokenizer.frame_len * tokenizer.frame_len])
    out = []
    for grid in grids:
        prev, nxt = grid[:-1], grid[1:]
        hood = torch.stack([torch.roll(prev, (dy, dx), (-2, -1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], -1)
        key = (hood * 2 ** torch.arange(9)).sum(-1).flatten() * 2 + nxt.flatten()
        counts = torch.bincount(key, minlength=1024).view(512, 2)
        out.append(counts.max(1).values.sum() / nxt.numel())
    return torch.stack(out).float()


def test_shuffled_nca_keeps_each_sequences_tokens_and_destroys_its_dynamics():
    nca, shuffled = NCADataModule(**BINARY), ShuffledNCADataModule(**BINARY)
    index = torch.arange(24)
    real, mixed = nca.stream("train").rows(index), shuffled.stream("train").rows(index)
    assert torch.equal(real.sort(1).values, mixed.sort(1).values)  # the same tokens in every sequence
    delimiters = real >= nca.tokenizer.start_id
    assert torch.equal(delimiters, mixed >= nca.tokenizer.start_id) and torch.equal(real[delimiters], mixed[delimiters])
    assert (real != mixed).any(1).all()  # every row is reordered
    assert determinism(nca.tokenizer, real).min() == 1.0  # each NCA frame follows from the previous by the rule
    assert determinism(nca.tokenizer, mixed).max() < 0.9  # the shuffled frames do not
    assert torch.equal(shuffled.stream("train").rows(index), mixed)  # deterministic
    other = ShuffledNCADataModule(**{**BINARY, "seed": 4}).stream("train").rows(index)
    assert not torch.equal(other, mixed)
    real_batch, mixed_batch = next(iter(nca.train_dataloader())), next(iter(shuffled.train_dataloader()))
    assert torch.equal(real_batch["labels"] == -100, mixed_batch["labels"] == -100)  # the same supervised targets


def test_random_tokens_are_uniform_in_the_nca_layout_and_deterministic():
    data = RandomTokensDataModule(**{**BINARY, "nca": NCAConfig(n_states=4), "seq_len": 38 * 20 - 1})
    tok = data.tokenizer
    train, val = data.stream("train").rows(torch.arange(32)), data.stream("val").rows(torch.arange(32))
    frames = tok.decode(train)  # strict: delimiters exactly where the NCA puts them
    assert frames.shape == (32, 20, 12, 12) and int(train[train < tok.start_id].max()) < tok.start_id
    counts = torch.bincount(train[train < tok.start_id], minlength=tok.start_id).float()
    assert counts.std() / counts.mean() < 0.2  # 256 ids, ~86 draws each: uniform within sampling noise
    assert torch.equal(data.stream("train").rows(torch.arange(32)), train) and not torch.equal(train, val)
    assert data.vocab_size == 4**4 + 2


def test_controls_refuse_a_pregenerated_corpus():
    for cls in (ShuffledNCADataModule, RandomTokensDataModule):
        data = cls(**BINARY)
        data.corpus = "corpus/"  # as if given: an NCA corpus holds the real dynamics, not the control
        with pytest.raises(ValueError, match="on the fly: remove data.init_args.corpus"):
            data.source("train")
