"""Pieces of the replication report that need no run: the windowed ICL score and its standard error, the stage-1
learning flag, the recipe against the paper's, and the effect-vs-size picture of a ladder."""

from __future__ import annotations

import math

import pytest
import torch

from nca.replication.config import StageBudget, Study
from nca.replication.evaluate import scaled_windows, uniform_floor, windowed_icl
from nca.replication.learning import learning_section, random_floor
from nca.replication.recipe import recipe


def test_icl_windows_scale_with_short_rows_and_the_score_is_per_row():
    assert scaled_windows([[40, 60], [450, 550]], 1023) == ((40, 60), (450, 550))  # long rows: Olsson et al.'s
    assert scaled_windows([[40, 60], [450, 550]], 110) == ((8, 12), (90, 110))  # a fifth of the positions
    assert scaled_windows([[40, 60], [450, 550]], 1) is None  # too short to tell early from late
    losses = torch.tensor([[5.0, 5.0, 4.0, 2.0, 2.0], [6.0, 4.0, 4.0, 3.0, 1.0]])
    out = windowed_icl(losses, (1, 2), (4, 5))  # per row: 2 - 5 = -3 and 2 - 5 = -3
    assert out["icl"] == pytest.approx(-3.0) and out["se"] == pytest.approx(0.0) and out["rows"] == 2
    out = windowed_icl(torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 3.0]]), (1, 1), (2, 2))  # 2, 0, 3
    assert out["icl"] == pytest.approx(5 / 3) and out["se"] == pytest.approx(math.sqrt(7 / 3) / math.sqrt(3))


def test_uniform_attention_floor_of_the_prefix_matching_score():
    # blocks of 32 repeated twice: queries 32..63 spread over 33..64 keys, one of them the target
    assert uniform_floor(32) == pytest.approx(sum(1 / k for k in range(33, 65)) / 32)
    assert 0.021 < uniform_floor(32) < 0.022  # the 0.022-0.025 of the earlier CPU study is this floor


def test_stage1_learning_flag_names_sources_near_uniform_and_spares_random_tokens():
    interval = lambda m: {"mean": m, "low": m - 0.1, "high": m + 0.1, "n": 8}  # noqa: E731
    report = {
        "nca-50plus": {"kind": "nca", "seeds": 8, "val_loss": interval(8.4), "uniform": math.log(10_002),
                       "below_uniform": 1 - 8.4 / math.log(10_002), "frame_slope": interval(-0.01), "learned": False,
                       "note": ""},
        "nca-50plus-n2": {"kind": "nca", "seeds": 8, "val_loss": interval(1.0), "uniform": math.log(18),
                          "below_uniform": 1 - 1 / math.log(18), "frame_slope": interval(-0.2), "learned": True,
                          "note": ""},
        "random-n2": {"kind": "random", "seeds": 8, "val_loss": interval(2.7), "uniform": math.log(18),
                      "below_uniform": 0.07, "frame_slope": interval(0.0), "learned": False, "note": "iid tokens"},
    }
    text = "\n".join(learning_section(report, 0.1))
    assert "| nca-50plus | 8 | 8.400 [8.300, 8.500] | 9.211 | 8.8% | -0.0100 [-0.1100, +0.0900] | **NO** |" in text
    assert "**Flag: stage 1 did not learn its data for nca-50plus**" in text  # not random-n2: nothing to learn there
    # random tokens: supervised targets of a 152-token row are positions 38..152; patches among them pay ln(n^4)
    targets = [p % 38 for p in range(38, 153)]
    patches = sum(o not in (0, 37) for o in targets)
    assert random_floor(152, 2) == pytest.approx(patches / len(targets) * math.log(16))


def test_recipe_table_beside_the_papers_values():
    study = Study(arms=["scratch", "nca"], model={"n_layer": 2, "n_embd": 64, "n_head": 4, "intermediate_size": 256},
                  stage1=StageBudget(steps=150, batch_size=4, seq_len=152, lr=3e-3, warmup_steps=15),
                  stage2=StageBudget(steps=300, batch_size=8, seq_len=64, lr=3e-3, warmup_steps=30))
    study.vocab.size = 512
    rows = {r["quantity"]: r for r in recipe(study, "owt")}
    assert rows["stage-1 / stage-2 learning rate"]["ours"].endswith("= 1")  # the old preset: the paper says 0.2
    assert rows["stage-1 / stage-2 learning rate"]["paper"].endswith("= 0.2")
    assert rows["NCA tokens per NCA vocabulary id"]["ours"] == "9 (n=10)"  # 91,200 / 10,002
    assert rows["NCA tokens per NCA vocabulary id"]["paper"] == "16,397 (n=10)"
    assert rows["carried share of the stage-2 model"]["ours"].startswith("66.7%")
    assert rows["carried share of the stage-2 model"]["paper"].startswith("88.7%")
    assert rows["stage-2 / stage-1 tokens"]["ours"].endswith("= 1.68") and rows["stage-2 / stage-1 tokens"]["paper"] == "54.9"
    code = {r["quantity"]: r for r in recipe(Study(domain_lr={"code": 2e-4}, stage2=StageBudget(lr=5e-4),
                                                   stage1=StageBudget(lr=1e-4)), "code")}
    assert code["stage-1 / stage-2 learning rate"]["ours"] == "0.0001 / 0.0002 = 0.5"
    assert code["stage-1 / stage-2 learning rate"]["paper"].endswith("= 0.5")


def test_ladder_picture_of_the_effect_against_model_size(tmp_path):
    from nca.analysis.report_figures import plot_ladder

    point = lambda m: {"mean": m, "low": m - 1.0, "high": m + 1.0, "n": 3}  # noqa: E731
    plot_ladder({"nca - scratch": [(14e6, point(1.0)), (160e6, point(-0.5)), (1.8e9, point(-5.0))]}, "web text",
                tmp_path / "ladder.png")
    assert (tmp_path / "ladder.png").stat().st_size > 1000
