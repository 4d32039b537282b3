import bz2
from collections import Counter
import gzip
import json
import lzma
import pickle
import sys
import types

import pytest
import torch

import nca.datamodules.text as text
from nca.datamodules.shards import TokenShards
from nca.datamodules.text import TextDataModule, document_position, is_hf_name, is_validation, read_documents
from tests.helpers.data import documents, write_jsonl


def stream(tok, docs):
    out = []
    for d in docs:
        out += tok.encode(d) + [tok.eot_id]
    return out


def unpack(directory):
    """Invert the packing: rows overlap by one id, so row 0 + every later row without its first id."""
    rows = list(TokenShards(directory))
    flat = list(rows[0]) + [int(t) for r in rows[1:] for t in r[1:]]
    for a, b in zip(rows, rows[1:]):
        assert a[-1] == b[0]
    return flat, len(rows)


def make(tmp_path, source, tok_dir, **kw):
    kw = {"seq_len": 16, "batch_size": 2, "num_workers": 0, "cache_dir": str(tmp_path / "cache"), "test_fraction": 0.0, **kw}
    return TextDataModule(source, tokenizer=tok_dir, **kw)


def test_rows_are_the_eot_joined_token_stream(tmp_path, tok_dir):
    docs, val_docs = documents(40), documents(10, seed=1)
    dm = make(tmp_path, write_jsonl(tmp_path / "a.jsonl", docs), tok_dir,
              val_source=str(write_jsonl(tmp_path / "v.jsonl", val_docs)))
    assert dm.vocab_size == 257
    dm.prepare_data()
    tok = dm.tokenizer
    for split, ds in (("train", docs), ("val", val_docs)):
        flat, rows = unpack(dm.split_path(split))
        expected = stream(tok, ds)
        assert flat == expected[: rows * 16 + 1]
        assert len(expected) - (rows * 16 + 1) < 16  # only an incomplete tail is dropped
    summary = json.loads((dm.split_path("train") / "cache.json").read_text())
    assert summary["documents"] == 40


def test_batches_follow_the_contract_and_shuffle_with_the_seed(tmp_path, tok_dir):
    src = write_jsonl(tmp_path / "a.jsonl", documents(200))
    dms = [make(tmp_path, src, tok_dir, seed=s) for s in (0, 0, 1)]
    firsts = []
    for dm in dms:
        dm.prepare_data()
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["input_ids"].shape == (2, 16) and batch["labels"].dtype == torch.long
        assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])
        firsts.append(batch["input_ids"])
    assert torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[0], firsts[2])
    n = len(dms[0].rows("train"))
    it = iter(dms[0].train_dataloader())
    stream = [tuple(r.tolist()) for _ in range(n) for r in next(it)["input_ids"]]  # 2n rows: two passes
    rows = Counter(tuple(dms[0].rows("train")[i]["input_ids"].tolist()) for i in range(n))
    first, second = stream[:n], stream[n:]
    assert Counter(first) == rows == Counter(second)  # every row exactly once per pass
    assert first != second  # and each pass in a fresh order
    assert len(list(dms[0].val_dataloader())) >= 1


def test_hash_split_holds_out_whole_documents(tmp_path, tok_dir):
    docs = documents(400)
    dm = make(tmp_path, write_jsonl(tmp_path / "a.jsonl", docs), tok_dir, val_fraction=0.1, seq_len=8)
    dm.prepare_data()
    held = [d for d in docs if is_validation(d, 0.1)]
    kept = [d for d in docs if not is_validation(d, 0.1)]
    assert 10 < len(held) < 80 and not set(held) & set(kept)
    tok = dm.tokenizer
    for split, ds in (("train", kept), ("val", held)):
        flat, rows = unpack(dm.split_path(split))
        assert flat == stream(tok, ds)[: rows * 8 + 1]


def test_cache_is_reused_and_rebuilt_only_when_inputs_change(tmp_path, tok_dir, monkeypatch):
    src = write_jsonl(tmp_path / "a.jsonl", documents(50))
    first = make(tmp_path, src, tok_dir)
    first.prepare_data()
    manifest = first.split_path("train") / "manifest.json"
    stamp = manifest.stat().st_mtime_ns

    again = make(tmp_path, src, tok_dir)
    calls = []
    monkeypatch.setattr(again.tokenizer, "encode_batch", lambda texts: calls.append(texts))
    again.prepare_data()
    assert again.split_path("train") == first.split_path("train") and not calls
    assert manifest.stat().st_mtime_ns == stamp

    assert make(tmp_path, src, tok_dir, seq_len=8).split_path("train") != first.split_path("train")
    assert make(tmp_path, src, tok_dir, max_tokens=64).split_path("train") != first.split_path("train")
    write_jsonl(src, documents(60))
    changed = make(tmp_path, src, tok_dir)
    assert changed.split_path("train") != first.split_path("train")
    changed.prepare_data()
    assert manifest.is_file() and (changed.split_path("train") / "cache.json").is_file()  # the old cache is kept
    assert not list((tmp_path / "cache").glob(".*tmp*"))


