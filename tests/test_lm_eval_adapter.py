"""lm-eval bridge: our scores equal the model's own log-probabilities, and lm-eval runs local tasks offline."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from nca.datamodules.tokenizers import load_tokenizer
from nca.evaluation import lm_eval_adapter
from nca.evaluation.lm_eval_adapter import NCALM
from nca.lit_modules.checkpoint import load_model
from tests.helpers.models import make_lightning_ckpt


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_lightning_ckpt(tmp_path_factory.mktemp("trained"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def request(kind: str, *args) -> Instance:
    return Instance(kind, doc={}, arguments=args, idx=0)


def direct_logprob(ckpt, tok_dir, context: str, continuation: str) -> float:
    tok = load_tokenizer(tok_dir)
    ctx, cont = tok.encode(context), tok.encode(continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = F.log_softmax(load_model(ckpt).model(ids[:, :-1]), -1)[0]
    return sum(logprobs[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont))


def test_loglikelihood_equals_the_models_log_probabilities_at_any_batch_size(trained):
    ckpt, tok_dir = trained
    pairs = [("the cell in", " a cellar"), ("Hello", " world"), ("well", "..."), ("the world: ", "the cell")]
    one = NCALM(str(ckpt), batch_size=1).loglikelihood([request("loglikelihood", *p) for p in pairs])
    three = NCALM(str(ckpt), batch_size=3).loglikelihood([request("loglikelihood", *p) for p in pairs])
    for (a, greedy_a), (b, greedy_b) in zip(one, three):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
    for (context, continuation), (score, _) in zip(pairs[:3], one):
        assert score == pytest.approx(direct_logprob(ckpt, tok_dir, context, continuation), abs=1e-4)
    # A trailing context space joins the continuation: " the cell" is scored as its own tokens.
    assert one[3][0] == pytest.approx(direct_logprob(ckpt, tok_dir, "the world:", " the cell"), abs=1e-4)


def test_greedy_flag_and_scores_over_all_embedding_rows(trained):
    """With a zero head every row has logit 0: each token scores -log(rows) and argmax is id 0 ("!")."""
    ckpt, _ = trained
    lm = NCALM(str(ckpt))
    with torch.no_grad():
        lm.model.lm_head.weight.zero_()
    assert lm.tok_encode("!") == [0]
    (score, greedy), (_, not_greedy) = lm.loglikelihood([request("loglikelihood", "the cell", "!"),
                                                         request("loglikelihood", "the cell", " a")])
    assert greedy and not not_greedy
    assert score == pytest.approx(-math.log(lm.model.config.padded_vocab_size), abs=1e-5)


def test_rolling_loglikelihood_is_the_validation_loss_of_the_text(trained):
    ckpt, tok_dir = trained
    text = "the cell in a cellar, the world"
    ids = load_tokenizer(tok_dir).encode(text)
    row = torch.tensor([[load_tokenizer(tok_dir).eot_id] + ids])
    with torch.no_grad():
        loss = F.cross_entropy(load_model(ckpt).model(row[:, :-1])[0], row[0, 1:], reduction="sum").item()
    (score,) = NCALM(str(ckpt)).loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert score == pytest.approx(-loss, abs=1e-3)
    # Longer than the context: disjoint windows still score every token once, with finite log-probabilities.
    (short_ctx,) = NCALM(str(ckpt), max_length=8).loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert math.isfinite(short_ctx) and short_ctx != pytest.approx(score, abs=1e-6)


def test_generate_until_is_greedy_and_cut_before_the_stop_string(trained):
    ckpt, _ = trained
    lm = NCALM(str(ckpt))
    ids = lm.tok_encode("Hello the")
    vocab = lm.model.config.vocab_size
    with torch.no_grad():  # a plain greedy loop over the real (unpadded) vocabulary, as the sampler picks
        for _ in range(6):
            ids.append(int(lm.model(torch.tensor([ids]))[0, -1, :vocab].argmax()))
    expected = lm.tokenizer.decode(ids[len(lm.tok_encode("Hello the")):])
    (plain,) = lm.generate_until([request("generate_until", "Hello the", {"max_gen_toks": 6, "until": []})])
    assert plain == expected
    stop = expected[2:4]
    (cut,) = lm.generate_until([request("generate_until", "Hello the", {"max_gen_toks": 6, "until": [stop]})])
    assert cut == expected[: expected.find(stop)]


def test_model_args_win_over_lm_evals_own_flags(trained):
    ckpt, tok_dir = trained
    lm = NCALM.create_from_arg_string(f"ckpt={ckpt},tokenizer={tok_dir},batch_size=4",
                                      {"batch_size": "1", "device": "cpu", "max_batch_size": None})
    assert lm.batch_size == 4 and lm.device.type == "cpu"
    with pytest.raises(ValueError, match="batch_size"):
        NCALM(str(ckpt), batch_size="zero")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NCALM(str(tok_dir / "missing.ckpt"))
    with pytest.raises(TypeError, match="tokeniser"):  # a misspelt model arg is an error, not ignored
        NCALM.create_from_arg_obj({"ckpt": str(ckpt), "tokeniser": str(tok_dir)})


def test_entry_implies_model_nca(monkeypatch):
    seen = []
    monkeypatch.setattr("lm_eval.__main__.cli_evaluate", lambda: seen.append(list(__import__("sys").argv)))
    lm_eval_adapter.main(["--model_args", "ckpt=x", "--tasks", "t"])
    lm_eval_adapter.main(["ls", "tasks"])
    assert seen == [["lm-eval", "run", "--model", "nca", "--model_args", "ckpt=x", "--tasks", "t"],
                    ["lm-eval", "ls", "tasks"]]


TASKS = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
{body}
"""
MC_BODY = """\
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""
GEN_BODY = """\
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
"""


def test_simple_evaluate_runs_local_tasks_offline(trained, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    ckpt, _ = trained
    docs = [{"question": f"the cell {i} in", "choices": [" a cellar", " the world", " well"], "answer": i % 3}
            for i in range(4)]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    for name, body in (("nca_tiny_mc", MC_BODY), ("nca_tiny_gen", GEN_BODY)):
        (tmp_path / f"{name}.yaml").write_text(TASKS.format(name=name, data=tmp_path / "docs.jsonl",
                                                            cache=tmp_path / "hf_cache", body=body.format()))
    out = lm_eval.simple_evaluate(model="nca", model_args=f"ckpt={ckpt},device=cpu,batch_size=4",
                                  tasks=["nca_tiny_mc", "nca_tiny_gen"], bootstrap_iters=0,
                                  task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    mc, gen = out["results"]["nca_tiny_mc"], out["results"]["nca_tiny_gen"]
    assert 0.0 <= mc["acc,none"] <= 1.0 and 0.0 <= gen["exact_match,none"] <= 1.0
    assert out["n-samples"]["nca_tiny_mc"]["effective"] == 4 and out["n-samples"]["nca_tiny_gen"]["effective"] == 4
