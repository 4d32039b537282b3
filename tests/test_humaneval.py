"""HumanEval problems, prompt, stop strings, truncation and scoring (on two tiny hand-made problems)."""

import gzip
import json

import pytest

from nca.evaluation.sandbox import detect_isolation
from nca.evaluation.humaneval import (PROMPT, STOP_STRINGS, Verdict, assemble, job, load_problems, prompt, score,
                                  stop_strings, truncate)

PROBLEMS = [
    {"task_id": "Toy/0", "entry_point": "add",
     "prompt": 'def add(a: int, b: int) -> int:\n    """Sum of a and b.\n    >>> add(1, 2)\n    3\n    """\n',
     "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n"
             "    assert candidate(1, 2) == 3\n    assert candidate(-4, 4) == 0\n",
     "canonical_solution": "    return a + b\n"},
    {"task_id": "Toy/1", "entry_point": "shout",
     "prompt": "def shout(text: str) -> str:\n    \"\"\"Upper case with a '!'.\"\"\"\n",
     "test": "def check(candidate):\n    assert candidate('hi') == 'HI!'\n",
     "canonical_solution": "    return text.upper() + '!'\n"},
]


@pytest.fixture()
def problem_file(tmp_path):
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for row in PROBLEMS:
            out.write(json.dumps(row) + "\n")
    return path


def test_load_problems_from_jsonl_gz_and_jsonl(problem_file, tmp_path):
    problems = load_problems(problem_file)
    assert list(problems) == ["Toy/0", "Toy/1"]
    assert problems["Toy/1"]["entry_point"] == "shout"
    plain = tmp_path / "HumanEval.jsonl"
    plain.write_text("\n".join(json.dumps(row) for row in PROBLEMS) + "\n\n")
    assert load_problems(plain) == problems


def test_load_problems_rejects_missing_files_and_fields(tmp_path):
    with pytest.raises(FileNotFoundError, match="HumanEval.jsonl.gz"):
        load_problems(tmp_path / "nothing.jsonl.gz")
    with pytest.raises(ValueError, match="openai_humaneval"):
        load_problems(None)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"task_id": "X/0", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(ValueError, match="entry_point"):
        load_problems(broken)
    broken.write_text(json.dumps({"prompt": "def f():\n", "test": "", "entry_point": "f"}) + "\n")
    with pytest.raises(ValueError, match="task_id"):
        load_problems(broken)


def test_prompt_is_the_raw_prompt():
    assert PROMPT == "{prompt}"
    problem = {"prompt": "def f(x):\n    \"\"\"{braces} stay.\"\"\"\n"}
    assert prompt(problem) == problem["prompt"]


def test_truncate_cuts_at_the_earliest_stop_string():
    completion = "    return a + b\n\nprint(add(1, 2))\ndef other():\n    pass\n"
    assert truncate(completion) == "    return a + b\n"
    assert truncate("    return 1\n\nif __name__ == '__main__':\n    main()\n") == "    return 1\n"
    assert truncate("    return 1\nclass Foo:\n    pass") == "    return 1"
    assert truncate("    return 1  # no stop here") == "    return 1  # no stop here"
    assert truncate("    x = 1\n# comment\n    return x\n") == "    x = 1\n# comment\n    return x\n"
    assert truncate("    x = 1\n# comment\n    return x\n", stop_strings("codex")) == "    x = 1"
    assert truncate("    return 1\n@decorator\n", stop_strings("bigcode")) == "    return 1"
    assert truncate("    return 1\n```\n", stop_strings("bigcode")) == "    return 1"


def test_stop_string_variants():
    assert STOP_STRINGS == ("\nclass ", "\ndef ", "\nif __name__", "\nprint(")
    assert stop_strings() == STOP_STRINGS
    assert set(stop_strings("codex")) - set(STOP_STRINGS) == {"\n#"}
    assert set(stop_strings("bigcode")) - set(STOP_STRINGS) == {"\n#", "\n@", "\n```"}
    with pytest.raises(ValueError, match="codex"):
        stop_strings("gpt")


def test_assemble_is_prompt_completion_test_check():
    problem = PROBLEMS[0]
    text = assemble(problem, problem["canonical_solution"])
    assert text.startswith(problem["prompt"] + problem["canonical_solution"])
    assert text.rstrip().endswith("check(add)")
    namespace = {}
    exec(compile(text, "assembled", "exec"), namespace)  # our own trusted canonical solution
    sandbox_job = job(problem, "    return a + b\n")
    assert sandbox_job.program == problem["prompt"] + "    return a + b\n"
    assert (sandbox_job.test, sandbox_job.entry_point) == (problem["test"], "add")


@pytest.mark.skipif(detect_isolation() is None, reason="no namespaces here for the sandbox: install bubblewrap "
                    "(apt-get install -y bubblewrap), or run as root / with user namespaces")
def test_score_marks_right_wrong_and_hostile_samples_in_input_order(problem_file):
    problems = load_problems(problem_file)
    completions = [
        ("Toy/0", 0, "    return a + b\n"),
        ("Toy/0", 1, "    return a - b\n"),
        ("Toy/1", 0, "    return text.upper() + '!'\n"),
        ("Toy/1", 1, "    import sys\n    sys.exit(0)\n"),
        ("Toy/0", 2, "    while True:\n        pass\n"),
        ("Toy/1", 2, "    return 'HI!'\nprint('passed')\nimport os\nos._exit(0)\n"),
    ]
    verdicts = score(problems, completions, workers=2, timeout=1.0)
    assert all(isinstance(v, Verdict) for v in verdicts)
    assert [(v.task_id, v.sample_index) for v in verdicts] == [(t, i) for t, i, _ in completions]
    assert [v.passed for v in verdicts] == [True, False, True, False, False, False]
    assert verdicts[1].reason == "failed: AssertionError"
    assert verdicts[3].reason == "exited early: SystemExit(0)"
    assert verdicts[4].reason == "timed out"


def test_score_rejects_unknown_tasks_before_running(problem_file):
    with pytest.raises(ValueError, match="Toy/9"):
        score(load_problems(problem_file), [("Toy/9", 0, "    pass\n")])
    assert score(load_problems(problem_file), []) == []
