"""Long prompts are never cut inside the question: exemplars go first, then reply tokens; a question that cannot
fit is skipped, counted and reported; what was dropped is recorded per sample (byte tokenizer: 1 id per char)."""

from __future__ import annotations

import json

import pytest

from nca.evaluation import runner
from nca.evaluation.bbl import BBLTask
from nca.evaluation.humaneval_task import HumanEvalTask
from nca.evaluation.problems import Problem, encode_pieces, fit_prompt
from nca.evaluation.records import SampleLog
from tests.helpers.models import tiny_gpt
from tests.helpers.tokenizers import write_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from nca.datamodules.tokenizers import load_tokenizer

    return load_tokenizer(write_tokenizer(tmp_path_factory.mktemp("tok")))


def test_exemplars_go_first_then_the_reply_budget_then_the_problem(tok):
    problem = Problem("p", 0, ("aaaa", "bbbb", "question"))  # pieces joined by end-of-text (id 256)
    assert encode_pieces(problem, tok) == tok.encode("aaaa") + [256] + tok.encode("bbbb") + [256] + tok.encode("question")
    whole = fit_prompt(problem, tok, context=30, reply=10)
    assert (whole.exemplars_dropped, whole.reply_budget, whole.record()["reply_shortened"]) == (0, 10, False)
    one = fit_prompt(problem, tok, context=24, reply=10)  # 4 + 1 + 8 + 10 = 23: the oldest exemplar goes
    assert one.ids == tok.encode("bbbb") + [256] + tok.encode("question") and one.exemplars_dropped == 1
    short = fit_prompt(problem, tok, context=12, reply=10)  # the question alone, 4 reply tokens left
    assert short.ids == tok.encode("question") and short.reply_budget == 4 and short.record()["reply_shortened"]
    gone = fit_prompt(problem, tok, context=8, reply=10)  # not even one reply token: skipped, with the reason
    assert gone.skipped and "question alone is 8 tokens" in gone.reason
    assert not fit_prompt(problem, tok, context=9, reply=10).skipped


def test_text_joined_exemplars_are_dropped_whole(tok):
    problem = Problem("b", 0, ("Q: 1\nA: x\n\n", "Q: 2\nA: y\n\n", "Q: 3\nA:"), separator="")
    assert tok.decode(fit_prompt(problem, tok, 40, 4).ids) == "Q: 1\nA: x\n\nQ: 2\nA: y\n\nQ: 3\nA:"
    assert tok.decode(fit_prompt(problem, tok, 25, 4).ids) == "Q: 2\nA: y\n\nQ: 3\nA:"
    assert tok.decode(fit_prompt(problem, tok, 12, 4).ids) == "Q: 3\nA:"


def test_generation_keeps_the_signature_skips_what_cannot_fit_and_reports_it(tok, tmp_path):
    """HumanEval/81 used to lose its def line; here a long prompt keeps all of it with a shorter reply."""
    rows = [{"task_id": f"T/{i}", "prompt": prompt, "entry_point": "f", "test": "def check(f):\n    pass\n"}
            for i, prompt in enumerate(["def f():\n", "def f(a, b):\n    '''Doc.'''\n", "x" * 40])]
    (tmp_path / "he.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = HumanEvalTask(str(tmp_path / "he.jsonl"), sandbox="none")
    problems = task.problems()
    model = tiny_gpt(vocab_size=257, block_size=32)
    folder = tmp_path / "eval"
    written = runner.generate(task, problems, folder, model, tok, n=2, temperature=1.0, top_p=1.0,
                              max_new_tokens=16, seed=0, batch_size=4)
    records = SampleLog(folder / runner.COMPLETIONS).read()
    assert written == 6 and len(records) == 6
    long = records[("T/1", 0)]
    assert long["reply_budget"] == 32 - len(rows[1]["prompt"]) and long["reply_shortened"]
    assert long["new_tokens"] <= long["reply_budget"]
    assert records[("T/0", 1)]["reply_budget"] == 16 and not records[("T/0", 1)]["reply_shortened"]
    assert records[("T/2", 0)]["finish"] == runner.SKIPPED and "40 tokens" in records[("T/2", 0)]["skipped"]

    completions = [{"problem": p, "sample": j, "completion": "    return 1\n", "finish": "stop"}
                   for p in ("T/0", "T/1") for j in range(2)]
    scored = {(c["problem"], c["sample"]): {**c, "verdict": True, "exemplars_dropped": 0,
                                            "reply_shortened": c["problem"] == "T/1"} for c in completions}
    scored.update({("T/2", j): {**records[("T/2", j)], "verdict": None} for j in range(2)})
    lines = []
    results = runner.summarize(task, problems, scored, folder, {"max_new_tokens": 16}, 2, echo=lines.append)
    assert results["problems"] == 2 and results["skipped"]["problems"] == 1 and results["skipped"]["ids"] == ["T/2"]
    assert results["metrics"]["pass@1"] == 1.0 and results["complete"]  # the skipped problem is no failure
    assert results["prompt_fit"] == {"exemplars_dropped": 0, "reply_shortened": 1}
    assert any("skipped 1 problems" in line and "T/2" in line for line in lines)


def test_logprob_choices_fit_whole_or_the_problem_is_skipped(tok, tmp_path):
    from tests.helpers.data import write_bbl

    task = BBLTask(str(write_bbl(tmp_path / "bbl")), mode="logprob", tasks=["winowhy"], min_train_examples=5,
                   val_fraction=0.25, limit=2)
    problems = task.problems()
    question = len(tok.encode(problems[0].prompt[-1]))
    model = tiny_gpt(vocab_size=257, block_size=question + 8)  # the question and "option 0" (8 ids), no exemplar
    runner.generate(task, problems, tmp_path / "eval", model, tok, n=1, temperature=0.0, top_p=1.0,
                    max_new_tokens=1, seed=0)
    records = SampleLog(tmp_path / "eval" / runner.COMPLETIONS).read()
    first = records[(problems[0].id, 0)]
    assert first["exemplars_dropped"] == 2 and first["completion"] in problems[0].data["choices"]
    assert len(first["logprobs"]) == 2
    tiny = tiny_gpt(vocab_size=257, block_size=question + 4)
    runner.generate(task, problems, tmp_path / "small", tiny, tok, n=1, temperature=0.0, top_p=1.0,
                    max_new_tokens=1, seed=0)
    assert SampleLog(tmp_path / "small" / runner.COMPLETIONS).read()[(problems[0].id, 0)]["finish"] == runner.SKIPPED
