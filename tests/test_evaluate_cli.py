"""``nca evaluate`` as a command: typed options with help text, one-line refusals before anything is written
(stage-1 checkpoints, a wrong tokenizer, no sandbox), folders that follow the run path, older folders, a
score-only stage that imports neither Lightning nor torch; and ``nca test`` preparing its own text split."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from nca.cli import main as nca
from nca.cli.evaluate import evaluate, evaluation_folder
from nca.evaluation import runner
from nca.evaluation import sandbox as sandbox_module
from nca.evaluation.records import SETTINGS, SampleLog, SettingsMismatch, compare_settings
from tests.helpers.data import write_bbl
from tests.helpers.tokenizers import write_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def fake_checkpoint(path: Path, data_class: str, init_args: dict, vocab_size: int = 257) -> Path:
    """The metadata of a Lightning checkpoint (what ``read_meta`` reads); no weights are needed to refuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": {"vocab_size": vocab_size}, "global_step": 7, "state_dict": {},
                "data": {"class_path": data_class, "init_args": init_args}}, path)
    return path


def test_every_option_has_help_text(capsys):
    with pytest.raises(SystemExit):
        nca(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    names = [n for n in inspect.signature(evaluate).parameters]
    assert len(names) == 30
    import docstring_parser

    documented = {p.arg_name: p.description for p in docstring_parser.parse(evaluate.__doc__).params}
    assert set(documented) == set(names)
    for name in names:
        assert f"--{name}" in text and " ".join(documented[name].split())[:40] in text, name


def test_print_config_and_config_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        nca(["evaluate", "--ckpt", "x.ckpt", "--task", "bbl", "--mode", "logprob", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["mode"] == "logprob" and printed["task_list"] == "reference" and printed["sandbox"] == "auto"
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({**printed, "task": "perplexity", "n": 2}))
    assert nca(["evaluate", "--config", str(tmp_path / "eval.yaml")]) == 2
    assert "samples nothing" in capsys.readouterr().err


@pytest.mark.parametrize("data_class, init_args, expected", [
    ("nca.datamodules.nca.NCADataModule", {"seed": 0}, "NCA data (stage 1)"),
    ("datamodules.dyck.DyckDataModule", {}, "Dyck data (stage 1)"),
])
def test_a_stage1_checkpoint_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, data_class,
                                                                             init_args, expected):
    ckpt = fake_checkpoint(tmp_path / "runs" / "stage1" / "checkpoints" / "last.ckpt", data_class, init_args)
    bbl, out = write_bbl(tmp_path / "bbl"), tmp_path / "eval"
    for task in (["--task", "bbl", "--data", str(bbl)], ["--task", "perplexity"]):
        assert nca(["evaluate", "--ckpt", str(ckpt), *task, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and "text model" in err and "--tokenizer" not in err
        assert not out.exists()
    assert nca(["evaluate", "--ckpt", str(ckpt), "--task", "bbl", "--data", str(bbl), "--out", str(out)]) == 2
    assert "text model" in capsys.readouterr().err  # the retry is refused the same way, not by a leftover folder


def test_a_text_checkpoint_with_the_wrong_tokenizer_or_none_is_refused(tmp_path, capsys):
    bbl, tok = write_bbl(tmp_path / "bbl"), write_tokenizer(tmp_path / "tok")
    small = fake_checkpoint(tmp_path / "small.ckpt", "nca.datamodules.text.TextDataModule", {"tokenizer": str(tok)}, 64)
    assert nca(["evaluate", "--ckpt", str(small), "--task", "bbl", "--data", str(bbl), "--out", str(tmp_path / "a")]) == 2
    assert "257 ids but the model was trained on 64" in capsys.readouterr().err and not (tmp_path / "a").exists()
    bare = fake_checkpoint(tmp_path / "bare.ckpt", None, {})
    assert nca(["evaluate", "--ckpt", str(bare), "--task", "bbl", "--data", str(bbl), "--out", str(tmp_path / "b")]) == 2
    assert "records no text tokenizer" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_default_folders_follow_the_run_path_and_continue_older_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain, nested = "runs/stage2-owt/checkpoints/last.ckpt", "runs/from_nca/stage2-owt/checkpoints/last.ckpt"
    assert evaluation_folder(None, plain, "bbl") == Path("runs/eval/stage2-owt/last-bbl")
    assert evaluation_folder(None, nested, "bbl") == Path("runs/eval/from_nca/stage2-owt/last-bbl")
    legacy = Path("runs/eval/stage2-owt-last-bbl")  # where both went before: kept for the one it belongs to
    legacy.mkdir(parents=True)
    (legacy / SETTINGS).write_text(json.dumps({"checkpoint": str(Path(nested).resolve())}))
    assert evaluation_folder(None, nested, "bbl") == legacy
    assert evaluation_folder(None, plain, "bbl") == Path("runs/eval/stage2-owt/last-bbl")


def test_a_folder_of_an_older_version_is_refused_clearly(tmp_path):
    (tmp_path / SETTINGS).write_text(json.dumps({"task": "bbl", "n": 64}))
    with pytest.raises(SettingsMismatch, match="older nca evaluate that did not record task_list"):
        compare_settings(tmp_path, {"task": "bbl", "n": 64, "task_list": "reference"})
    # a new option left at None (off) is what the older version did: the folder resumes
    assert compare_settings(tmp_path, {"task": "bbl", "n": 64, "shuffle_choices": None})


def bbl_completions(tmp_path) -> tuple[Path, Path]:
    """A BBL folder whose completions were written elsewhere (the generate stage on another machine)."""
    from nca.evaluation.bbl import BBLTask

    bbl, out = write_bbl(tmp_path / "bbl"), tmp_path / "eval"
    problems = BBLTask(str(bbl), mode="logprob", min_train_examples=5, limit=2).problems()
    SampleLog(out / runner.COMPLETIONS).append(
        {"problem": p.id, "sample": 0, "completion": p.data["choices"][0], "finish": "stop"} for p in problems)
    return bbl, out


def test_scoring_alone_imports_neither_lightning_nor_torch(tmp_path):
    bbl, out = bbl_completions(tmp_path)
    args = ["evaluate", "--ckpt", "absent.ckpt", "--task", "bbl", "--data", str(bbl), "--mode", "logprob",
            "--min_train_examples", "5", "--limit", "2", "--stage", "score", "--out", str(out)]
    code = (f"import sys\nfrom nca.cli import main\nassert main({args!r}) == 0\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'torch', 'litgpt'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    results = json.loads((out / runner.RESULTS).read_text())
    assert results["complete"] and results["headline"] == "pass@1/chance_corrected"


def test_humaneval_without_a_sandbox_refuses_or_runs_by_explicit_opt_in(tmp_path, monkeypatch, capsys):
    problem = {"task_id": "T/0", "prompt": "def f():\n", "entry_point": "f", "test": "def check(f):\n    assert f() == 1\n"}
    (tmp_path / "he.jsonl").write_text(json.dumps(problem) + "\n")
    out = tmp_path / "eval"
    SampleLog(out / runner.COMPLETIONS).append([{"problem": "T/0", "sample": j, "completion": "    return 1\n",
                                                 "finish": "stop"} for j in range(2)])
    monkeypatch.setattr(sandbox_module, "available", lambda kind: kind == "none")
    monkeypatch.setattr(sandbox_module, "_warned", True)
    args = ["evaluate", "--ckpt", "absent.ckpt", "--task", "humaneval", "--data", str(tmp_path / "he.jsonl"),
            "--n", "2", "--stage", "score", "--out", str(out)]
    assert nca(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bubblewrap" in err and not (out / SETTINGS).exists()
    assert nca([*args, "--sandbox", "none"]) == 0
    results = json.loads((out / runner.RESULTS).read_text())
    assert results["sandbox"] == "none" and results["settings"]["sandbox"] == "none" and results["metrics"]["pass@1"] == 1


def test_nca_test_on_a_text_run_prepares_its_own_split(tmp_path):
    from lightning.pytorch.trainer.states import TrainerFn

    from nca.datamodules.text import TextDataModule

    with open(tmp_path / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(60))
    dm = TextDataModule(str(tmp_path / "corpus.jsonl"), str(write_tokenizer(tmp_path / "tok")), seq_len=16,
                        batch_size=2, num_workers=0, cache_dir=str(tmp_path / "cache"), val_fraction=0.2,
                        test_fraction=0.2)
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.TESTING))
    dm.prepare_data()  # what the Trainer calls before setup("test")
    assert dm.is_built("test") and not dm.is_built("train")
    dm.setup("test")


def test_the_paper_defaults_live_on_the_tasks_behind_the_protocol(tmp_path):
    from nca.evaluation.bbl import BBLTask
    from nca.evaluation.gsm8k import GSM8KTask
    from nca.evaluation.humaneval_task import HumanEvalTask
    from nca.evaluation.perplexity import PerplexityTask
    from nca.evaluation.task import SampledTask, Sampling, Task

    sampled = {GSM8KTask("g"): Sampling(32, 0.6, 1.0, 250), HumanEvalTask("h"): Sampling(64, 0.4, 0.95, 500),
               BBLTask("b"): Sampling(64, 0.4, 0.95, 35), BBLTask("b", mode="logprob"): Sampling(1, 0.0, 1.0, 1)}
    for task, paper in sampled.items():  # docs/paper.md §7.1-7.3
        assert isinstance(task, SampledTask) and task.paper == paper
    assert isinstance(PerplexityTask(), Task) and not isinstance(PerplexityTask(), SampledTask)
    assert PerplexityTask().paper is None
    assert Sampling(32, 0.6, 1.0, 250).override(n=4, top_p=None) == Sampling(4, 0.6, 1.0, 250)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(1, 0.5, 0.0, 10)
