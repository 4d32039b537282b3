"""Stage-3 fine-tuning data: GSM8K and BIG-bench Lite rows, masks, splits; the recipes parse.

Also the small data makers the evaluation tests share (a byte-level tokenizer, a tiny GSM8K directory and
a tiny BBL task tree), written into the test's own tmp_path.
"""

from __future__ import annotations

import tarfile

import pytest
import torch

from nca.datamodules.bbl import BBLDataModule, load_tasks, split_tasks
from nca.datamodules.gsm8k import GSM8KDataModule, load_split, parse_example
from nca.datamodules.prompts import fit_row, pack_row
from nca.datamodules.tokenizers import load_tokenizer
from tests.helpers.cli import parse
from tests.helpers.data import gsm8k_record, write_bbl, write_gsm8k
from tests.helpers.tokenizers import write_tokenizer

IGNORE = -100


def supervised_text(tokenizer, row: dict[str, torch.Tensor]) -> str:
    ids = row["labels"][row["labels"] != IGNORE].tolist()
    return tokenizer.decode([i for i in ids if i != tokenizer.eot_id])


# ------------------------------------------------------------------------------------------------ rows
def test_pack_row_shifts_labels_and_masks_prompt_and_padding():
    row = pack_row([([1, 2, 3], False), ([4, 5], True)], seq_len=7, pad_id=0)
    assert row["input_ids"].tolist() == [1, 2, 3, 4, 5, 0, 0]
    assert row["labels"].tolist() == [IGNORE, IGNORE, 4, 5, IGNORE, IGNORE, IGNORE]
    with pytest.raises(ValueError, match="fit_row"):
        pack_row([([1] * 9, True)], seq_len=7, pad_id=0)


def test_fit_row_drops_earliest_exemplars_then_cuts_the_prompt_start():
    shots = [[([1] * 4, False), ([2] * 2, True)], [([3] * 4, False), ([4] * 2, True)]]
    target = [([5] * 3, False), ([6] * 2, True)]
    assert fit_row(shots, target, 11) == [([3] * 4, False), ([4] * 2, True), *target]
    assert fit_row(shots, target, 4) == [([5] * 2, False), ([6] * 2, True)]
    assert fit_row(shots, target, 1) == [([6], True)]


# ---------------------------------------------------------------------------------------------- GSM8K
def test_gsm8k_parse_keeps_annotations_and_cleans_the_number():
    example = parse_example({"question": " Q? ", "answer": "1,200+3 = <<1200+3=1203>>1203\n#### 1,203"})
    assert example.reasoning == "1,200+3 = <<1200+3=1203>>1203" and example.number == "1203"
    assert example.prompt + example.answer == "Question:\nQ?\nAnswer:\n1,200+3 = <<1200+3=1203>>1203\nFinal Answer: 1203"
    with pytest.raises(ValueError, match="####"):
        parse_example({"question": "Q", "answer": "no marker"})


def test_gsm8k_rows_supervise_every_answer_and_no_question(tmp_path):
    source, tok_dir = write_gsm8k(tmp_path / "gsm8k"), write_tokenizer(tmp_path / "tok")
    dm = GSM8KDataModule(str(source), str(tok_dir), seq_len=1024, batch_size=2, val_fraction=0.2, seed=3)
    dm.setup()
    tok = load_tokenizer(tok_dir)
    train, val = dm.splits()
    assert len(train) + len(val) == 40 and val and not {e.question for e in train} & {e.question for e in val}
    assert dm.vocab_size == 257 and len(dm.rows("train")) == len(train) and len(dm.rows("val")) == len(val)
    answers = {e.answer for e in train}
    for data, targets in ((dm.rows("train"), train), (dm.rows("val"), val)):
        for row, target in zip(data.rows, targets):
            assert row["input_ids"].shape == (1024,) and row["labels"].shape == (1024,)
            text = tok.decode(row["input_ids"].tolist())
            assert text.count("Question:") == 6  # 5 exemplars + the target
            supervised = supervised_text(tok, row)
            assert "Question" not in supervised and supervised.endswith(target.answer)
            shots = [part for part in supervised.split("Final Answer: ")[1:-1]]
            assert len(shots) == 5
            # every exemplar answer is a TRAIN answer, never the target itself
            shown = [s for s in text.split(tok.decode([tok.eot_id]))[:-1] if s.strip()]
            assert all(s.split("Answer:\n", 1)[1] in answers for s in shown[:5])
            assert target.answer not in [s.split("Answer:\n", 1)[1] for s in shown[:5]]
    # labels are the next ids: where supervised, label t == input t + 1
    row = dm.rows("train").rows[0]
    keep = (row["labels"] != IGNORE).nonzero().flatten()
    assert torch.equal(row["labels"][keep[:-1]], row["input_ids"][keep[:-1] + 1])