def test_max_tokens_caps_training_rows(tmp_path, tok_dir):
    dm = make(tmp_path, write_jsonl(tmp_path / "a.jsonl", documents(200)), tok_dir, max_tokens=100)
    dm.prepare_data()
    dm.setup()
    assert len(dm.rows("train")) == 100 // 16


def test_missing_inputs_fail_at_once(tmp_path, tok_dir):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        make(tmp_path, str(tmp_path / "nope.jsonl"), tok_dir)
    with pytest.raises(FileNotFoundError, match="No corpus files"):
        make(tmp_path, str(tmp_path / "*.jsonl"), tok_dir)
    src = write_jsonl(tmp_path / "a.jsonl", documents(5))
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        make(tmp_path, src, str(tmp_path / "no_tokenizer"))
    with pytest.raises(FileNotFoundError, match="missing_val"):
        make(tmp_path, src, tok_dir, val_source=str(tmp_path / "missing_val.jsonl"))
    dm = make(tmp_path, src, tok_dir)
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        dm.setup()


def test_wrong_field_and_too_little_data_fail_clearly(tmp_path, tok_dir):
    src = write_jsonl(tmp_path / "a.jsonl", documents(30), field="content")
    with pytest.raises(KeyError, match="'text'.*content"):
        make(tmp_path, src, tok_dir).prepare_data()
    ok = make(tmp_path, src, tok_dir, text_field="content")
    ok.prepare_data()
    tiny = make(tmp_path, write_jsonl(tmp_path / "t.jsonl", ["ab"]), tok_dir)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        tiny.prepare_data()
    assert not tiny.split_path("train").exists()


@pytest.mark.parametrize("suffix,opener", [(".jsonl.gz", gzip.open), (".jsonl.xz", lzma.open), (".jsonl.bz2", bz2.open)])
def test_compressed_jsonl(tmp_path, suffix, opener):
    docs = documents(5)
    path = write_jsonl(tmp_path / f"c{suffix}", docs, opener=opener)
    assert list(read_documents(path)) == docs


