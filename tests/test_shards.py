import numpy as np
import pytest

from datamodules.shards import Manifest, ShardWriter, TokenShards, smallest_dtype


def test_write_read_round_trip_across_shards(tmp_path):
    rows = np.arange(7 * 5).reshape(7, 5) % 300
    with ShardWriter(tmp_path / "c", row_len=5, vocab_size=300, mask_first=2, rows_per_shard=3, metadata={"a": 1}) as w:
        w.write(rows[:4])
        w.write(rows[4:])
    shards = TokenShards(tmp_path / "c")
    assert len(shards) == 7 and len(shards.manifest.shards) == 3
    assert np.array_equal(np.stack(list(shards)), rows)
    s = shards.sample(6)
    assert s["input_ids"].tolist() == rows[6, :-1].tolist()
    assert s["labels"].tolist() == [-100, -100] + rows[6, 3:].tolist()
    assert shards.manifest.metadata == {"a": 1} and shards.manifest.tokens == 35


def test_never_overwrites_and_validates(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        ShardWriter(tmp_path / "c", row_len=4, vocab_size=10)
    w = ShardWriter(tmp_path / "d", row_len=4, vocab_size=10)
    with pytest.raises(ValueError, match="shape"):
        w.write(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="token ids"):
        w.write(np.full((2, 4), 10))
    with pytest.raises(FileNotFoundError, match="nca generate"):
        Manifest.load(tmp_path / "nothing")


def test_dtype_follows_vocabulary():
    assert smallest_dtype(65536) == np.uint16 and smallest_dtype(65537) == np.uint32
