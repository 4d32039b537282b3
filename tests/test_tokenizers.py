import json
import pickle
import os
from pathlib import Path

import pytest

from nca.datamodules import tokenizers
from nca.datamodules.tokenizers import load_tokenizer
from tests.helpers.tokenizers import TO_CHAR, write_bpe

SHARED_GPT2 = Path(os.environ.get("NCA_SHARED_DATA", "/work/shared/data")) / "gpt2_tokenizer"


MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), (TO_CHAR[32], "w")]


def test_bpe_from_local_files_applies_merges(tmp_path):
    tok = load_tokenizer(write_bpe(tmp_path / "tok", MERGES))
    enc = json.loads((tmp_path / "tok" / "encoder.json").read_text())
    assert tok.vocab_size == 261 and tok.eot_id == 260
    assert tok.name.startswith("bpe-")
    o, space = enc["o"], enc[TO_CHAR[32]]
    assert tok.encode("hello hello") == [enc["hell"], o, space, enc["hell"], o]
    assert tok.encode(" world")[0] == enc[TO_CHAR[32] + "w"]
    assert tok.encode_batch(["hello", "é"]) == [[enc["hell"], o], [enc[TO_CHAR[0xC3]], enc[TO_CHAR[0xA9]]]]


def test_special_token_text_is_ordinary(tmp_path):
    tok = load_tokenizer(write_bpe(tmp_path, MERGES))
    assert tok.eot_id not in tok.encode("a<|endoftext|>b")
    clone = pickle.loads(pickle.dumps(tok))  # e.g. a DataModule sent to spawned processes
    assert clone.encode("hello") == tok.encode("hello") and clone.name == tok.name


def test_hf_file_names_work_and_name_depends_on_content(tmp_path):
    a = load_tokenizer(write_bpe(tmp_path / "a", MERGES, names=("vocab.json", "merges.txt")))
    b = load_tokenizer(write_bpe(tmp_path / "b", MERGES[:2]))
    assert a.vocab_size == 261 and b.vocab_size == 259
    assert a.name != b.name


def test_mismatched_files_fail(tmp_path):
    d = write_bpe(tmp_path, MERGES)
    (d / "vocab.bpe").write_text("#version: 0.2\nh e\nx y\n")
    with pytest.raises(ValueError, match="mismatched files"):
        load_tokenizer(d)
    (d / "vocab.bpe").write_text("#version: 0.2\nl l\nh e\nhe ll\n" + f"{TO_CHAR[32]} w\n")
    with pytest.raises(ValueError, match="disagree in content or order"):
        load_tokenizer(d)


def test_missing_end_of_text_fails(tmp_path):
    d = write_bpe(tmp_path, MERGES)
    enc = json.loads((d / "encoder.json").read_text())
    del enc["<|endoftext|>"]
    (d / "encoder.json").write_text(json.dumps(enc))
    with pytest.raises(ValueError, match="endoftext"):
        load_tokenizer(d)


def test_missing_tokenizer_says_what_to_provide(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="No tokenizer files"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="Unknown tokenizer 'gpt3'.*encoder.json"):
        load_tokenizer("gpt3")


def test_gpt2_offline_fails_with_instructions(monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(RuntimeError, match="offline.*encoder.json"):
        load_tokenizer("gpt2")


def test_tokenizer_json_directory(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    hf = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2, "<eos>": 3}, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="no end-of-text"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>", "tokenizer_class": "PreTrainedTokenizerFast"}))
    tok = load_tokenizer(tmp_path)
    assert tok.eot_id == 3 and tok.vocab_size == 4
    assert tok.encode_batch(["hello world", "world x"]) == [[1, 2], [2, 0]]
    assert pickle.loads(pickle.dumps(tok)).encode("world hello") == [2, 1]


@pytest.mark.skipif(not (SHARED_GPT2 / "encoder.json").is_file(), reason="shared GPT-2 files absent")
def test_shared_gpt2_files_match_openai_gpt2():
    tok = load_tokenizer(SHARED_GPT2)
    assert (tok.name, tok.vocab_size, tok.eot_id) == ("gpt2", 50257, 50256)
    assert tok.encode("Hello world") == [15496, 995]
    assert tokenizers.GPT2_HASHES  # the files are OpenAI's, so caches are shared with tiktoken's own "gpt2"
