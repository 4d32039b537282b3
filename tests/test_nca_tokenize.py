import pytest
import torch

from nca.datamodules.shards import row_to_sample
from nca.automaton.tokenize import PatchTokenizer


def test_patch_token_formula_and_frame_layout():
    tok = PatchTokenizer(n_states=10, grid=12, patch=2)
    assert (tok.start_id, tok.end_id, tok.vocab_size, tok.frame_len) == (10000, 10001, 10002, 38)
    frame = torch.zeros(1, 12, 12, dtype=torch.uint8)
    frame[0, 0, 0], frame[0, 0, 1], frame[0, 1, 0], frame[0, 1, 1] = 1, 2, 3, 4  # c00 c01 c10 c11
    ids = tok.encode(frame)
    assert ids.shape == (38,)
    assert ids[0] == 10000 and ids[-1] == 10001
    assert ids[1] == 1 + 10 * 2 + 100 * 3 + 1000 * 4
    assert (ids[2:-1] == 0).all()


def test_encode_decode_round_trip_is_exact():
    tok = PatchTokenizer(n_states=7, grid=12, patch=3)
    frames = torch.randint(0, 7, (5, 4, 12, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(tok.decode(tok.encode(frames)), frames.long())


def test_reference_layout_supervises_987_of_1024_targets():
    tok = PatchTokenizer()
    frames = torch.randint(0, 10, (2, tok.frames_for(1024), 12, 12))
    assert tok.frames_for(1024) == 27
    rows = tok.rows(frames, 1024)
    assert rows.shape == (2, 1025)
    sample = row_to_sample(rows, tok.mask_first)
    assert sample["input_ids"].shape == sample["labels"].shape == (2, 1024)
    assert ((sample["labels"] != -100).sum(1) == 987).all()
    assert torch.equal(sample["labels"][:, 37:], rows[:, 38:])  # first target kept: frame 2's <start>
    assert torch.equal(sample["input_ids"], rows[:, :-1])


def test_decode_rejects_malformed_sequences():
    tok = PatchTokenizer(n_states=4, grid=4, patch=2)
    good = tok.encode(torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="whole number"):
        tok.decode(good[:-1])
    bad = good.clone()
    bad[0] = 3
    with pytest.raises(ValueError, match="start"):
        tok.decode(bad)
    with pytest.raises(ValueError, match="multiple of patch"):
        PatchTokenizer(grid=12, patch=5)
