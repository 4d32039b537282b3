import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nca.datamodules.dyck import DyckDataModule, DyckSource, dyck_row, split_words
from nca.datamodules.streaming import NumberedBatches


def check_word(word, k, max_depth):
    """A word is balanced, closes match their opens, and its depth lies in 1..max_depth."""
    stack, deepest = [], 0
    for token in word:
        assert 0 <= token < 2 * k
        if token < k:
            stack.append(token)
            deepest = max(deepest, len(stack))
        else:
            assert stack and stack.pop() == token - k, f"unmatched close {token} in {word}"
    assert not stack, f"unbalanced word {word}"
    assert 1 <= deepest <= max_depth
    return deepest


@pytest.mark.parametrize("length", [1025, 1024, 66, 3])
def test_rows_are_bos_then_complete_words(length):
    k, max_depth = 64, 16
    rng = np.random.default_rng(0)
    depths = []
    for _ in range(20):
        row = dyck_row(rng, length, k=k, max_depth=max_depth)
        assert row.shape == (length,) and row.dtype == np.int64
        assert row[0] == 2 * k
        body = row[1:-1] if length % 2 == 0 else row[1:]
        if length % 2 == 0:
            assert row[-1] == 2 * k
        assert (body < 2 * k).all()
        words = split_words(body, k)
        assert sum(map(len, words)) == len(body)
        depths += [check_word(w, k, max_depth) for w in words]
    if length > 100:
        assert max(depths) > 4 and min(depths) == 1  # the walk actually explores depth


def test_max_depth_is_reached_and_never_exceeded():
    rng = np.random.default_rng(1)
    words = [w for _ in range(20) for w in split_words(dyck_row(rng, 513, k=4, max_depth=3, p_open=0.9), 4)]
    depths = [check_word(w, 4, 3) for w in words]
    assert max(depths) == 3


def test_bracket_types_cover_k():
    row = dyck_row(np.random.default_rng(2), 4097, k=64)
    opens = set(row[(row < 64)].tolist())
    assert len(opens) == 64


def test_batches_follow_contract_and_vocab():
    dm = DyckDataModule(seq_len=32, batch_size=4, num_workers=0)
    assert dm.vocab_size == 129 and dm.bos_id == 128
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 32) and batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])
    assert (batch["labels"] != -100).all()
    assert batch["input_ids"].max() < dm.vocab_size


def test_odd_seq_len_masks_the_padding_target():
    sample = DyckSource(seq_len=33, batch_size=1).sample(0)
    assert sample["input_ids"].shape == (33,)
    assert sample["labels"][-1] == -100 and (sample["labels"][:-1] != -100).all()


def take(loader, n):
    it = iter(loader)
    return [next(it)["input_ids"] for _ in range(n)]


def test_stream_is_deterministic_and_seeded():
    a = DyckSource(16, 2, seed=5)
    assert torch.equal(a.sample(3)["input_ids"], DyckSource(16, 2, seed=5).sample(3)["input_ids"])
    assert not torch.equal(a.sample(3)["input_ids"], DyckSource(16, 2, seed=6).sample(3)["input_ids"])
    assert not torch.equal(a.sample(3)["input_ids"], DyckSource(16, 2, seed=5, domain=1).sample(3)["input_ids"])


def test_workers_produce_disjoint_batches_in_stream_order():
    one = take(DataLoader(NumberedBatches(DyckSource(64, 3, seed=1)), batch_size=None, num_workers=0), 6)
    two = take(DataLoader(NumberedBatches(DyckSource(64, 3, seed=1)), batch_size=None, num_workers=2), 6)
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    rows = {tuple(r.tolist()) for batch in two for r in batch}
    assert len(rows) == 18  # no sample repeated across workers


def test_validation_is_fixed_and_separate_from_training():
    dm = DyckDataModule(seq_len=64, batch_size=2, num_workers=0, val_batches=3)
    first, again = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert len(first) == 3
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again))
    train = {tuple(r.tolist()) for b in take(dm.train_dataloader(), 3) for r in b}
    assert not train & {tuple(r.tolist()) for b in first for r in b["input_ids"]}


def test_state_dict_round_trip_and_batch_size_check():
    dm = DyckDataModule(seq_len=16, batch_size=2, num_workers=0)
    dm.load_state_dict({"train_batches": 7, "batch_size": 2})
    other = DyckDataModule(seq_len=16, batch_size=2, num_workers=0)
    other.load_state_dict(dm.state_dict())
    assert torch.equal(take(other.train_dataloader(), 1)[0], torch.stack(
        [DyckSource(16, 2).sample(i)["input_ids"] for i in (14, 15)]))
    with pytest.raises(ValueError, match="batch_size"):
        DyckDataModule(seq_len=16, batch_size=4).load_state_dict(dm.state_dict())
