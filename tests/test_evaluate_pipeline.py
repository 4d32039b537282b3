"""End to end on CPU through the CLI: a few stage-2 steps on a tiny text corpus, a stage-3 GSM8K fine-tune
from that checkpoint (embeddings kept), then ``nca evaluate`` on gsm8k, bbl (both modes) and perplexity."""

from __future__ import annotations

import json

import pytest
import torch

from nca.cli import main as nca
from tests.helpers.cli import CONFIGS, run_cli, TINY_RUN
from tests.helpers.data import write_bbl, write_gsm8k
from tests.helpers.models import gpt_weights
from tests.helpers.tokenizers import write_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(root, tokenizer dir, stage-2 checkpoint, stage-3 checkpoint), each stage a couple of steps."""
    root = tmp_path_factory.mktemp("stage3")
    tokenizer = write_tokenizer(root / "tok")
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"doc {i}: the answer is {i % 7} apples and {i % 5} pears."}) + "\n")
    monkeypatch = pytest.MonkeyPatch()
    run_cli(["--config", str(CONFIGS / "stage2/owt.yaml"), "--config", str(CONFIGS / "model/tiny.yaml"), *TINY_RUN,
             "--trainer.max_steps", "2", "--trainer.accumulate_grad_batches", "1",
             "--trainer.logger.init_args.save_dir", str(root / "runs"), "--trainer.default_root_dir", str(root),
             "--checkpoint.every_n_train_steps", "2", "--data.init_args.source", str(root / "corpus.jsonl"),
             "--data.init_args.tokenizer", str(tokenizer), "--data.init_args.seq_len", "32",
             "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
             "--data.init_args.val_fraction", "0.1", "--data.init_args.cache_dir", str(root / "cache")], monkeypatch)
    stage2 = root / "runs" / "stage2-owt" / "checkpoints" / "last.ckpt"
    cli, _ = run_cli(["--config", str(CONFIGS / "stage3/gsm8k.yaml"), "--config", str(CONFIGS / "cpu/stage3.yaml"),
                      *TINY_RUN, "--trainer.max_steps", "2", "--model.init_from", str(stage2),
                      "--trainer.logger.init_args.save_dir", str(root / "runs"), "--trainer.default_root_dir", str(root),
                      "--checkpoint.every_n_train_steps", "2", "--data.init_args.source", str(write_gsm8k(root / "gsm8k")),
                      "--data.init_args.tokenizer", str(tokenizer), "--data.init_args.seq_len", "128",
                      "--data.init_args.batch_size", "2", "--data.init_args.val_fraction", "0.2"], monkeypatch)
    monkeypatch.undo()
    assert cli.trainer.global_step == 2
    stage3 = root / "runs" / "stage3-gsm8k" / "checkpoints" / "last.ckpt"
    return root, tokenizer, stage2, stage3


def test_stage3_starts_from_stage2_with_its_embeddings(trained):
    _, _, stage2, stage3 = trained
    before, after = gpt_weights(stage2), gpt_weights(stage3)
    assert before.keys() == after.keys() and before["transformer.wte.weight"].shape == after["transformer.wte.weight"].shape
    # 2 AdamW steps at lr 1e-4 from the stage-2 weights: close to them, far from a fresh init
    drift = (after["transformer.wte.weight"] - before["transformer.wte.weight"]).abs().max()
    assert 0 < drift < 1e-2


def results_of(folder) -> dict:
    results = json.loads((folder / "results.json").read_text())
    assert results["complete"] and all(isinstance(v, float) for v in results["metrics"].values())
    return results


def evaluate(argv: list[str]) -> int:
    return nca(["evaluate", *argv])


def test_evaluate_gsm8k_bbl_and_perplexity(trained, capsys):
    root, tokenizer, stage2, stage3 = trained
    common = ["--ckpt", str(stage3), "--device", "cpu", "--batch_size", "4"]
    out = root / "eval"

    assert evaluate([*common, "--task", "gsm8k", "--data", str(root / "gsm8k"), "--limit", "2", "--n", "2",
                     "--max_new_tokens", "6", "--out", str(out / "gsm8k")]) == 0
    gsm8k = results_of(out / "gsm8k")
    assert {"pass@1/strict", "pass@2/flexible", "pass@1/last_word"} <= set(gsm8k["metrics"])
    samples = [json.loads(x) for x in (out / "gsm8k" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {"problem", "sample", "completion", "extracted", "verdict", "reason",
                                  "exemplars_dropped", "reply_budget"} <= set(samples[0])
    assert all(s["new_tokens"] <= min(6, s["reply_budget"]) for s in samples)
    assert gsm8k["headline"] == "pass@1/strict" and "Final Answer" in gsm8k["headline_rule"]

    bbl = write_bbl(root / "bbl")
    for mode in ("generate", "logprob"):
        assert evaluate([*common, "--task", "bbl", "--data", str(bbl), "--limit", "1", "--min_train_examples", "5",
                         "--mode", mode, "--max_new_tokens", "4", *(["--n", "2"] if mode == "generate" else []),
                         "--out", str(out / f"bbl-{mode}")]) == 0
        results = results_of(out / f"bbl-{mode}")
        assert results["tasks"] == (["logical_deduction", "operators", "winowhy"] if mode == "generate"
                                    else ["logical_deduction", "winowhy"])
        assert all(0.0 <= row["pass@1/paper"] <= 1.0 for row in results["per_task"].values())
        assert results["headline"] in results["metrics"] and results["headline"].endswith("/chance_corrected")
    chosen = [json.loads(x) for x in (out / "bbl-logprob" / "samples.jsonl").read_text().splitlines()]
    assert all(len(c["logprobs"]) in (2, 3, 5) and c["completion"].startswith("option") for c in chosen)

    assert evaluate(["--ckpt", str(stage2), "--task", "perplexity", "--limit", "2", "--batch_size", "2",
                     "--device", "cpu", "--out", str(out / "ppl")]) == 0
    ppl = json.loads((out / "ppl" / "results.json").read_text())
    assert ppl["batches"] == 2 and ppl["tokens"] == 2 * 2 * 32
    assert ppl["metrics"]["ppl"] == pytest.approx(torch.tensor(ppl["metrics"]["loss"]).exp().item())
    assert evaluate(["--ckpt", str(stage3), "--task", "perplexity", "--device", "cpu", "--out", str(out / "no")]) == 2
    assert "not text" in capsys.readouterr().err
