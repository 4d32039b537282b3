"""BBL scores: both normalisations (a uniform guesser scores about 0 on the chance-corrected headline and about
0.3 on the paper's formula at pass@2), the reference's 18-task default, one list of tasks used and scored,
and the seeded choice shuffle."""

from __future__ import annotations

import random

import pytest

from nca.datamodules.bbl_tasks import ENGLISH_TASKS, REFERENCE_TASKS, BBLExample, parse_example
from nca.evaluation.bbl import BBLTask, chance_corrected, guess_rate, matches, normalise, task_chance
from nca.evaluation.problems import Problem
from tests.helpers.data import write_bbl, write_task


def test_the_reference_list_is_the_english_tasks_less_two():
    assert len(REFERENCE_TASKS) == 18 and len(ENGLISH_TASKS) == 20
    assert set(ENGLISH_TASKS) - set(REFERENCE_TASKS) == {"hindu_knowledge", "linguistics_puzzles"}


def test_chance_formulas():
    assert task_chance([3, 5, 3, 5]) == pytest.approx((1 / 3 + 1 / 5) / 2)
    assert task_chance([3, 5, 3, 5], "first") == pytest.approx(1 / 3) and task_chance([0, 0]) == 0.0
    assert normalise(0.5, 0.25) == pytest.approx(1 / 3) and normalise(0.1, 0.25) == 0.0 and normalise(0.4, 0.0) == 0.4
    assert guess_rate(4, 2) == pytest.approx(1 - 0.75 ** 2) and guess_rate(0, 2) == 0.0
    # 4 samples, 1 right, 2-way: pass@2 = 1/2, a guesser's 3/4 -> (1/2 - 3/4) / (1/4) = -1 (below chance)
    assert chance_corrected(4, 1, 2, 2) == pytest.approx(-1.0)
    assert chance_corrected(4, 4, 3, 2) == 1.0 and chance_corrected(4, 2, 1, 1) is None
    assert chance_corrected(4, 2, 0, 1) == pytest.approx(0.5)  # free-form: raw


def uniform_guesses(tmp_path, samples: int = 16):
    """The project's own scoring of a uniform guesser on 3-, 5- and 7-way tasks (file order, first choice right)."""
    rng = random.Random(0)
    for task, ways in (("logical_deduction", (3, 5, 7)), ("bbq_lite_json", (3,)), ("winowhy", (2,))):
        write_task(tmp_path / "bbl" / task / "task.json",
                   [{"input": f"{task} {i}?", "target_scores": {f"c{j}": int(j == 0) for j in range(ways[i % len(ways)])}}
                    for i in range(500)])
    task = BBLTask(str(tmp_path / "bbl"), min_train_examples=1, val_fraction=0.5)
    problems = task.problems()
    completions = [{"problem": p.id, "sample": j, "completion": rng.choice(p.data["choices"])}
                   for p in problems for j in range(samples)]
    verdicts = task.score({p.id: p for p in problems}, completions)
    scored = {(c["problem"], c["sample"]): v for c, v in zip(completions, verdicts)}
    return task, task.summarize(problems, scored)


def test_a_uniform_guesser_scores_about_zero_on_the_headline(tmp_path):
    _, summary = uniform_guesses(tmp_path)
    metrics = summary["metrics"]
    assert summary["headline"] == "pass@2/chance_corrected" and set(summary["normalisations"]) == {"paper", "chance_corrected"}
    for k in (1, 2):
        assert abs(metrics[f"pass@{k}/chance_corrected"]) < 0.03, (k, metrics)
    assert "pass@4/chance_corrected" not in metrics  # winowhy: a guesser passes 15 of 16 times at k = 4
    assert abs(metrics["pass@1/paper"]) < 0.03  # at k = 1 both agree ...
    assert 0.2 < metrics["pass@2/paper"] < 0.4  # ... at k = 2 the paper's formula credits guessing
    assert summary["per_task_columns"] == ["chance", "pass@1", "pass@2/paper", "pass@2/chance_corrected"]


