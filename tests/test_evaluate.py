"""``nca evaluate`` pieces without a model: answer extraction, the resumable logs, settings refusal, and a
resume after a crash (a fake sampler that raises part-way). BBL scores: tests/test_bbl_scores.py; prompt
fitting: tests/test_prompt_fit.py; the command line: tests/test_evaluate_cli.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from nca.evaluation import runner
from nca.cli import main as nca
from nca.evaluation.gsm8k import GSM8KTask, extract_flexible, extract_last_word, extract_strict, score_reply
from nca.evaluation.records import SampleLog, SettingsMismatch, record_settings
from nca.evaluation.sandbox import detect_isolation
from tests.helpers.data import write_gsm8k
from tests.helpers.tokenizers import write_tokenizer


# ------------------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize("reply, strict, flexible", [
    ("He pays 3*4 = 12\nFinal Answer: 1,200", "1200", "1200"),
    ("costs $5.\nFinal Answer: $18.50", "18.50", "18.50"),
    ("drops by 7\nFinal Answer: -7 degrees", "-7", "-7"),
    ("old style\n#### 42", "42", "42"),
    ("Final Answer: 3 and later 9 more", "3", "9"),
    ("Final Answer: 5\nQuestion:\nthen 8", "5", "8"),
    ("we get 0.25 of it", None, "0.25"),
    ("no numbers at all", None, None),
    ("Final Answer: unknown", None, None),
    ("", None, None),
    ("half of 8 is\nFinal Answer: 4/2", "4/2", "4/2"),
    ("Final Answer: 4.2e1", "4.2e1", "4.2e1"),
    ("Final Answer: 1 234 people", "1234", "1234"),
    ("Final Answer: 1\u2009234", "1234", "1234"),
    ("it drops by 7\nFinal Answer: \u22127", "-7", "-7"),
    ("in 3 1234 ways", None, "1234"),  # not a thousands group
])
def test_strict_and_flexible_extraction(reply, strict, flexible):
    assert extract_strict(reply) == strict
    assert extract_flexible(reply) == flexible


def test_last_word_is_the_reference_rule():
    assert extract_last_word("so the answer is $1,000.") == "1000"
    assert extract_last_word("it is \u22123.") == "-3"
    assert extract_last_word("Final Answer: 12 apples") == "apples"
    assert extract_last_word("   ") is None


def test_math_verify_scoring_and_truncated_replies():
    done = score_reply("1200", "x\nFinal Answer: 1,200.00", finished=True)
    assert done["verdict"] == {"strict": True, "flexible": True, "last_word": True} and done["reason"] == "correct"
    wrong = score_reply("7", "Final Answer: 8", finished=True)
    assert not wrong["verdict"]["strict"] and "8 != 7" in wrong["reason"]
    cut = score_reply("7", "Final Answer: 7", finished=False)
    assert cut["verdict"] == {"strict": False, "flexible": False, "last_word": False}
    assert "end-of-text" in cut["reason"] and cut["extracted"]["strict"] == "7"
    assert score_reply("7", "Final Answer: 7", finished=False, score_truncated=True)["verdict"]["strict"]


@pytest.mark.parametrize("reply", ["Final Answer: 4/2", "Final Answer: 2.0e0", "Final Answer: 0.2e1"])
def test_fractions_and_exponents_equal_their_value(reply):
    assert score_reply("2", reply, finished=True)["verdict"]["strict"]
    assert not score_reply("3", reply, finished=True)["verdict"]["strict"]


def test_the_headline_rule_is_named(tmp_path):
    from nca.evaluation.gsm8k import HEADLINE, HEADLINE_RULE

    task = GSM8KTask(str(write_gsm8k(tmp_path / "g")), limit=1)
    summary = task.summarize(task.problems(), {})
    assert summary["headline"] == HEADLINE == "pass@1/strict" and summary["headline_rule"] == HEADLINE_RULE
    assert "Final Answer" in HEADLINE_RULE and "last_word" in HEADLINE_RULE


# ----------------------------------------------------------------------------------------------- logs
def test_sample_log_truncates_a_torn_line_and_keeps_the_first_of_a_key(tmp_path):
    log = SampleLog(tmp_path / "s.jsonl")
    log.append([{"problem": "a", "sample": 0, "x": 1}, {"problem": "a", "sample": 1, "x": 2}])
    log.append([{"problem": "a", "sample": 0, "x": 3}])
    with open(log.path, "a") as f:
        f.write('{"problem": "b", "sam')
    records = log.read()
    assert {k: r["x"] for k, r in records.items()} == {("a", 0): 1, ("a", 1): 2}
    assert log.path.read_text().endswith("}\n")
    log.append([{"problem": "b", "sample": 0, "x": 4}])
    assert len(log.read()) == 3


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    record_settings(tmp_path, {"n": 4, "temperature": 0.6})
    record_settings(tmp_path, {"n": 4, "temperature": 0.6})
    with pytest.raises(SettingsMismatch, match="n: recorded 4, now 8"):
        record_settings(tmp_path, {"n": 8, "temperature": 0.6})


def test_folders_follow_the_run_path_and_never_collide(tmp_path):
    folder = runner.default_folder
    assert folder("runs/stage3-gsm8k/checkpoints/last.ckpt", "gsm8k") == runner.Path("runs/eval/stage3-gsm8k/last-gsm8k")
    assert folder("runs/from_nca/stage2-owt/checkpoints/last.ckpt", "bbl") == \
        runner.Path("runs/eval/from_nca/stage2-owt/last-bbl")
    assert folder("runs/stage2-owt/checkpoints/last.ckpt", "bbl") != folder("runs/from_nca/stage2-owt/checkpoints/last.ckpt", "bbl")
    assert folder("exports/owt-lit", "bbl") == runner.Path("runs/eval/exports/owt-lit-bbl")
    assert folder(tmp_path / "a" / "checkpoints" / "x.ckpt", "bbl").parts[-2:] == ("a", "x-bbl")
    with pytest.raises(ValueError, match="inside a training run"):
        runner.check_folder(tmp_path / "runs" / "x" / "version_0" / "eval")


# --------------------------------------------------------------------------------------------- resume
@dataclass
class FakeCompletion:
    tokens: list
    text: str
    finish: str


class FakeSampler:
    """Deterministic replies keyed by (prompt id, sample); raises on call number ``fail_on``."""

    def __init__(self, fail_on: int | None = None):
        self.calls, self.fail_on, self.generated = 0, fail_on, 0

    def __call__(self, model, prompts, n, cfg, *, seed=0, prompt_ids=None, decode=None, batch_size=64, progress=None):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated crash")
        assert cfg.stop_ids == (256,)
        out = []
        for pid in prompt_ids:
            gold = 4 * (1000 + pid) + 3  # test question pid of write_gsm8k: (i + 2) + (3i + 1), i = 1000 + pid
            row = [FakeCompletion([1, 2], f"so\nFinal Answer: {gold if j % 2 == 0 else -1}",
                                  "stop" if j < 3 else "length") for j in range(n)]
            out.append(row)
            self.generated += n
        return out


def fake_sampling(fake):
    config = lambda **kw: SimpleNamespace(**kw)  # noqa: E731
    return lambda: (fake, config)


def run_gsm8k(folder, source, tokenizer, n=4):
    task = GSM8KTask(str(source), limit=5)
    problems = task.problems()
    model = SimpleNamespace(config=SimpleNamespace(block_size=1024))
    runner.generate(task, problems, folder, model, tokenizer, n=n, temperature=0.6, top_p=1.0,
                    max_new_tokens=16, seed=0, batch_size=2)
    return task, problems


def test_interrupted_generation_resumes_without_repeats(tmp_path, monkeypatch):
    from nca.datamodules.tokenizers import load_tokenizer

    source, tok = write_gsm8k(tmp_path / "gsm8k"), load_tokenizer(write_tokenizer(tmp_path / "tok"))
    crashing = FakeSampler(fail_on=2)
    monkeypatch.setattr(runner, "load_sampler", fake_sampling(crashing))
    with pytest.raises(KeyboardInterrupt):
        run_gsm8k(tmp_path / "eval", source, tok)  # chunk = ceil(4 * 2 / 4) = 2 problems per call
    first = SampleLog(tmp_path / "eval" / runner.COMPLETIONS).read()
    assert len(first) == 8
    with open(tmp_path / "eval" / runner.COMPLETIONS, "a") as f:  # and a torn line from the crash
        f.write('{"problem": "test/2", "sample": 0, "compl')

    resumed = FakeSampler()
    monkeypatch.setattr(runner, "load_sampler", fake_sampling(resumed))
    task, problems = run_gsm8k(tmp_path / "eval", source, tok)
    assert resumed.generated == 12  # only the 3 missing problems were generated
    lines = [json.loads(x) for x in (tmp_path / "eval" / runner.COMPLETIONS).read_text().splitlines()]
    keys = [(r["problem"], r["sample"]) for r in lines]
    assert len(keys) == len(set(keys)) == 20

    again = FakeSampler()
    monkeypatch.setattr(runner, "load_sampler", fake_sampling(again))
    run_gsm8k(tmp_path / "eval", source, tok)
    assert again.calls == 0  # nothing left to do

    scored = runner.score(task, problems, tmp_path / "eval", 4)
    assert len(scored) == 20 and len(runner.score(task, problems, tmp_path / "eval", 4)) == 20
    assert len((tmp_path / "eval" / runner.SAMPLES).read_text().splitlines()) == 20
    results = runner.summarize(task, problems, scored, tmp_path / "eval", {"n": 4}, 4, echo=lambda s: None)
    # samples 0 and 2 give the gold answer, 1 and 3 a wrong one
    metrics = results["metrics"]
    assert results["complete"] and metrics["pass@1/strict"] == pytest.approx(0.5) and metrics["pass@4/strict"] == 1.0
    assert metrics["finished_fraction"] == pytest.approx(0.75)


def test_cli_scores_apart_and_refuses_other_settings(tmp_path, monkeypatch, capsys):
    from nca.datamodules.tokenizers import load_tokenizer

    source, tok = write_gsm8k(tmp_path / "gsm8k"), load_tokenizer(write_tokenizer(tmp_path / "tok"))
    out = tmp_path / "eval"
    args = ["--ckpt", str(tmp_path / "absent.ckpt"), "--task", "gsm8k", "--data", str(source), "--out", str(out),
            "--limit", "5", "--n", "4", "--max_new_tokens", "16", "--stage", "score"]
    evaluate = lambda argv: nca(["evaluate", *argv])  # noqa: E731
    assert evaluate(args) == 0  # nothing generated yet: an incomplete, empty result
    assert not json.loads((out / runner.RESULTS).read_text())["complete"]
    monkeypatch.setattr(runner, "load_sampler", fake_sampling(FakeSampler()))
    run_gsm8k(out, source, tok)  # what `--stage generate` on another machine would write
    assert evaluate(args) == 0
    results = json.loads((out / runner.RESULTS).read_text())
    assert results["complete"] and results["samples"] == 20 and results["settings"]["n"] == 4
    assert (out / runner.TENSORBOARD).is_dir() and "pass@1/strict" in capsys.readouterr().out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / runner.TENSORBOARD)).Reload()
    assert events.Scalars("gsm8k/pass@1/strict")[-1].value == pytest.approx(results["metrics"]["pass@1/strict"])
    assert evaluate([*args[:-2], "--n", "8", "--stage", "score"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.skipif(detect_isolation() is None, reason="no namespaces here for the sandbox: install bubblewrap "
                    "(apt-get install -y bubblewrap), or run as root / with user namespaces")
def test_humaneval_task_runs_completions_in_the_sandbox(tmp_path, monkeypatch):
    from nca.datamodules.tokenizers import load_tokenizer
    from nca.evaluation.humaneval_task import HumanEvalTask

    problem = {"task_id": "Toy/0", "prompt": "def add(a, b):\n", "entry_point": "add",
               "test": "def check(f):\n    assert f(2, 3) == 5\n"}
    (tmp_path / "he.jsonl").write_text(json.dumps(problem) + "\n")
    replies = ["    return a + b\ndef extra():\n    return 1/0\n", "    return a - b\n"]

    def sampler(model, prompts, n, cfg, *, prompt_ids=None, **_):
        assert "\ndef " in cfg.stop_strings and cfg.stop_ids == (256,)
        return [[FakeCompletion([1], replies[j % 2], "stop") for j in range(n)] for _ in prompts]

    monkeypatch.setattr(runner, "load_sampler", lambda: (sampler, lambda **kw: SimpleNamespace(**kw)))
    task = HumanEvalTask(str(tmp_path / "he.jsonl"), timeout=5.0)
    problems = task.problems()
    assert problems[0].prompt == ("def add(a, b):\n",)
    model = SimpleNamespace(config=SimpleNamespace(block_size=64))
    tok = load_tokenizer(write_tokenizer(tmp_path / "tok"))
    runner.generate(task, problems, tmp_path / "eval", model, tok, n=4, temperature=0.4, top_p=0.95,
                    max_new_tokens=16, seed=0)
    scored = runner.score(task, problems, tmp_path / "eval", 4)
    assert [scored[("Toy/0", j)]["verdict"] for j in range(4)] == [True, False, True, False]
    assert scored[("Toy/0", 0)]["extracted"] == "    return a + b"  # cut at "\ndef "
    results = runner.summarize(task, problems, scored, tmp_path / "eval", {}, 4, echo=lambda s: None)
    assert results["metrics"]["pass@1"] == pytest.approx(0.5) and results["metrics"]["pass@4"] == 1.0
