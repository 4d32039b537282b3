"""nca export: litgpt and Hugging Face directories load with their own loaders and compute what our GPT does."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed.checkpoint as dcp
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer

from nca.datamodules.tokenizers import load_tokenizer
from nca.lit_modules.checkpoint import load_model
from nca.lit_modules.export import export_checkpoint
from nca.cli import main as nca_main
from tests.helpers.models import make_lightning_ckpt

TEXT = "Hello the world: the cell in a cellar, 42 times!\nwell..."


def make_sharded_dir(ckpt, directory):
    """Lightning FSDPStrategy's sharded layout from a full checkpoint: DCP of {"model": ...} + meta.pt."""
    raw = torch.load(ckpt, weights_only=False)
    dcp.save({"model": raw.pop("state_dict")}, checkpoint_id=directory, no_dist=True)
    raw.pop("optimizer_states", None)
    torch.save(raw, directory / "meta.pt")
    return directory


@pytest.fixture(scope="module")
def lightning_ckpt(tmp_path_factory):
    """One tiny fit for the whole file (tests only read the checkpoint)."""
    return make_lightning_ckpt(tmp_path_factory.mktemp("trained"))


def reference_logits(ckpt, ids):
    with torch.no_grad():
        return load_model(ckpt).model(ids)


def sample_ids(vocab: int = 272) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(1))


def test_litgpt_export_loads_with_litgpts_own_loader_and_generates(lightning_ckpt, tmp_path):
    ckpt, tok_dir = lightning_ckpt
    out = tmp_path / "lit"
    result = export_checkpoint(ckpt, out, "litgpt")
    expected = {"lit_model.pth", "model_config.yaml", "config.json", "tokenizer.json", "tokenizer_config.json"}
    assert expected <= set(result.files)
    assert result.warnings == []

    model = GPT(Config.from_file(out / "model_config.yaml"))
    model.load_state_dict(torch.load(out / "lit_model.pth", weights_only=True))
    model.eval()
    ids = sample_ids()
    assert torch.allclose(model(ids), reference_logits(ckpt, ids), atol=1e-6)

    tokenizer = Tokenizer(out)
    assert tokenizer.encode(TEXT).tolist() == load_tokenizer(tok_dir).encode(TEXT)
    assert tokenizer.eos_id == 271 and tokenizer.decode(tokenizer.encode(TEXT)) == TEXT

    from litgpt.generate.base import generate

    model.set_kv_cache(batch_size=1)
    prompt = tokenizer.encode("the cell")
    generated = generate(model, prompt, max_returned_tokens=len(prompt) + 5, temperature=0.0)
    assert generated[: len(prompt)].tolist() == prompt.tolist() and len(generated) > len(prompt)


def test_litgpt_export_converts_the_way_litgpt_evaluate_does(lightning_ckpt, tmp_path):
    """`litgpt evaluate DIR`: copy config.json + tokenizer files, convert lit -> HF, load with transformers."""
    from litgpt.scripts.convert_lit_checkpoint import convert_lit_checkpoint
    from litgpt.utils import copy_config_files
    from transformers import AutoModelForCausalLM

    ckpt, _ = lightning_ckpt
    export_checkpoint(ckpt, tmp_path / "lit", "litgpt")
    converted = tmp_path / "evaluate"
    converted.mkdir()
    copy_config_files(source_dir=tmp_path / "lit", out_dir=converted)
    convert_lit_checkpoint(checkpoint_dir=tmp_path / "lit", output_dir=converted)
    torch.save(torch.load(converted / "model.pth"), converted / "pytorch_model.bin")
    (converted / "model.pth").unlink()
    hf = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    ids = sample_ids()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, reference_logits(ckpt, ids), atol=1e-4, rtol=1e-4)


