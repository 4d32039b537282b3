"""Known user errors of the training verbs: one line `nca VERB: error: ...`, exit 2, nothing left behind;
bugs keep their traceback. Every case here stops before a training step (fast)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule

from nca.cli import main
from nca.cli.errors import raised_on_purpose, user_error
from tests.helpers.cli import toy_config
from tests.helpers.models import TINY



@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["nca"])
    monkeypatch.delenv("NCA_TRACEBACK", raising=False)


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nca {argv[0]}: error: "), err
    return err[0]


def nca_data(**init_args) -> dict:
    args = {"seq_len": 32, "batch_size": 2, "band": None, "nca": {"n_states": 3, "grid": 4, "patch": 2},
            "val_rules": 2, "val_sequences": 2, "test_rules": 2, "test_sequences": 2, "num_workers": 0}
    return {"class_path": "NCADataModule", "init_args": {**args, **init_args}}  # a short class name


def fake_checkpoint(path: Path, n_embd: int = 32, vocab: int = 16) -> Path:
    """A Lightning-style checkpoint of a tiny CausalLM, written without training."""
    from nca.lit_modules.causal_lm import CausalLM

    module = CausalLM(config={**TINY, "n_embd": n_embd}, vocab_size=vocab)
    module.configure_model()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_datamodule_constructor_error_is_one_line(tmp_path, capsys):
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path, data=nca_data(seq_len=3))])
    assert "seq_len" in line and "Union" not in line
    assert not (tmp_path / "runs").exists()


def test_batch_size_zero_names_the_key(tmp_path, capsys):
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path, data=nca_data(batch_size=0))])
    assert "batch_size" in line


def test_refusal_to_overwrite_is_one_line(tmp_path, capsys):
    ckpts = tmp_path / "runs/toy/checkpoints"
    ckpts.mkdir(parents=True)
    fake_checkpoint(ckpts / "last.ckpt")
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path)])
    assert "--ckpt_path last" in line


def test_ckpt_path_last_with_nothing_to_resume_is_refused(tmp_path, capsys):
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path), "--ckpt_path", "last"])
    assert "nothing to resume" in line
    assert not list((tmp_path / "runs").glob("toy/version_*"))


def test_truncated_checkpoint_names_the_newest_intact_one(tmp_path, capsys):
    ckpts = tmp_path / "runs/toy/checkpoints"
    ckpts.mkdir(parents=True)
    good = fake_checkpoint(ckpts / "epoch=0-step=2.ckpt")
    data = good.read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 2])
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path), "--ckpt_path", "last"])
    assert "last.ckpt is not an intact checkpoint" in line and str(good) in line
    line = one_line_error(capsys, ["validate", "--config", toy_config(tmp_path), "--ckpt_path", str(ckpts / "last.ckpt")])
    assert "last.ckpt is not an intact checkpoint" in line and str(good) in line


def test_init_from_not_a_checkpoint_is_refused_before_the_data_is_prepared(tmp_path, capsys, monkeypatch):
    prepared = []
    monkeypatch.setattr("nca.datamodules.nca.NCADataModule.setup", lambda self, stage=None: prepared.append(stage))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path, data=nca_data()),
                                   "--model.init_from", str(notes)])
    assert "model.init_from" in line and "notes.txt" in line
    assert prepared == []


def test_init_from_of_another_model_size_fails_in_one_line_and_leaves_no_version_dir(tmp_path, capsys):
    source = fake_checkpoint(tmp_path / "other.ckpt", n_embd=64)
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path), "--model.init_from", str(source)])
    assert "other.ckpt" in line or "shape" in line
    assert not list((tmp_path / "runs/toy").glob("version_*"))  # the failed start leaves no TensorBoard run


@pytest.mark.parametrize("steps", ["-1", "0"])
def test_run_of_unknown_length_is_refused(tmp_path, capsys, steps):
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path), "--trainer.max_steps", steps])
    assert "trainer.max_steps" in line


def test_a_bug_keeps_its_traceback(tmp_path):
    cfg = toy_config(tmp_path, data={"class_path": f"{__name__}.BuggyDataModule", "init_args": {}})
    with pytest.raises(ValueError, match="unpack"):
        main(["fit", "--config", cfg])


def test_traceback_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("NCA_TRACEBACK", "1")
    with pytest.raises(ValueError, match="seq_len"):
        main(["fit", "--config", toy_config(tmp_path, data=nca_data(seq_len=3))])


def test_raised_on_purpose_tells_checks_from_bugs():
    from nca.lit_modules.model import build_config

    def check():
        build_config({"n_layr": 2}, 10)  # the package's own `raise ValueError(...)`

    def bug():
        a, b = [1]  # noqa: F841

    def elsewhere():
        raise ValueError("set x")  # a raise outside the package (a user's plugin, this test) keeps its traceback

    for fn, expected in ((check, True), (bug, False), (elsewhere, False)):
        try:
            fn()
        except ValueError as err:
            assert raised_on_purpose(err) is expected
            assert (user_error(err) is not None) is expected
    try:
        int("x")  # raised inside Python itself
    except ValueError as err:
        assert not raised_on_purpose(err)


class BuggyDataModule(LightningDataModule):  # imported by class path above
    def __init__(self):
        super().__init__()
        a, b = [1]  # noqa: F841  a bug, not a user error


def test_one_number_band_names_the_key(tmp_path, capsys):
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path, data=nca_data(band=[0.5]))])
    assert "data band must be two gzip ratios" in line


def test_the_checkpoint_reader_names_a_broken_file_and_the_newest_intact_one(tmp_path):
    from nca.lit_modules.checkpoint import CheckpointError, is_intact, newest_intact, read_checkpoint

    good = fake_checkpoint(tmp_path / "epoch=0-step=2.ckpt")
    broken = tmp_path / "last.ckpt"
    broken.write_bytes(good.read_bytes()[:100])
    notes = tmp_path / "notes.ckpt"
    notes.write_text("hello")
    assert is_intact(good) and not is_intact(broken) and not is_intact(notes)
    assert newest_intact(tmp_path) == good
    with pytest.raises(CheckpointError, match=rf"last.ckpt is truncated or corrupt .*newest intact checkpoint there is {re.escape(str(good))}"):
        read_checkpoint(broken, ["transformer.wte.weight"])
    with pytest.raises(CheckpointError, match="notes.ckpt is not a checkpoint"):
        read_checkpoint(notes, ["transformer.wte.weight"])


# -- messages of issue 19: local paths never reach the network, manifests named, list flags as --help shows

def record_connections(monkeypatch) -> list:
    import socket

    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_a_missing_local_looking_path_is_one_line_and_never_reaches_the_network(tmp_path, capsys, tok_dir, monkeypatch):
    from nca.datamodules.text import is_hf_name, resolve_files

    attempts = record_connections(monkeypatch)
    data = {"class_path": "TextDataModule", "init_args": {"source": "corpora/en/c4", "tokenizer": tok_dir}}
    line = one_line_error(capsys, ["fit", "--config", toy_config(tmp_path, data=data)])  # two separators
    assert "Corpus path 'corpora/en/c4' does not exist" in line
    for source in ("./corpora/c4", "c4.jsonl.zst", "~/corpora/c4"):  # a leading ./ or ~, a file suffix
        assert not is_hf_name(source)
        with pytest.raises(FileNotFoundError, match=f"Corpus path '.*{source.strip('~./')}' does not exist"):
            resolve_files(source)
    assert is_hf_name("allenai/c4") and is_hf_name("codeparrot/codeparrot-train-v2-near-dedup")
    assert attempts == []


def test_a_hugging_face_name_in_offline_mode_is_one_line_without_the_network(tmp_path, capsys, tok_dir, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = record_connections(monkeypatch)
    data = {"class_path": "TextDataModule", "init_args": {"source": "nobody/no-such-corpus", "tokenizer": tok_dir,
                                                          "cache_dir": str(tmp_path / "cache")}}
    assert main(["fit", "--config", toy_config(tmp_path, data=data)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nca fit")]  # after a bar
    assert len(errors) == 1 and "'nobody/no-such-corpus' is no local path" in errors[0] and "HF_HUB_OFFLINE" in errors[0]
    assert attempts == []


def test_an_invalid_manifest_is_named_with_its_json_error(tmp_path):
    from nca.datamodules.shards import CorpusError, Manifest

    (tmp_path / "manifest.json").write_text('{"row_len": 8, "dtype": "uint16",')
    with pytest.raises(CorpusError) as err:
        Manifest.load(tmp_path)
    assert str(tmp_path / "manifest.json") in str(err.value) and "is not valid JSON (Expecting" in str(err.value)
    assert user_error(err.value) is not None  # a known error: one line from nca
    (tmp_path / "manifest.json").write_text('{"rows": 3}')
    with pytest.raises(CorpusError, match="is not a corpus manifest"):
        Manifest.load(tmp_path)


def test_list_flags_take_the_syntax_their_help_shows(tmp_path, capsys):
    from nca.cli.data import gather_list_flags

    assert gather_list_flags(["--bands", "50+", "30-40", "--rules", "1"], ("--bands",)) == [
        "--bands", '["50+", "30-40"]', "--rules", "1"]
    assert gather_list_flags(["--bands", "[30-40, 50+]"], ("--bands",)) == ["--bands", "[30-40, 50+]"]
    assert gather_list_flags(["--bands=50+"], ("--bands",)) == ["--bands", '["50+"]']
    for argv in (["--bands", "50+", "30-40"], ["--bands", "[30-40, 50+]"]):
        out = tmp_path / str(len(argv))
        assert main(["preview", *argv, "--out", str(out), "--rules", "1", "--frames", "2", "--nca.grid", "4"]) == 0
        assert sorted(p.name for p in out.glob("band_*.png")) == ["band_30-40.png", "band_50plus.png"]
    assert "needs at least one value" in one_line_error(capsys, ["preview", "--bands", "--out", str(tmp_path)])