def test_text_files_by_file_or_line(tmp_path):
    (tmp_path / "a.txt").write_text("line one\nline two\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("zipped\n")
    assert list(read_documents(tmp_path / "a.txt")) == ["line one\nline two\n"]
    assert list(read_documents(tmp_path / "a.txt", txt_document="line")) == ["line one", "line two"]
    assert list(read_documents(tmp_path / "b.txt.gz")) == ["zipped\n"]


def test_code_directory_one_document_per_file(tmp_path, tok_dir):
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    sources = {f"pkg/m{i}.py": f"def f{i}(x):\n    return x * {i}\n" * 3 for i in range(30)}
    for name, body in sources.items():
        (code / name).write_text(body)
    (code / "notes.bin").write_bytes(b"\x00\x01")  # not a corpus kind: ignored in a directory
    (code / "pkg" / "latin1.py").write_bytes(b"# caf\xe9\n")  # not UTF-8: skipped and reported
    dm = make(tmp_path, str(code), tok_dir, val_fraction=0.2)
    assert len(dm.inputs["train"]) == 31
    dm.prepare_data()
    summary = json.loads((dm.split_path("train") / "cache.json").read_text())
    assert summary["skipped_files"] == [str(code / "pkg" / "latin1.py")]
    val_summary = json.loads((dm.split_path("val") / "cache.json").read_text())
    assert summary["documents"] + val_summary["documents"] == 30
    excluded = make(tmp_path, str(code), tok_dir, exclude=["*/m1*.py"])
    assert len(excluded.inputs["train"]) == 31 - 11


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    docs = documents(7)
    pq.write_table(pa.table({"text": docs, "n": list(range(7))}), tmp_path / "a.parquet")
    assert list(read_documents(tmp_path / "a.parquet")) == docs
    with pytest.raises(KeyError, match="content"):
        list(read_documents(tmp_path / "a.parquet", text_field="content"))


def test_source_kind_detection(tmp_path):
    assert is_hf_name("allenai/c4") and is_hf_name("openwebtext") and is_hf_name("hf:anything/x")
    assert not is_hf_name("./c4") and not is_hf_name("data/c4.jsonl.gz") and not is_hf_name(str(tmp_path))
    assert not is_hf_name("corpus/*.jsonl") and not is_hf_name(["allenai/c4"])


def test_hf_source_without_datasets_fails_at_once(tmp_path, tok_dir, monkeypatch):
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install datasets"):
        make(tmp_path, "allenai/c4", tok_dir)


def test_hf_source_is_streamed_through_load_dataset(tmp_path, tok_dir, monkeypatch):
    docs, val_docs = documents(60), documents(20, seed=2)
    calls = []

    def load_dataset(name, subset, split, streaming):
        calls.append((name, subset, split, streaming))
        return [{"text": d} for d in (docs if split == "train" else val_docs)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: object())
    dm = make(tmp_path, "allenai/c4", tok_dir, hf_subset="en", val_source="allenai/c4")
    dm.prepare_data()
    assert calls == [("allenai/c4", "en", "train", True), ("allenai/c4", "en", "validation", True)]
    flat, rows = unpack(dm.split_path("val"))
    assert flat == stream(dm.tokenizer, val_docs)[: rows * 16 + 1]


def test_row_dataset_pickles_without_data(tmp_path, tok_dir):
    dm = make(tmp_path, write_jsonl(tmp_path / "a.jsonl", documents(100)), tok_dir)
    dm.prepare_data()
    dm.setup()
    dm.rows("train")[0]
    clone = pickle.loads(pickle.dumps(dm.rows("train")))
    assert len(pickle.dumps(dm.rows("train"))) < 1000
    assert torch.equal(clone[3]["input_ids"], dm.rows("train")[3]["input_ids"])
    assert pickle.loads(pickle.dumps(dm)).tokenizer.encode("abc") == dm.tokenizer.encode("abc")  # spawn-safe


def test_trainer_runs_prepare_setup_and_both_loaders(tmp_path, tok_dir):
    import lightning as L
    from torch import nn

    class Tiny(L.LightningModule):
        def __init__(self, vocab_size):
            super().__init__()
            self.emb, self.batches = nn.Embedding(vocab_size, 4), {"train": 0, "val": 0}

        def step(self, batch, split):
            self.batches[split] += 1
            assert batch["input_ids"].shape == batch["labels"].shape
            return self.emb(batch["input_ids"]).pow(2).mean()

        def training_step(self, batch, _):
            return self.step(batch, "train")

        def validation_step(self, batch, _):
            self.step(batch, "val")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = make(tmp_path, write_jsonl(tmp_path / "a.jsonl", documents(100)), tok_dir, val_fraction=0.2)
    model = Tiny(dm.vocab_size)
    L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
              enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=2, val_check_interval=2).fit(model, datamodule=dm)
    assert model.batches["train"] == 3 and model.batches["val"] >= 1


def test_splits_are_cached_apart_and_test_is_carved_after_validation(tmp_path, tok_dir, monkeypatch):
    docs = documents(400)
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    dm = make(tmp_path, src, tok_dir, val_fraction=0.1, test_fraction=0.1, seq_len=8)
    dm.prepare_data()  # fit: train + val only
    assert dm.is_built("train") and dm.is_built("val") and not dm.is_built("test")
    positions = {d: document_position(d) for d in docs}
    tok = dm.tokenizer
    expected = {"train": [d for d in docs if positions[d] >= 0.2], "val": [d for d in docs if positions[d] < 0.1],
                "test": [d for d in docs if 0.1 <= positions[d] < 0.2]}
    dm.prepare_splits(["test"])
    for split, ds in expected.items():
        flat, rows = unpack(dm.split_path(split))
        assert flat == stream(tok, ds)[: rows * 8 + 1], split
    assert len(list(dm.test_dataloader())) >= 1
    # building one split reads and tokenises only that split's text (here a new validation source)
    other = make(tmp_path, src, tok_dir, val_source=str(write_jsonl(tmp_path / "v.jsonl", documents(30, seed=5))),
                 test_fraction=0.1, seq_len=8)
    assert other.split_path("val") != dm.split_path("val")
    calls = []
    monkeypatch.setattr(other.tokenizer, "encode_batch", lambda texts: calls.append(texts) or tok.encode_batch(texts))
    other.prepare_splits(["val"])
    assert calls and all(t not in docs for batch in calls for t in batch)  # only the new validation text
    no_test = make(tmp_path, src, tok_dir, test_fraction=0.0)
    with pytest.raises(ValueError, match="no test split"):
        no_test.test_dataloader()