def test_gsm8k_rows_are_deterministic_and_fit_short_rows(tmp_path):
    source, tok_dir = write_gsm8k(tmp_path / "gsm8k"), write_tokenizer(tmp_path / "tok")
    first = GSM8KDataModule(str(source), str(tok_dir), seq_len=1024, batch_size=2, seed=1)
    again = GSM8KDataModule(str(source), str(tok_dir), seq_len=1024, batch_size=2, seed=1)
    other = GSM8KDataModule(str(source), str(tok_dir), seq_len=1024, batch_size=2, seed=2)
    rows = [m.build_rows("train") for m in (first, again, other)]
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(rows[0], rows[1]))
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(rows[0], rows[2]))
    short = GSM8KDataModule(str(source), str(tok_dir), seq_len=200, batch_size=2, seed=1)
    tok = load_tokenizer(tok_dir)
    for row, target in zip(short.build_rows("train"), short.splits()[0]):
        assert supervised_text(tok, row).endswith(target.answer)  # exemplars dropped, the target kept


def test_rows_stream_once_per_pass_and_held_out_splits_once_in_order(tmp_path):
    source, tok_dir = write_gsm8k(tmp_path / "gsm8k"), write_tokenizer(tmp_path / "tok")
    dm = GSM8KDataModule(str(source), str(tok_dir), seq_len=256, batch_size=4, val_fraction=0.2, seed=0)
    dm.setup("fit")
    train = dm.rows("train").rows
    key = lambda ids: tuple(ids.tolist())  # noqa: E731
    index = {key(r["input_ids"]): i for i, r in enumerate(train)}
    stream = iter(dm.train_dataloader())
    per_pass = len(train) // 4  # 32 rows: 8 batches a pass
    seen = [index[key(ids)] for _ in range(2 * per_pass) for ids in next(stream)["input_ids"]]
    assert sorted(seen[: len(train)]) == sorted(seen[len(train):]) == list(range(len(train)))
    assert seen[: len(train)] != seen[len(train):]  # each pass in its own seeded order
    again = iter(dm.train_dataloader())
    assert torch.equal(next(again)["input_ids"], torch.stack([train[i]["input_ids"] for i in seen[:4]]))
    val = [ids for batch in dm.val_dataloader() for ids in batch["input_ids"]]
    assert [key(v) for v in val] == [key(r["input_ids"]) for r in dm.rows("val").rows]
    dm.setup("test")
    assert sum(len(b["input_ids"]) for b in dm.test_dataloader()) == 6  # the GSM8K test split, for `nca test`


