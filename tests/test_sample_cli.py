"""``nca sample`` on checkpoints the tests make: a tiny stage-1 NCA model and a tiny text model."""

import json

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from nca.datamodules.nca import NCADataModule
from nca.datamodules.tokenizers import _byte_decoder
from nca.lit_modules.causal_lm import CausalLM
from nca.automaton.config import NCAConfig
from nca.cli import main
from nca.cli.sample import decode_frames
from nca.automaton.tokenize import PatchTokenizer
from tests.helpers.tokenizers import write_bpe

TINY = dict(n_layer=1, n_embd=32, n_head=4, block_size=64)
AUTOMATON = NCAConfig(n_states=2, grid=4, patch=2)  # 4 patches of 16 ids: 6-token frames, 18 ids
BYTE_OF_ID = list(_byte_decoder().values())  # the toy tokenizer's id i is this byte


def fit_and_save(datamodule, vocab_size: int, path) -> None:
    module = CausalLM(config=TINY, vocab_size=vocab_size, warmup_steps=1)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(path)


@pytest.fixture(scope="module")
def nca_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("stage1") / "nca.ckpt"
    dm = NCADataModule(nca=AUTOMATON, seq_len=59, batch_size=2, band=None, val_rules=None, test_rules=None,
                       val_sequences=2)
    fit_and_save(dm, dm.vocab_size, path)
    return path


class ToyText(L.LightningDataModule):
    """Rows of a tiny byte-level BPE; its tokenizer directory travels in the checkpoint like TextDataModule's."""

    def __init__(self, tokenizer: str):
        super().__init__()
        self.save_hyperparameters()
        self.vocab_size = 257

    def train_dataloader(self):
        rows = torch.randint(0, self.vocab_size, (4, 17), generator=torch.Generator().manual_seed(0))
        return torch.utils.data.DataLoader([{"input_ids": r[:-1], "labels": r[1:]} for r in rows], batch_size=4)


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage2")
    tokenizer = write_bpe(root / "tokenizer", [])  # byte-level: 256 bytes + <|endoftext|>
    fit_and_save(ToyText(str(tokenizer)), 257, root / "text.ckpt")
    return root / "text.ckpt", tokenizer


def test_text_model_prints_and_writes_completions(text_ckpt, tmp_path, capsys):
    ckpt, _ = text_ckpt
    out = tmp_path / "samples.jsonl"
    args = ["sample", "--ckpt", str(ckpt), "--prompt", "hi", "--n", "3", "--max_new_tokens", "8", "--seed", "1"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["sample"] for line in lines] == [0, 1, 2]
    for line in lines:
        assert line["finish"] in ("stop", "length") and len(line["tokens"]) <= 8
        assert line["text"] == bytes(BYTE_OF_ID[t] for t in line["tokens"]).decode("utf-8", errors="replace")
        assert f"--- sample {line['sample']} " in printed and "hi" + line["text"] in printed
    assert main([*args, "--out", str(out)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 3
    again = tmp_path / "again.jsonl"
    assert main([*args, "--out", str(again)]) == 0  # same seed, same completions
    assert [json.loads(line)["tokens"] for line in again.read_text().splitlines()] == [x["tokens"] for x in lines]
    fixed = tmp_path / "fixed.jsonl"
    assert main([*args, "--out", str(fixed), "--decoding", "fixed"]) == 0  # fixed shapes: the same samples
    assert [json.loads(line)["tokens"] for line in fixed.read_text().splitlines()] == [x["tokens"] for x in lines]


def test_text_model_needs_a_prompt_and_a_known_tokenizer(text_ckpt, tmp_path, capsys):
    ckpt, tokenizer = text_ckpt
    assert main(["sample", "--ckpt", str(ckpt)]) == 2
    assert "--prompt" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(ckpt), "--prompt", "a", "--tokenizer", str(tmp_path / "none")]) == 2
    assert "tokenizer" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(ckpt), "--prompt", "a", "--top_p", "0"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(ckpt), "--prompt", "a", "--tokenizer", str(tokenizer), "--max_new_tokens",
                 "3", "--temperature", "0"]) == 0


def test_nca_model_draws_predicted_frames_beside_the_true_ones(nca_ckpt, tmp_path, capsys):
    out = tmp_path / "new" / "frames.png"  # a folder that does not exist yet
    args = ["sample", "--ckpt", str(nca_ckpt), "--n", "2", "--context_frames", "3", "--frames", "4", "--index", "1"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line.startswith("t=")]
    assert [r[0] for r in rows] == ["t=3", "t=4", "t=5", "t=6"]
    accuracies = np.array([[float(v) for v in r[1:]] for r in rows])
    assert accuracies.shape == (4, 3) and ((accuracies >= 0) & (accuracies <= 1)).all()
    assert np.allclose(accuracies[:, :2].mean(1), accuracies[:, 2], atol=1e-3)  # the mean column
    image = Image.open(out)
    assert image.width > 4 * 4 * 8 and image.height > 3 * 4 * 8  # 4 frames wide, 3 rows (true + 2 samples)
    assert main([*args, "--out", str(out)]) == 2 and "already exists" in capsys.readouterr().err
    too_long = ["sample", "--ckpt", str(nca_ckpt), "--context_frames", "8", "--frames", "8",
                "--out", str(tmp_path / "x.png")]
    assert main(too_long) == 2 and "context" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_decode_frames_marks_tokens_that_are_not_patches():
    tok = PatchTokenizer.from_config(AUTOMATON)
    frames = torch.randint(0, 2, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    ids = tok.encode(frames)
    grids, invalid = decode_frames(ids, tok)
    assert torch.equal(grids, frames) and not invalid.any()
    broken = ids.clone()
    broken[1] = tok.end_id  # the first patch of frame 0 is a delimiter
    broken[tok.frame_len] = 5  # a patch id where frame 1's start belongs: the frame still decodes
    grids, invalid = decode_frames(broken, tok)
    assert invalid[0, :2, :2].all() and invalid.sum() == 4
    assert torch.equal(grids[1], frames[1]) and torch.equal(grids[0, 2:], frames[0, 2:])