def test_hf_export_logits_equal_ours(lightning_ckpt, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt, tok_dir = lightning_ckpt
    out = tmp_path / "hf"
    export_checkpoint(ckpt, out, "hf")
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert hf.config.num_key_value_heads == 2 and hf.config.vocab_size == 320  # GQA and padded rows survive
    ids = sample_ids()
    with torch.no_grad():
        theirs = hf(ids).logits
    ours = reference_logits(ckpt, ids)
    assert theirs.shape == ours.shape and ours.abs().max() > 1.0  # logits far from zero: a wrong map would show
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)

    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok(TEXT, add_special_tokens=True)["input_ids"] == load_tokenizer(tok_dir).encode(TEXT)
    assert hf_tok.eos_token_id == 271


def test_sharded_fsdp_checkpoint_exports_the_same_weights(lightning_ckpt, tmp_path):
    ckpt, _ = lightning_ckpt
    sharded = make_sharded_dir(ckpt, tmp_path / "epoch=0-step=1.ckpt")
    export_checkpoint(sharded, tmp_path / "from_sharded", "litgpt")
    export_checkpoint(ckpt, tmp_path / "from_full", "litgpt")
    a = torch.load(tmp_path / "from_sharded" / "lit_model.pth", weights_only=True)
    b = torch.load(tmp_path / "from_full" / "lit_model.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "from_sharded" / "tokenizer.json").is_file()  # the tokenizer came through meta.pt


def test_bfloat16_export_and_litgpt_directory_round_trip(lightning_ckpt, tmp_path):
    ckpt, _ = lightning_ckpt
    export_checkpoint(ckpt, tmp_path / "lit", "litgpt", dtype="bfloat16")
    state = torch.load(tmp_path / "lit" / "lit_model.pth", weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in state.values())
    again = export_checkpoint(tmp_path / "lit", tmp_path / "again", "litgpt")  # tokenizer found beside it
    assert "tokenizer.json" in again.files and again.warnings == []


def test_tiktoken_name_without_local_files_writes_weights_with_a_warning(tmp_path):
    ckpt, _ = make_lightning_ckpt(tmp_path, tokenizer="gpt2")
    with pytest.warns(UserWarning, match="tiktoken name"):
        result = export_checkpoint(ckpt, tmp_path / "lit", "litgpt")
    assert set(result.files) == {"lit_model.pth", "model_config.yaml", "config.json"}


def test_refuses_existing_output_and_missing_checkpoint_before_work(lightning_ckpt, tmp_path, capsys):
    ckpt, _ = lightning_ckpt
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        export_checkpoint(ckpt, taken, "hf")
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert nca_main(["export", "--ckpt", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "x")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_cli_exports_into_an_empty_directory_and_leaves_no_staging(lightning_ckpt, tmp_path, capsys):
    ckpt, tok_dir = lightning_ckpt
    out = tmp_path / "empty"
    out.mkdir()
    assert nca_main(["export", "--ckpt", str(ckpt), "--out", str(out), "--format", "hf",
                     "--tokenizer", str(tok_dir)]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    nested = tmp_path / "exports" / "lit"  # folders that do not exist yet are made
    assert nca_main(["export", "--ckpt", str(ckpt), "--out", str(nested), "--tokenizer", str(tok_dir)]) == 0
    assert (nested / "lit_model.pth").is_file()


def test_wrong_tokenizer_for_the_vocabulary_is_refused(lightning_ckpt, tmp_path):
    ckpt, _ = lightning_ckpt
    big = tmp_path / "big"
    big.mkdir()
    vocab = {chr(0x100 + i): i for i in range(400)}
    vocab["<|endoftext|>"] = 400
    (big / "encoder.json").write_text(json.dumps(vocab))
    (big / "vocab.bpe").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="embedding rows"):
        export_checkpoint(ckpt, tmp_path / "out", "litgpt", tokenizer=str(big))
    assert not (tmp_path / "out").exists()


def test_bad_tokenizer_fails_before_the_weights_are_loaded(lightning_ckpt, tmp_path, monkeypatch):
    ckpt, _ = lightning_ckpt

    def no_loading(*args, **kwargs):
        raise AssertionError("weights loaded before the tokenizer was checked")

    monkeypatch.setattr("nca.lit_modules.export.load_model", no_loading)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_checkpoint(ckpt, tmp_path / "out", "hf", tokenizer=str(tmp_path / "nope" / "tok"))
    assert not (tmp_path / "out").exists()