def test_gsm8k_hugging_face_loader_reads_the_main_subset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, subset=None, split=None, **kwargs):
        calls.append((name, subset, split))
        return [gsm8k_record(i) for i in range(3)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_split("openai/gsm8k", "test")
    assert calls == [("openai/gsm8k", "main", "test")] and [e.number for e in examples] == ["3", "7", "11"]


def test_gsm8k_bad_source_fails_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        GSM8KDataModule(str(tmp_path), str(write_tokenizer(tmp_path / "tok")))
    assert len(load_split(str(write_gsm8k(tmp_path / "g")), "test")) == 6


# ------------------------------------------------------------------------------------------------ BBL
def test_bbl_split_is_deterministic_whatever_the_file_order_and_archive(tmp_path):
    plain = split_tasks(load_tasks(write_bbl(tmp_path / "a")), 0.25, 350, 5)
    reversed_ = split_tasks(load_tasks(write_bbl(tmp_path / "b", reverse=True)), 0.25, 350, 5)
    archive = tmp_path / "bbl.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for path in sorted((tmp_path / "a").rglob("task.json")):
            tar.add(path, arcname=str(path.relative_to(tmp_path / "a")))
    packed = split_tasks(load_tasks(archive), 0.25, 350, 5)
    assert plain == reversed_ == packed
    assert list(plain) == ["logical_deduction", "operators", "winowhy"]  # non-English task left out
    for train, val in plain.values():
        assert train and val and not {e.input for e in train} & {e.input for e in val}
    mixed = {len(e.choices) for e in plain["logical_deduction"][0] + plain["logical_deduction"][1]}
    assert mixed == {3, 5}
    capped = split_tasks(load_tasks(tmp_path / "a"), 0.25, 4, 3)
    assert all(len(t) == 4 and len(v) <= 4 for t, v in capped.values())
    assert list(split_tasks(load_tasks(tmp_path / "a"), 0.25, 350, 45)) == ["winowhy"]  # ~60 of 80 train


def test_bbl_rows_supervise_only_the_answer(tmp_path):
    dm = BBLDataModule(str(write_bbl(tmp_path / "bbl")), str(write_tokenizer(tmp_path / "tok")), seq_len=512,
                       batch_size=2, val_fraction=0.25, min_train_examples=5, seed=0)
    dm.setup()
    tok = load_tokenizer(tmp_path / "tok")
    assert dm.used_tasks == ["logical_deduction", "operators", "winowhy"]
    train = [e for task in dm.used_tasks for e in dm.splits()[task][0]]
    assert len(dm.rows("train")) == len(train)
    shots = set()
    for row, example in zip(dm.rows("train").rows, train):
        text = tok.decode(row["input_ids"].tolist())
        assert supervised_text(tok, row) == example.answer
        assert text.rstrip(tok.decode([tok.eot_id])).endswith(example.prompt + example.answer)
        shots.add(text.count("Question:") - 1)
        if example.choices:
            assert all(f"choice: {c}\n" in text for c in example.choices)
    assert shots == {0, 1, 2, 3}


def test_bbl_unknown_task_and_missing_source_fail_at_once(tmp_path):
    tok = str(write_tokenizer(tmp_path / "tok"))
    with pytest.raises(ValueError, match="Unknown BBL tasks"):
        BBLDataModule(str(write_bbl(tmp_path / "bbl")), tok, tasks=["winowhy", "not_a_task"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BBLDataModule(str(tmp_path / "missing.tar.xz"), tok)


# -------------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("recipe", ["gsm8k", "bbl"])
def test_stage3_recipes_parse_and_match_the_paper(recipe):
    
    paper = {"gsm8k": dict(lr=1e-5, rows=512, steps=139), "bbl": dict(lr=5e-6, rows=64, steps=55)}
    config = parse(f"configs/stage3/{recipe}.yaml")
    model, trainer, data = config["model"], config["trainer"], config["data"]["init_args"]
    assert model["lr"] == paper[recipe]["lr"] and model["warmup_fraction"] == 0.1 and model["weight_decay"] == 0.0
    assert model["reinit_embeddings"] is False and model["init_from"]
    assert trainer["gradient_clip_val"] == 1.0 and trainer["max_steps"] == paper[recipe]["steps"]
    assert data["batch_size"] * trainer["accumulate_grad_batches"] * 8 == paper[recipe]["rows"]
    assert parse(f"configs/stage3/{recipe}.yaml", "configs/model/1.6b.yaml")["model"]["config"]["n_layer"] == 24
    cpu = parse(f"configs/stage3/{recipe}.yaml", "configs/cpu/stage3.yaml")
    assert cpu["model"]["config"] is None  # the defaults: the tiny model of the CPU stages 1 and 2
    assert cpu["data"]["init_args"]["seq_len"] == 256 and cpu["trainer"]["precision"] == "32-true"
