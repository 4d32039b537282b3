"""End to end on CPU, only through the CLI and the YAML recipes: NCA stage 1 -> text stage 2 with the transfer,
an ablation on top, and a resume of stage 2 that must not transfer (or re-initialise) again."""

from __future__ import annotations

import json

import pytest
import torch

from nca.cli.errors import UsageError
from tests.helpers.cli import CONFIGS, run_cli, TINY_RUN
from tests.helpers.models import gpt_weights, StopAtStep
from tests.helpers.tokenizers import write_bpe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A few steps of the stage-1 recipe on the NCA stream; returns the run folder and its last checkpoint."""
    root = tmp_path_factory.mktemp("pipeline")
    monkeypatch = pytest.MonkeyPatch()
    run_cli(["--config", str(CONFIGS / "stage1.yaml"), *TINY_RUN, "--trainer.max_steps", "3",
             "--trainer.logger.init_args.save_dir", str(root / "runs"), "--trainer.default_root_dir", str(root),
             "--checkpoint.every_n_train_steps", "3", "--data.init_args.seq_len", "76",
             "--data.init_args.batch_size", "2", "--data.init_args.band", "null", "--data.init_args.val_rules", "2"],
            monkeypatch)
    monkeypatch.undo()
    checkpoint = root / "runs" / "stage1" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    return root, checkpoint


@pytest.fixture(scope="module")
def corpus(stage1):
    """A small text corpus and a byte-level tokenizer (257 ids), both made here."""
    root, _ = stage1
    words = "the cat sat on a mat while rain fell over quiet hills and rivers ran to the sea".split()
    gen = torch.Generator().manual_seed(0)
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(300):
            picks = torch.randint(len(words), (int(torch.randint(5, 40, (1,), generator=gen)),), generator=gen)
            f.write(json.dumps({"text": f"doc {i}: " + " ".join(words[j] for j in picks)}) + "\n")
    tokenizer = write_bpe(root / "tokenizer", [])  # byte-level: 256 bytes + <|endoftext|>
    return root / "corpus.jsonl", tokenizer


def stage2_args(root, stage1_checkpoint, corpus, *extra: str) -> list[str]:
    source, tokenizer = corpus
    return [
        "--config", str(CONFIGS / "stage2/owt.yaml"), "--config", str(CONFIGS / "init/from_nca.yaml"), *extra,
        "--config", str(CONFIGS / "model/tiny.yaml"), *TINY_RUN,
        "--model.init_from", str(stage1_checkpoint),
        "--trainer.logger.init_args.save_dir", str(root / "runs" / "from_nca"), "--trainer.default_root_dir", str(root),
        "--trainer.accumulate_grad_batches", "1", "--checkpoint.every_n_train_steps", "2",
        "--data.init_args.source", str(source), "--data.init_args.tokenizer", str(tokenizer),
        "--data.init_args.seq_len", "32", "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
        "--data.init_args.val_fraction", "0.1", "--data.init_args.cache_dir", str(root / "cache"),
    ]


EMBEDDINGS = ("transformer.wte.weight", "lm_head.weight")


def test_stage2_starts_from_stage1_blocks_and_resumes_without_transferring_again(stage1, corpus, monkeypatch):
    root, stage1_checkpoint = stage1
    source = gpt_weights(stage1_checkpoint)
    args = stage2_args(root, stage1_checkpoint, corpus)

    cli, probe = run_cli([*args, "--trainer.max_steps", "4"], monkeypatch, callbacks=(StopAtStep(2),))
    assert cli.trainer.global_step == 2
    for name, value in probe.start.items():
        if name in EMBEDDINGS:  # re-created: another vocabulary (NCA 10,048 rows -> bytes 320 rows)
            assert value.shape != source[name].shape
        else:
            assert torch.equal(value, source[name]), f"{name} was not carried from stage 1"
    stage2_checkpoint = root / "runs" / "from_nca" / "stage2-owt" / "checkpoints" / "last.ckpt"
    trained = gpt_weights(stage2_checkpoint)
    assert not torch.equal(trained["transformer.h.0.attn.qkv.weight"], source["transformer.h.0.attn.qkv.weight"])

    # Resume: the checkpoint is restored and init_from is not applied over it.
    cli, probe = run_cli([*args, "--trainer.max_steps", "4", "--ckpt_path", "last"], monkeypatch)
    assert cli.trainer.global_step == 4
    assert all(torch.equal(value, trained[name]) for name, value in probe.start.items())

    # Without --ckpt_path the CLI refuses to start over the existing run's checkpoints.
    with pytest.raises(UsageError, match="--ckpt_path last"):
        run_cli([*args, "--trainer.max_steps", "4"], monkeypatch)


def test_reinit_attention_ablation_on_top_of_the_transfer(stage1, corpus, monkeypatch):
    root, stage1_checkpoint = stage1
    source = gpt_weights(stage1_checkpoint)
    args = stage2_args(root, stage1_checkpoint, corpus, "--config", str(CONFIGS / "ablation/reinit_attention.yaml"))
    _, probe = run_cli([*args, "--trainer.max_steps", "1", "--trainer.logger.init_args.name", "reinit_attention"],
                       monkeypatch)
    for name, value in probe.start.items():
        if ".attn." in name:
            assert not torch.equal(value, source[name]), f"{name} should be re-initialised"
        elif name not in EMBEDDINGS:
            assert torch.equal(value, source[name]), f"{name} should stay carried"
