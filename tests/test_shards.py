import hashlib
import json
import re

import numpy as np
import pytest

from nca.datamodules.shards import CorpusError, Manifest, ShardWriter, TokenShards, smallest_dtype, verify_corpus


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


def small_corpus(directory, vocab_size=300):
    rows = np.arange(6 * 5).reshape(6, 5) % vocab_size
    with ShardWriter(directory, row_len=5, vocab_size=vocab_size, rows_per_shard=3) as w:
        w.write(rows)
    return directory


def edit_manifest(directory, **changes):
    m = json.loads((directory / "manifest.json").read_text())
    m.update(changes)
    (directory / "manifest.json").write_text(json.dumps(m))


def test_manifest_records_sizes_and_checksums_that_sha256sum_agrees_with(tmp_path):
    c = small_corpus(tmp_path / "c")
    m = verify_corpus(c)
    for shard in m.shards:
        assert shard["bytes"] == (c / shard["file"]).stat().st_size == 3 * 5 * 2
        assert shard["sha256"] == hashlib.sha256((c / shard["file"]).read_bytes()).hexdigest()


@pytest.mark.parametrize("damage, message", [
    (lambda c: (c / "shard_00001.bin").write_bytes((c / "shard_00001.bin").read_bytes()[:-2]), "shard_00001.bin has 28 bytes"),
    (lambda c: (c / "shard_00000.bin").write_bytes(b"\x01\x00" + (c / "shard_00000.bin").read_bytes()[2:]), "SHA-256"),
    (lambda c: edit_manifest(c, dtype="uint32"), "shard_00000.bin has 30 bytes, its manifest entry 60"),
    (lambda c: edit_manifest(c, vocab_size=20), "holds id 29, outside the manifest's vocabulary of 20"),
    (lambda c: edit_manifest(c, dtype="float32"), "cannot hold ids"),
    (lambda c: edit_manifest(c, rows=7), "says 7 rows"),
    (lambda c: (c / "shard_00001.bin").unlink(), "shard_00001.bin is missing"),
])
def test_a_corpus_that_no_longer_matches_its_manifest_is_named_with_the_fix(tmp_path, damage, message):
    c = small_corpus(tmp_path / "c")
    damage(c)
    with pytest.raises(CorpusError, match=re.escape(message)) as err:
        verify_corpus(c)
    assert str(c) in str(err.value) and "nca generate" in str(err.value)


def test_layout_is_checked_on_open_and_old_manifests_without_checksums_still_verify(tmp_path):
    c = small_corpus(tmp_path / "c")
    m = json.loads((c / "manifest.json").read_text())
    for shard in m["shards"]:
        del shard["sha256"], shard["bytes"]
    (c / "manifest.json").write_text(json.dumps(m))
    assert verify_corpus(c).rows == 6
    (c / "shard_00000.bin").write_bytes(b"")
    with pytest.raises(CorpusError, match="shard_00000.bin has 0 bytes"):
        TokenShards(c)


def test_training_rows_verify_the_corpus_before_reading(tmp_path):
    from nca.datamodules.streaming import ShardRows

    c = small_corpus(tmp_path / "c")
    edit_manifest(c, vocab_size=10)
    with pytest.raises(CorpusError, match="outside the manifest's vocabulary"):
        ShardRows(c, batch_size=2)


def test_writer_refuses_a_file_as_its_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        ShardWriter(tmp_path / "f", row_len=4, vocab_size=10)
