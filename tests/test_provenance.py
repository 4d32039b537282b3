"""One reader of how a checkpoint was trained: every layout of the recorded DataModule reads the same."""

import pytest

from nca.analysis.icl import nca_rows
from nca.automaton.complexity import PAPER_BAND
from nca.automaton.config import NCAConfig
from nca.lit_modules.provenance import provenance

AUTOMATON = NCAConfig(n_states=3, grid=4, patch=2)
NCA = "nca.datamodules.nca.NCADataModule"


@pytest.mark.parametrize("data", [
    {"class_path": NCA, "init_args": {"nca": AUTOMATON.to_dict(), "seq_len": 30, "band": None, "seed": 2}},
    {"class_path": NCA, "init_args": {"n_states": 3, "grid": 4, "patch": 2, "seq_len": 30, "band": None, "seed": 2}},
    {"class_path": NCA, "init_args": {"nca": AUTOMATON, "seq_len": 30, "band": None, "seed": 2}},
    # written before the package moved under `nca.`
    {"class_path": "datamodules.nca.NCADataModule", "init_args": {"nca": AUTOMATON.to_dict(), "seq_len": 30,
                                                                  "band": None, "seed": 2}},
], ids=["nested", "flat", "config", "old-class-path"])
def test_nca_settings_read_every_layout(data):
    p = provenance(data)
    assert p.kind == "nca" and p.is_nca and not p.is_text and p.tokenizer is None
    settings = p.nca()
    assert (settings.cfg, settings.band, settings.seed, settings.seq_len) == (AUTOMATON, None, 2, 30)


def test_unrecorded_nca_settings_take_the_datamodules_own_defaults():
    settings = provenance({"class_path": NCA, "init_args": {}}).nca()
    assert settings.cfg == NCAConfig() and settings.seq_len is None
    assert settings.band == PAPER_BAND and settings.seed == 0


def test_text_dyck_and_unknown_runs():
    text = provenance({"class_path": "nca.datamodules.text.TextDataModule",
                       "init_args": {"tokenizer": "gpt2", "_class_path": "x"}}, {"vocab_size": 50257})
    assert text.kind == "text" and text.is_text and text.tokenizer == "gpt2" and text.vocab_size == 50257
    assert "_class_path" not in text.init_args
    gsm = provenance({"class_path": "nca.datamodules.gsm8k.GSM8KDataModule", "init_args": {"tokenizer": "gpt2"}})
    assert gsm.kind == "gsm8k" and gsm.is_text
    dyck = provenance({"class_path": "nca.datamodules.dyck.DyckDataModule", "init_args": {"k": 64}})
    assert dyck.kind == "dyck" and not dyck.is_text and "Dyck" in dyck.describe()
    for name, kind in (("ShuffledNCADataModule", "shuffled_nca"), ("RandomTokensDataModule", "random_tokens")):
        control = provenance({"class_path": f"nca.datamodules.controls.{name}",
                              "init_args": {"nca": AUTOMATON.to_dict(), "seq_len": 30}})
        assert control.kind == kind and control.is_nca and control.is_stage1 and "control" in control.describe()
        assert control.nca().cfg == AUTOMATON
    assert not text.is_stage1 and dyck.is_stage1
    unknown = provenance(None)
    assert unknown.kind == "unknown" and unknown.describe() == "unrecorded data"
    for p in (text, dyck, unknown):
        with pytest.raises(ValueError, match="not NCA"):
            p.nca()


def test_nca_rows_follow_the_recorded_stream():
    p = provenance({"class_path": NCA, "init_args": {"nca": AUTOMATON.to_dict(), "seq_len": 30, "band": None}})
    rows, tok = nca_rows(p, sequences=2)
    assert rows.shape == (2, 31) and (rows[:, :: tok.frame_len] == tok.start_id).all()
    with pytest.raises(ValueError, match="--seq_len"):
        nca_rows(provenance({"class_path": NCA, "init_args": {"nca": AUTOMATON.to_dict()}}), sequences=1)
