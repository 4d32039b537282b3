import pytest
import torch

from nca.datamodules.nca import NCADataModule
from nca.datamodules.shards import ShardWriter
from nca.automaton.config import NCAConfig

TINY = dict(seq_len=48, batch_size=4, band=(0.3, 1.0), nca=NCAConfig(n_states=4, grid=6, patch=2), val_rules=None,
            test_rules=None, val_sequences=8, test_sequences=8, generate_group=8)


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_batches_follow_the_contract():
    dm = NCADataModule(**TINY)
    assert dm.vocab_size == 4**4 + 2
    dm.setup("fit")
    batch = take(dm.train_dataloader(), 1)[0]
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 48)
    assert batch["input_ids"].dtype == torch.long
    assert (batch["labels"][:, : dm.tokenizer.mask_first] == -100).all()
    assert (batch["labels"][:, dm.tokenizer.mask_first :] >= 0).all()
    assert torch.equal(batch["labels"][:, :-1][:, dm.tokenizer.mask_first :], batch["input_ids"][:, 1:][:, dm.tokenizer.mask_first :])
    val = list(dm.val_dataloader())
    assert len(val) == 2


def test_stream_does_not_depend_on_worker_count():
    ref = NCADataModule(**TINY, num_workers=0)
    ref.setup("fit")
    two = NCADataModule(**TINY, num_workers=2)
    two.setup("fit")
    a, b = take(ref.train_dataloader(), 6), take(two.train_dataloader(), 6)
    for x, y in zip(a, b):
        assert torch.equal(x["input_ids"], y["input_ids"])


def test_ranks_get_disjoint_slices_of_one_stream():
    from nca.datamodules.streaming import NumberedBatches

    dm = NCADataModule(**TINY)
    dm.setup("fit")
    src = dm.source("train")
    single = [b["input_ids"] for b in NumberedBatches(src, rank=0, world_size=1, limit=4)]
    r0 = [b["input_ids"] for b in NumberedBatches(src, rank=0, world_size=2, limit=2)]
    r1 = [b["input_ids"] for b in NumberedBatches(src, rank=1, world_size=2, limit=2)]
    assert torch.equal(torch.stack(single), torch.stack([r0[0], r1[0], r0[1], r1[1]]))


def test_resume_position_continues_the_stream():
    dm = NCADataModule(**TINY)
    dm.setup("fit")
    full = take(dm.train_dataloader(), 5)
    resumed = NCADataModule(**TINY)
    resumed.load_state_dict({"train_batches": 3})
    resumed.setup("fit")
    nxt = take(resumed.train_dataloader(), 2)
    assert torch.equal(nxt[0]["input_ids"], full[3]["input_ids"]) and torch.equal(nxt[1]["input_ids"], full[4]["input_ids"])


def test_rule_pool_mode_and_disjoint_validation_and_test_rules():
    dm = NCADataModule(**{**TINY, "train_rules": 6, "val_rules": 3, "test_rules": 4})
    ids = {split: set(dm.source(split).stream.pool.ids.tolist()) for split in ("train", "val", "test")}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [6, 3, 4]
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]


def test_fresh_rule_mode_keeps_the_three_splits_apart():
    dm = NCADataModule(**TINY)
    rules = {split: dm.source(split).stream.batch(torch.arange(16)).rule_ids for split in ("train", "val", "test")}
    assert (rules["train"] % 2 == 0).all() and (rules["val"] % 4 == 1).all() and (rules["test"] % 4 == 3).all()
    test = list(dm.test_dataloader())
    assert len(test) == 2 and test[0]["input_ids"].shape == (4, 48)
    assert not torch.equal(test[0]["input_ids"], next(iter(dm.val_dataloader()))["input_ids"])


def test_reads_a_written_corpus_and_rejects_a_mismatched_one(tmp_path):
    dm = NCADataModule(**TINY)
    rows = dm.stream("train").rows(torch.arange(12))
    with ShardWriter(tmp_path / "c", row_len=49, vocab_size=dm.vocab_size, mask_first=dm.tokenizer.mask_first) as w:
        w.write(rows)
    from_disk = NCADataModule(**TINY, corpus=str(tmp_path / "c"))
    from_disk.setup("fit")
    batch = take(from_disk.train_dataloader(), 3)
    seen = torch.cat([b["input_ids"] for b in batch])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, rows[:, :-1].tolist()))
    with pytest.raises(ValueError, match="regenerate"):
        NCADataModule(**{**TINY, "seq_len": 32}, corpus=str(tmp_path / "c"))


def test_seq_len_shorter_than_a_frame_is_rejected():
    with pytest.raises(ValueError, match="at least one frame"):
        NCADataModule(**{**TINY, "seq_len": 5})


def test_accelerator_generation_with_worker_processes_is_rejected():
    with pytest.raises(ValueError, match="num_workers: 0"):
        NCADataModule(**TINY, device="cuda", num_workers=2)