def test_tasks_used_and_scored_agree_and_the_default_is_the_reference(tmp_path):
    source = write_bbl(tmp_path / "bbl")  # logical_deduction, winowhy, operators (free-form), a non-English task
    write_task(tmp_path / "bbl" / "hindu_knowledge" / "task.json",  # English, but not in the reference's list
               [{"input": f"God {i}?", "target_scores": {"a": 1, "b": 0}} for i in range(40)])
    reference = BBLTask(str(source), mode="logprob", min_train_examples=5, val_fraction=0.25, limit=2)
    problems = reference.problems()
    assert reference.settings()["tasks"] == list(REFERENCE_TASKS) and reference.settings()["task_list"] == "reference"
    assert reference.used_tasks == ["logical_deduction", "winowhy"]
    assert reference.notes() == ["bbl tasks (2): logical_deduction, winowhy",
                                 "left out: operators (free-form: nothing to choose in logprob mode)"]
    scored = {(p.id, 0): {"verdict": True} for p in problems}
    assert list(reference.summarize(problems, scored)["per_task"]) == reference.used_tasks
    english = BBLTask(str(source), min_train_examples=5, val_fraction=0.25, limit=2, task_list_name="english")
    english.problems()
    assert english.used_tasks == ["hindu_knowledge", "logical_deduction", "operators", "winowhy"]
    few = BBLTask(str(source), min_train_examples=50, val_fraction=0.25)
    few.problems()
    assert few.used_tasks == ["winowhy"] and "training examples < 50" in few.notes()[1]


def test_seeded_choice_shuffle(tmp_path):
    example = parse_example("t", {"input": "q", "target_scores": {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0}})
    shuffled = [example.shuffled(seed) for seed in range(20)]
    assert shuffled[3] == example.shuffled(3) and len({s.choices for s in shuffled}) > 5
    assert all(sorted(s.choices) == sorted(example.choices) and set(s.targets) == {"b", "d"} for s in shuffled)
    assert all(s.answer == next(c for c in s.choices if c in ("b", "d")) for s in shuffled)
    assert BBLExample("t", "free", (), ("x",)).shuffled(1).choices == ()

    source = write_bbl(tmp_path / "bbl")
    plain = BBLTask(str(source), min_train_examples=5, val_fraction=0.25, tasks=["logical_deduction"])
    mixed = BBLTask(str(source), min_train_examples=5, val_fraction=0.25, tasks=["logical_deduction"],
                    shuffle_choices=7)
    a, b = plain.problems(), mixed.problems()
    assert mixed.settings()["shuffle_choices"] == 7 and plain.settings()["shuffle_choices"] is None
    firsts = [p.data["choices"][0] for p in a]
    assert all(q.data["targets"] == p.data["targets"] and sorted(q.data["choices"]) == sorted(p.data["choices"])
               for p, q in zip(a, b))
    assert [q.data["choices"][0] for q in b] != firsts and b == mixed.problems()  # seeded: the same again
    assert "".join(b[0].prompt[:-1]) != "".join(a[0].prompt[:-1])  # the exemplars are shown shuffled too
    assert matches("  Option 0 \n", ["option 0"]) and not matches("option 1", ["option 0"])


def test_mixed_task_rows_by_hand():
    def problem(i, ways):
        return Problem(f"mixed/{i}", i, ("p",), {"task": "mixed", "choices": [f"c{j}" for j in range(ways)],
                                                 "targets": ["c0"]})

    problems = [problem(0, 3), problem(1, 5)]
    scored = {("mixed/0", 0): {"verdict": True}, ("mixed/0", 1): {"verdict": False},
              ("mixed/1", 0): {"verdict": False}, ("mixed/1", 1): {"verdict": False}}
    row = BBLTask("unused").summarize(problems, scored)["per_task"]["mixed"]
    chance = (1 / 3 + 1 / 5) / 2
    assert row["pass@1"] == pytest.approx(0.25) and row["pass@2"] == pytest.approx(0.5)
    assert row["pass@2/paper"] == pytest.approx((0.5 - chance) / (1 - chance))
    expected = ((1 - guess_rate(3, 2)) / (1 - guess_rate(3, 2)) + (0 - guess_rate(5, 2)) / (1 - guess_rate(5, 2))) / 2
    assert row["pass@2/chance_corrected"] == pytest.approx(expected)
