"""Induction and ICL measures on cases whose answer is known: hand-made attention, hand-set OV circuits,
a tiny model trained to copy, constructed loss curves, and `nca induction` on tiny checkpoints."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from litgpt.model import GPT

from nca.analysis.icl import document_rows, frame_losses, icl_summary, nca_rows, nca_summary, token_losses
from nca.analysis.induction import (
    attention_scores,
    candidate_ids,
    capture_attention,
    copying_scores,
    induction_report,
    ov_circuits,
    prefix_matching,
    repeated_random_tokens,
    transformerlens_induction,
)
from nca.automaton.config import NCAConfig
from nca.cli import main as nca_main
from tests.helpers.tokenizers import write_bpe
from tests.helpers.models import tiny_gpt


def small_gpt(seed=0, vocab=32, n_head=2, n_embd=32, block=64, **sizes):
    """The tests' tiny GPT with this file's sizes: a 32-id vocabulary (no padding), 2 heads, 64 positions."""
    return tiny_gpt(vocab, seed=seed, n_head=n_head, n_embd=n_embd, block_size=block, intermediate_size=2 * n_embd,
                    padded_vocab_size=vocab, **sizes)


# ------------------------------------------------------------------------------------- attention capture
@pytest.mark.parametrize("kw", [{}, {"n_head": 4, "n_query_groups": 2}, {"n_head": 4, "n_query_groups": 1},
                                {"attention_logit_softcapping": 5.0}])
def test_capture_keeps_logits_and_gives_causal_probabilities(kw):
    model = small_gpt(**kw)
    x = torch.randint(0, 32, (2, 17))
    with torch.no_grad():
        expected = model(x)
        with capture_attention(model) as records:
            got = model(x)
        after = model(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, expected)
    assert all("scaled_dot_product_attention" not in b.attn.__dict__ for b in model.transformer.h)  # restored
    probs = records[0][0]
    assert probs.shape == (2, model.config.n_head, 17, 17)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, model.config.n_head, 17))
    assert probs.triu(diagonal=1).abs().max() == 0


# ----------------------------------------------------------------------------- prefix matching by hand
TOKENS = torch.tensor([[5, 6, 7, 5, 6, 7]])  # L = 3 distinct tokens repeated twice


def as_heads(*attentions):
    return torch.stack(attentions)[None]  # [1, H, T, T]


def test_perfect_induction_attention_scores_one_and_half():
    induction = torch.zeros(6, 6)
    induction[:3] = torch.eye(6)[:3]  # first repeat: attend to self
    for i in range(3, 6):
        induction[i, i - 2] = 1.0  # the token after the earlier copy of x_i
    previous = torch.zeros(6, 6)
    previous[0, 0] = 1.0
    for i in range(1, 6):
        previous[i, i - 1] = 1.0
    probs = as_heads(induction, previous)
    assert prefix_matching(probs, TOKENS, first_query=3).tolist() == [1.0, 0.0]
    assert transformerlens_induction(probs, TOKENS).tolist() == [0.5, 0.0]  # 3 of 6 rows have a target


def test_uniform_attention_scores_by_the_definitions():
    uniform = torch.tril(torch.ones(6, 6)) / torch.arange(1, 7)[:, None]
    pm = prefix_matching(as_heads(uniform), TOKENS, first_query=3)
    tl = transformerlens_induction(as_heads(uniform), TOKENS)
    # S_3 = {1}, S_4 = {2}, S_5 = {3}; row i spreads 1 / (i + 1)
    assert pm.item() == pytest.approx((1 / 4 + 1 / 5 + 1 / 6) / 3)
    assert tl.item() == pytest.approx((1 / 4 + 1 / 5 + 1 / 6) / 6)


def test_variants_differ_where_a_token_repeats_its_predecessor():
    tokens = torch.tensor([[3, 3, 4, 3, 3, 4]])
    diagonal = as_heads(torch.eye(6))
    # TransformerLens's pattern includes j = i when x_{i-1} = x_i (rows 1 and 4); S_i never contains i
    assert prefix_matching(diagonal, tokens, first_query=3).item() == 0.0
    assert transformerlens_induction(diagonal, tokens).item() == pytest.approx(2 / 6)


def test_prefix_matching_needs_a_repeat():
    with pytest.raises(ValueError, match="repeated"):
        prefix_matching(as_heads(torch.eye(3)), torch.tensor([[1, 2, 3]]), first_query=0)


# ------------------------------------------------------------------------------------ probe sequences
def test_candidates_exclude_ids_and_trim_frequencies():
    assert candidate_ids(6, exclude=[0, 5]).tolist() == [1, 2, 3, 4]
    counts = np.array([0, 50, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 1000])
    kept = candidate_ids(20, exclude=[19], counts=counts, trim=0.1).tolist()
    assert 0 not in kept and 19 not in kept  # unseen and excluded
    assert 2 not in kept and 1 not in kept  # rarest and most common seen ids trimmed
    assert len(kept) == 18 - 2 * 1
    with pytest.raises(ValueError, match="no token ids"):
        candidate_ids(3, exclude=[0, 1, 2])


def test_repeated_random_tokens_are_seeded_repeats_of_distinct_ids():
    cand = torch.arange(10, 40)
    x = repeated_random_tokens(cand, block_len=8, repeats=3, batch=4, seed=1)
    assert x.shape == (4, 24)
    assert torch.equal(x[:, :8], x[:, 8:16]) and torch.equal(x[:, :8], x[:, 16:])
    assert all(len(set(row[:8].tolist())) == 8 for row in x)
    assert torch.equal(x, repeated_random_tokens(cand, 8, 3, 4, seed=1))
    assert not torch.equal(x, repeated_random_tokens(cand, 8, 3, 4, seed=2))
    with pytest.raises(ValueError, match="block_len"):
        repeated_random_tokens(cand, 31, 2, 1)


# ------------------------------------------------------------------------------------------- copying
def set_ov(model, value_sign: list[float], out_sign: float = 1.0):
    """Embedding = unembedding = E; group g's value reads the first d_head dims with sign value_sign[g]; every
    head writes them back with out_sign: the OV circuit of a head is +-E P E^T (P a projection)."""
    cfg = model.config
    hs, nh, ng = cfg.head_size, cfg.n_head, cfg.n_query_groups
    with torch.no_grad():
        model.lm_head.weight.copy_(model.transformer.wte.weight)
        for block in model.transformer.h:
            w = block.attn.qkv.weight
            w[(nh + ng) * hs:] = 0
            for g, sign in enumerate(value_sign):
                w[(nh + ng) * hs + g * hs: (nh + ng) * hs + (g + 1) * hs, :hs] = sign * torch.eye(hs)
            block.attn.proj.weight.zero_()
            for h in range(nh):
                block.attn.proj.weight[:hs, h * hs: (h + 1) * hs] = out_sign * torch.eye(hs)


def test_identity_ov_copies_and_negated_ov_anti_copies():
    model = small_gpt()
    set_ov(model, [1.0, 1.0])
    assert copying_scores(model).min() > 0.999
    set_ov(model, [1.0, 1.0], out_sign=-1.0)
    assert copying_scores(model).max() < -0.999


def test_grouped_query_heads_read_their_groups_value():
    model = small_gpt(n_head=4, n_query_groups=2)
    set_ov(model, [-1.0, 1.0])  # heads 0, 1 share group 0; heads 2, 3 group 1
    scores = copying_scores(model)
    assert scores[:, :2].max() < -0.999 and scores[:, 2:].min() > 0.999


def test_ov_product_has_the_spectrum_of_the_vocabulary_circuit():
    model = small_gpt(n_head=4, n_query_groups=2, vocab=24)
    cfg, hs = model.config, model.config.head_size
    block = model.transformer.h[1]
    start = (cfg.n_head + cfg.n_query_groups) * hs
    w_v = block.attn.qkv.weight[start + hs: start + 2 * hs].double()  # group 1 -> head 3
    w_o = block.attn.proj.weight[:, 3 * hs: 4 * hs].double()
    full = model.lm_head.weight.double() @ w_o @ w_v @ model.transformer.wte.weight.double().T  # [V, V]
    big = torch.linalg.eigvals(full)
    big = big[big.abs().argsort(descending=True)][:hs]
    small = torch.linalg.eigvals(ov_circuits(model)[1, 3])
    assert torch.allclose(small.abs().sort().values, big.abs().sort().values, atol=1e-8)
    assert torch.allclose(small.real.sum(), big.real.sum(), atol=1e-8)


# --------------------------------------------------------------------------- a model that learned to copy
def test_trained_copying_model_has_an_induction_head_and_random_one_not():
    torch.manual_seed(0)
    model = small_gpt(vocab=32, n_embd=64)
    cand, block = candidate_ids(32), 12
    probe = repeated_random_tokens(cand, block, 2, 8, seed=10_000)
    untrained = attention_scores(model.eval(), probe, block)["prefix_matching"]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):  # the second half is predictable only by copying from the first
        x = repeated_random_tokens(cand, block, 2, 32, seed=step)
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits[:, block - 1:].flatten(0, 1), x[:, block:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    report = induction_report(model.eval(), probe, block)
    assert untrained.max() < 0.2
    assert report["top_prefix_matching"]["score"] > 0.8 and report["top_prefix_matching"]["layer"] == 1
    assert report["top_prefix_matching"]["copying"] > 0
    assert report["induction_heads"] and report["headline"] == "prefix_matching"
    assert max(map(max, report["transformerlens_mul"])) < 0.51  # two repeats: at most about one half


# ------------------------------------------------------------------------------------------------ ICL
def test_token_losses_are_next_token_cross_entropy():
    model = small_gpt()
    rows = torch.randint(0, 32, (3, 9))
    got = token_losses(model, rows, batch_size=2)
    with torch.no_grad():
        logits = model(rows[:, :-1])
    expected = F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="none").view(3, 8)
    torch.testing.assert_close(got, expected)


def test_icl_score_and_slope_of_a_log_curve():
    t = torch.arange(1, 601, dtype=torch.float32)
    losses = (10.0 - 2.0 * torch.log(t)).repeat(4, 1)
    summary = icl_summary(losses)
    assert summary["icl_score"] == pytest.approx(-2.0 * math.log(10), rel=1e-5)
    assert summary["slope_vs_log_t"] == pytest.approx(-2.0, rel=1e-4)
    assert len(summary["loss_by_position"]) == 600
    with pytest.raises(ValueError, match="501"):
        icl_summary(losses[:, :499])


def test_document_rows_keep_long_documents_only():
    rows = document_rows([[1] * 3, list(range(10)), list(range(5, 20))], length=6, limit=5)
    assert rows.tolist() == [list(range(6)), list(range(5, 11))]
    with pytest.raises(ValueError, match="no document"):
        document_rows([[1, 2]], 6, 1)


def test_frame_losses_average_the_targets_of_each_frame():
    frame_len = 4
    position = torch.arange(1, 12)  # targets 1..11 of a 12-id row: frames 0 (1-3), 1 (4-7), 2 (8-11)
    losses = (10.0 - (position // frame_len).float()).repeat(2, 1)
    assert frame_losses(losses, frame_len).tolist() == [10.0, 9.0, 8.0]
    assert nca_summary(losses, frame_len)["frame_slope"] == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------------------ CLI
def save_ckpt(path, vocab, data, seed=0):
    """A Lightning-format checkpoint of a tiny CausalLM-built GPT (as `nca fit` writes it)."""
    from nca.lit_modules.model import build_config

    hparams = {"config": {"block_size": 64, "n_layer": 2, "n_embd": 32, "n_head": 2, "intermediate_size": 64},
               "vocab_size": vocab}
    torch.manual_seed(seed)
    model = GPT(build_config(hparams["config"], vocab))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "data": data}, path)
    return str(path)


NCA_DATA = {"class_path": "nca.datamodules.nca.NCADataModule",
            "init_args": {"nca": {"n_states": 2, "grid": 4, "patch": 2}, "seq_len": 40, "band": None}}


def test_cli_writes_heatmaps_curves_and_json_and_refuses_to_overwrite(tmp_path, capsys):
    # 2 states, 2x2 patches: 16 patch ids + start/end = 18 tokens
    a = save_ckpt(tmp_path / "step=1.ckpt", 18, NCA_DATA, seed=1)
    b = save_ckpt(tmp_path / "step=2.ckpt", 18, NCA_DATA, seed=2)
    out = tmp_path / "out"
    args = ["induction", "--ckpt", a, "--ckpt", b, "--out", str(out), "--block_len", "8", "--sequences", "3",
            "--probe_sequences", "2"]
    assert nca_main(args) == 0
    assert {p.name for p in out.iterdir()} == {"heads-step=1.png", "heads-step=2.png", "loss_by_position.png", "induction.json"}
    report = json.loads((out / "induction.json").read_text())
    assert report["step=2"]["step"] == 2 and len(report["step=1"]["prefix_matching"]) == 2
    assert len(report["step=1"]["nca"]["loss_by_frame"]) == 7  # 40 targets of 6-token frames
    assert nca_main(args) == 2 and "already exists" in capsys.readouterr().err


def test_cli_text_checkpoint_gives_icl_score(tmp_path):
    tok = write_bpe(tmp_path / "tok", [])  # byte-level: 256 bytes + <|endoftext|>
    corpus = tmp_path / "docs.jsonl"
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")  # byte ids: enough candidates for an 8-token block
    corpus.write_text("".join(json.dumps({"text": "".join(rng.choice(letters, 60))}) + "\n" for _ in range(4)))
    data = {"class_path": "nca.datamodules.text.TextDataModule", "init_args": {"tokenizer": str(tok)}}
    ckpt = save_ckpt(tmp_path / "last.ckpt", 257, data)
    out = tmp_path / "out"
    assert nca_main(["induction", "--ckpt", ckpt, "--data", str(corpus), "--out", str(out), "--early", "5",
                     "--late", "40", "--block_len", "8", "--documents", "3", "--probe_sequences", "2"]) == 0
    text = json.loads((out / "induction.json").read_text())["last"]["text"]
    assert text["documents"] == 3 and len(text["loss_by_position"]) == 40 and math.isfinite(text["icl_score"])


def test_cli_rejects_a_text_checkpoint_without_a_corpus(tmp_path, capsys):
    data = {"class_path": "nca.datamodules.text.TextDataModule", "init_args": {"tokenizer": "gpt2"}}
    ckpt = save_ckpt(tmp_path / "last.ckpt", 40, data)
    assert nca_main(["induction", "--ckpt", ckpt, "--out", str(tmp_path / "o")]) == 2
    assert "give --data a text corpus" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_labels_are_unique_file_safe_stems():
    from nca.cli.induction import labels_for

    paths = ["runs/a/checkpoints/last.ckpt", "runs/b/checkpoints/last.ckpt", "runs/a/checkpoints/epoch=0-step=100.ckpt",
             "exports/my model"]
    assert labels_for(paths) == ["last-1", "last-2", "epoch=0-step=100", "my_model"]
