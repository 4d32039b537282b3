"""`nca replicate`: the plan (paired arms), the stored run state (resume, refusal of changed settings), the local
and submitit launchers, identical fresh stage-2 embeddings across arms, and the smoke preset end to end."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from nca.cli import main
from nca.replication.config import Study, StageBudget, check_study
from nca.replication.launch import SlurmOptions, launch
from nca.replication.plan import OUT, Run, arm_labels, plan
from nca.replication.state import (DONE_FILE, SPEC_FILE, ConfigChanged, Status, check_unchanged, command_for, status,
                               write_spec)

REPO = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on a mat while rain fell over quiet hills and rivers ran to the sea at dawn".split()


def write_corpus(path: Path, documents: int, seed: int) -> Path:
    gen = torch.Generator().manual_seed(seed)
    with open(path, "w") as f:
        for i in range(documents):
            picks = torch.randint(len(WORDS), (int(torch.randint(20, 80, (1,), generator=gen)),), generator=gen)
            f.write(json.dumps({"text": f"doc {i}: " + " ".join(WORDS[j] for j in picks)}) + "\n")
    return path


def small_study(**changes) -> Study:
    study = Study(arms=["scratch", "nca", "dyck", "c4", "nca_reinit_attention"], bands=["50plus", "30-40"], seeds=[0, 1],
                  stage1=StageBudget(steps=4, val_every=2, warmup_steps=1),
                  stage2=StageBudget(steps=6, val_every=2, warmup_steps=1))
    for key, value in changes.items():
        setattr(study, key, value)
    return study


# ------------------------------------------------------------------------------------------------ plan
def test_plan_pairs_arms_by_seed_and_composes_repo_configs():
    study = small_study()
    runs = {r.id: r for r in plan(study, "vocab-hash")}
    assert arm_labels(study) == ["scratch", "nca-50plus", "nca-30-40", "dyck", "c4", "nca-50plus-reinit_attention"]
    assert sorted(r for r in runs if r.startswith("s1-")) == sorted(
        f"s1-{s}-seed{k}" for s in ("nca-50plus", "nca-30-40", "dyck", "c4") for k in (0, 1))
    scratch, nca = runs["s2-owt-scratch-seed1"], runs["s2-owt-nca-30-40-seed1"]
    assert nca.after == "s1-nca-30-40-seed1" and scratch.after is None
    ablation = runs["s2-owt-nca-50plus-reinit_attention-seed0"]
    assert ablation.after == "s1-nca-50plus-seed0" and "configs/ablation/reinit_attention.yaml" in ablation.args
    # Same seed: the stage-2 arguments differ only in the init file, init_from and the run's own name.
    def pairs(run):
        a = run.args
        return {(a[i], a[i + 1]) for i in range(len(a) - 1) if a[i].startswith("--")}
    differ = {k for k, _ in pairs(scratch) ^ pairs(nca)}
    assert differ == {"--config", "--model.init_from", "--trainer.logger.init_args.name", "--trainer.default_root_dir"}
    assert ("--seed_everything", "1") in pairs(nca) and ("--data.init_args.seed", "1") in pairs(nca)
    assert runs["s1-c4-seed0"].inputs == {"tokenizer": "vocab-hash"} and runs["s1-dyck-seed0"].inputs == {}
    command = nca.command(Path("/study"))
    assert command[1:4] == ["-m", "nca", "fit"] and not any(OUT in a for a in command)


def test_control_arms_and_alphabets_compose_their_stage1_configs():
    study = small_study(arms=["scratch", "nca", "shuffled_nca", "random_tokens"], bands=["50plus"], alphabets=[10, 2])
    assert arm_labels(study) == ["scratch", "nca-50plus", "nca-50plus-n2", "shuffled-50plus", "shuffled-50plus-n2",
                                 "random", "random-n2"]
    runs = {r.id: r for r in plan(study, "v")}
    shuffled, random_n2 = runs["s1-shuffled-50plus-n2-seed1"], runs["s1-random-n2-seed1"]
    assert "configs/baselines/shuffled_nca.yaml" in shuffled.args and "configs/band/50plus.yaml" in shuffled.args
    band = json.loads(shuffled.args[shuffled.args.index("--data.init_args.band") + 1])
    assert 0.15 < band[0] < 0.22 and band[1] == 1.0  # 50%+ scaled by the noise ratio of n = 2 (0.25 / 0.67)
    assert shuffled.args[shuffled.args.index("--data.init_args.nca.n_states") + 1] == "2"
    assert "configs/baselines/random_tokens.yaml" in random_n2.args and "--data.init_args.band" not in random_n2.args
    assert "--data.init_args.nca.n_states" not in runs["s1-nca-50plus-seed0"].args  # the paper's alphabet: as is
    stage2 = runs["s2-owt-shuffled-50plus-n2-seed1"]
    assert stage2.after == "s1-shuffled-50plus-n2-seed1" and "configs/init/from_shuffled_nca.yaml" in stage2.args
    assert "configs/init/from_random_tokens.yaml" in runs["s2-owt-random-seed0"].args
    from nca.replication.arms import comparisons

    pairs = comparisons(arm_labels(study))
    assert ("nca-50plus-n2", "shuffled-50plus-n2") in pairs and ("nca-50plus-n2", "random-n2") in pairs
    assert ("nca-50plus", "shuffled-50plus") in pairs and ("shuffled-50plus", "scratch") in pairs
    assert ("shuffled-50plus-n2", "random-n2") in pairs and ("shuffled-50plus", "random") in pairs
    assert ("shuffled-50plus-n2", "random") not in pairs  # a control against the random arm of its own alphabet


def test_ladder_rungs_prefix_runs_and_replace_budget_keys():
    from nca.replication.config import Rung

    study = small_study(arms=["scratch", "nca"], bands=["50plus"], device="gpu", rungs=[
        Rung("s", {"n_layer": 1, "n_embd": 32, "n_head": 2}, stage2={"lr": 1e-3, "batch_size": 8, "accumulate": 2}),
        Rung("m", {"n_layer": 2, "n_embd": 64, "n_head": 2}, gpus=2, strategy="fsdp")])
    check_study(study)
    runs = {r.id: r for r in plan(study, "v")}
    small, medium = runs["s-s2-owt-nca-50plus-seed0"], runs["m-s2-owt-nca-50plus-seed0"]
    assert small.after == "s-s1-nca-50plus-seed0" and small.rung == "s" and len(runs) == 2 * (2 + 4)
    value = lambda run, key: run.args[run.args.index(key) + 1]  # noqa: E731
    assert value(small, "--model.lr") == "0.001" and value(small, "--trainer.accumulate_grad_batches") == "2"
    assert value(small, "--data.init_args.batch_size") == "4" and value(medium, "--data.init_args.batch_size") == "4"
    assert json.loads(value(medium, "--model.config"))["n_embd"] == 64 and value(medium, "--trainer.devices") == "2"
    assert "configs/strategy/fsdp.yaml" in medium.args and "configs/strategy/fsdp.yaml" not in small.args
    with pytest.raises(ValueError, match=r"rung s: unknown stage2 key\(s\) \['lrr'\]"):
        check_study(small_study(rungs=[Rung("s", {"n_layer": 1, "n_embd": 32}, stage2={"lrr": 1.0})]))
    with pytest.raises(ValueError, match="not a multiple of accumulate x gpus"):
        check_study(small_study(stage2=StageBudget(steps=6, val_every=2, warmup_steps=1, batch_size=6, accumulate=4)))


def test_parameter_counts_of_the_plan_match_litgpt():
    from litgpt.model import GPT

    from nca.lit_modules.model import build_config
    from nca.replication.costs import sizes

    for model, vocab in (({"n_layer": 2, "n_embd": 64, "n_head": 4, "intermediate_size": 256}, 512),
                         ({"n_layer": 3, "n_embd": 48, "n_head": 4, "n_query_groups": 2, "head_size": 16}, 10_002)):
        with torch.device("meta"):
            gpt = GPT(build_config({**model, "block_size": 64}, vocab))
        fresh = gpt.transformer.wte.weight.numel() + gpt.lm_head.weight.numel()
        expected = sum(p.numel() for p in gpt.parameters())
        s = sizes(model, 64, vocab)
        assert (s.total, s.carried, s.vocab_rows) == (expected, expected - fresh, gpt.config.padded_vocab_size)


def test_ladder_plan_prints_every_run_offline_in_seconds(tmp_path):
    code = ("import sys, time; from nca.cli import main; t = time.time(); rc = main(sys.argv[1:]); "
            "print('heavy', sorted(m for m in ('torch', 'lightning', 'datasets', 'tokenizers') if m in sys.modules), "
            "round(time.time() - t, 2), rc)")
    for name in ("configs/replicate/ladder.yaml", "replicate/ladder.yaml"):
        proc = subprocess.run([sys.executable, "-c", code, "replicate", "--config", name, "--plan"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = proc.stdout.splitlines()
        heavy, seconds, rc = lines[-1].split(" ", 1)[1].rsplit(" ", 2)
        assert heavy == "[]" and rc == "0" and float(seconds) < 10  # no data, tokenizer or model library loaded
        runs = [line for line in lines if line.split()[:1] and line.split()[0].endswith(tuple(f"seed{k}" for k in range(3)))]
        assert len(runs) == 5 * (2 * 3 + 3 * 3)  # 5 rungs x (2 stage-1 sources + 3 stage-2 arms) x 3 seeds
        assert {r.split("-")[0] for r in runs} == {"14m", "50m", "160m", "400m", "1.6b"}
        assert "1.6b-s2-owt-nca-50plus-seed0" in proc.stdout and "GPU-hours" in lines[-2]
        assert "| stage-1 / stage-2 learning rate | 0.0001 / 0.0005 = 0.2 | 1e-4 / 0.0005 = 0.2 |" in proc.stdout
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("preset", ["smoke", "cpu", "gpu", "ladder"])
def test_shipped_presets_parse_check_and_keep_the_papers_learning_rate_ratio(preset):
    from nca.cli.replicate import parser
    from nca.replication.config import rung_studies, study_from_dict
    from nca.replication.plan import stage2_lr

    study = study_from_dict(parser().parse_args(["--config", str(REPO / f"configs/replicate/{preset}.yaml")]).as_dict())
    check_study(study)
    assert plan(study, "v") and len(study.seeds) >= (8 if preset == "cpu" else 2)
    for _, one in rung_studies(study):
        for domain in one.domains:
            ratio = one.stage1.lr / stage2_lr(one, domain)[0]
            assert ratio == pytest.approx(0.5 if domain == "code" else 0.2)  # docs/paper.md §4, §6
        b1, b2 = one.stage1, one.stage2
        assert b2.steps * b2.batch_size * b2.seq_len > b1.steps * b1.batch_size * b1.seq_len or preset == "smoke"


def test_help_documents_every_option():
    from nca.cli.replicate import parser

    p = parser()
    text = p.format_help()
    assert "Study(" not in text and "_EMPTY_HELP_" not in text
    undocumented = [a.option_strings[0] for a in p._actions if a.option_strings and not (a.help or "").strip()]
    assert not undocumented, undocumented


def test_hashes_follow_the_settings_and_the_stage1_run():
    base = {r.id: r.hash for r in plan(small_study(), "v")}
    again = {r.id: r.hash for r in plan(small_study(), "v")}
    assert base == again
    changed = {r.id: r.hash for r in plan(small_study(stage1=StageBudget(steps=5, val_every=2, warmup_steps=1)), "v")}
    assert changed["s1-dyck-seed0"] != base["s1-dyck-seed0"]
    assert changed["s2-owt-dyck-seed0"] != base["s2-owt-dyck-seed0"]  # its stage-1 run changed
    assert changed["s2-owt-scratch-seed0"] == base["s2-owt-scratch-seed0"]
    other_vocab = {r.id: r.hash for r in plan(small_study(), "w")}
    assert other_vocab["s2-owt-scratch-seed0"] != base["s2-owt-scratch-seed0"]


def test_bad_studies_fail_with_the_fix():
    with pytest.raises(ValueError, match="unknown arm"):
        check_study(small_study(arms=["scratch", "nca", "gpt"]))
    with pytest.raises(ValueError, match="must include 'scratch'"):
        check_study(small_study(arms=["nca"]))
    with pytest.raises(ValueError, match="domains must be"):
        check_study(small_study(domains=["poetry"]))
    with pytest.raises(ValueError, match="seeds must be distinct"):
        check_study(small_study(seeds=[1, 1]))
    check_study(small_study())


# ----------------------------------------------------------------------------------------------- state
def test_state_resume_and_refusal(tmp_path):
    runs = plan(small_study(), "v")
    run = runs[0]
    assert status(run, tmp_path) is Status.NEW
    write_spec(run, tmp_path)
    assert status(run, tmp_path) is Status.STARTED and "--ckpt_path" not in command_for(run, tmp_path)
    (run.directory(tmp_path) / "checkpoints").mkdir()
    (run.directory(tmp_path) / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert status(run, tmp_path) is Status.PARTIAL
    assert command_for(run, tmp_path)[-2:] == ["--ckpt_path", "last"]
    check_unchanged(runs, tmp_path)  # same settings: fine
    changed = plan(small_study(stage1=StageBudget(steps=9, val_every=2, warmup_steps=1)), "v")
    with pytest.raises(ConfigChanged, match=r"(?s)--trainer.max_steps: '4' -> '9'.*Nothing was started"):
        check_unchanged(changed, tmp_path)


# -------------------------------------------------------------------------------------------- launchers
def fake_runs(marker: Path, fail: str | None = None) -> list[Run]:
    """Runs whose command appends its id to ``marker`` (and fails for ``fail``), in place of `nca fit`."""
    runs = [Run("s1-a-seed0", 1, "a", 0, []), Run("s1-b-seed0", 1, "b", 0, []),
            Run("s2-x-a-seed0", 2, "a", 0, [], domain="x", after="s1-a-seed0"),
            Run("s2-x-b-seed0", 2, "b", 0, [], domain="x", after="s1-b-seed0")]
    for run in runs:
        run.hash = run.id
        code = f"open({str(marker)!r}, 'a').write({run.id!r} + '\\n'); raise SystemExit({int(run.id == fail)})"
        run.command = lambda out, code=code: [sys.executable, "-c", code]
    return runs


@pytest.mark.parametrize("launcher, options", [("local", None), ("slurm", SlurmOptions(cluster="debug"))])
def test_launchers_run_stage1_first_skip_done_and_block_on_failure(tmp_path, launcher, options):
    marker = tmp_path / "ran.txt"
    runs = fake_runs(marker, fail="s1-b-seed0")
    failed = launch(runs, tmp_path, launcher, jobs=2, slurm=options, say=lambda _: None)
    assert failed == ["s1-b-seed0", "s2-x-b-seed0"]  # the stage-2 run of a failed stage-1 run never starts
    ran = marker.read_text().split()
    assert sorted(ran[:2]) == ["s1-a-seed0", "s1-b-seed0"] and ran[2:] == ["s2-x-a-seed0"]
    assert (runs[0].directory(tmp_path) / DONE_FILE).is_file() and (runs[0].directory(tmp_path) / SPEC_FILE).is_file()
    marker.unlink()
    failed = launch(fake_runs(marker), tmp_path, launcher, jobs=2, slurm=options, say=lambda _: None)
    assert failed == [] and sorted(marker.read_text().split()) == ["s1-b-seed0", "s2-x-b-seed0"]  # done runs skipped


def test_a_local_run_is_forked_from_the_preloaded_server_with_its_output_in_its_log(tmp_path):
    from nca.replication.launch import fork_command

    log = tmp_path / "run.log"
    assert fork_command([sys.executable, "-m", "nca", "configs", "stage1_paper"], str(log), 1) == 0
    text = log.read_text()
    assert text.startswith("\n$ ") and "stage1_paper.yaml" in text and "stage2" not in text.split("\n", 2)[2]
    assert fork_command([sys.executable, "-m", "nca", "configs", "--no_such_key", "1"], str(log), 1) == 2
    assert "unknown key --no_such_key" in log.read_text()


# -------------------------------------------------------- the fresh stage-2 embedding is the same in every arm
class StartProbe(Callback):
    def on_train_start(self, trainer, pl_module):
        self.weights = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.first_batch = batch["input_ids"].clone()


def fit_in_process(args: list[str], out: Path, monkeypatch) -> StartProbe:
    from nca.cli.train import TRAINER_DEFAULTS, NCACLI

    probe = StartProbe()
    monkeypatch.setattr(sys, "argv", ["nca"])
    monkeypatch.chdir(REPO)
    NCACLI(args=["fit", *(a.replace(OUT, str(out)) for a in args)],
           trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [probe]})
    return probe


@pytest.mark.slow
def test_fresh_stage2_embedding_and_data_order_are_identical_across_arms(tmp_path, monkeypatch):
    from nca.replication.vocab import prepare_vocabulary

    corpus = write_corpus(tmp_path / "owt.jsonl", 120, seed=0)
    study = Study(arms=["scratch", "nca"], bands=["50plus"], seeds=[3], model={"n_layer": 1, "n_embd": 32, "n_head": 2},
                  stage1=StageBudget(steps=1, batch_size=2, seq_len=38, val_every=1, val_batches=1),
                  stage2=StageBudget(steps=1, batch_size=2, seq_len=16, val_every=1, val_batches=1),
                  overrides={"nca": ["--data.init_args.val_rules", "1", "--data.init_args.val_sequences", "1",
                                     "--data.init_args.band", "null"]})
    study.data.owt, study.vocab.size, study.vocab.chars_per_corpus = str(corpus), 280, 20000
    _, vocab_hash = prepare_vocabulary(study, tmp_path)
    runs = {r.source if r.stage == 2 else "stage1": r for r in plan(study, vocab_hash)}
    fit_in_process(runs["stage1"].args, tmp_path, monkeypatch)
    scratch = fit_in_process(runs["scratch"].args, tmp_path, monkeypatch)
    nca = fit_in_process(runs["nca-50plus"].args, tmp_path, monkeypatch)
    for name in ("transformer.wte.weight", "lm_head.weight"):
        assert torch.equal(scratch.weights[name], nca.weights[name]), f"{name} differs between arms of one seed"
    assert not torch.equal(scratch.weights["transformer.h.0.attn.qkv.weight"], nca.weights["transformer.h.0.attn.qkv.weight"])
    assert torch.equal(scratch.first_batch, nca.first_batch)


# --------------------------------------------------------------------------------------- smoke, end to end
def replicate(out: Path, data: dict[str, Path], *extra: str, **popen) -> subprocess.Popen:
    args = [sys.executable, "-m", "nca", "replicate", "--config", "configs/replicate/smoke.yaml", "--out", str(out),
            "--data.owt", str(data["owt"]), "--data.c4", str(data["c4"]), "--data.c4_val", "null", *extra]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def replicate_here(out: Path, data: dict[str, Path], capsys, *extra: str) -> tuple[int, str]:
    """The same call in this process (its runs still fork): (exit code, what it printed)."""
    code = main(["replicate", "--config", "configs/replicate/smoke.yaml", "--out", str(out), "--data.owt",
                 str(data["owt"]), "--data.c4", str(data["c4"]), "--data.c4_val", "null", *extra])
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def snapshot(out: Path) -> dict[str, float]:
    """Modification times of every checkpoint and event file: a re-run must not touch them."""
    return {str(p): p.stat().st_mtime for p in (out / "runs").rglob("*") if p.suffix == ".ckpt" or "tfevents" in p.name}


@pytest.mark.slow
def test_smoke_preset_interrupted_resumed_idempotent_and_refusing_changes(tmp_path, capsys, monkeypatch):
    data = {"owt": write_corpus(tmp_path / "owt.jsonl", 200, seed=1), "c4": write_corpus(tmp_path / "c4.jsonl", 200, seed=2)}
    out = tmp_path / "study"
    first = out / "runs" / "s1-nca-50plus-n4-seed0" / DONE_FILE
    proc = replicate(out, data, "--jobs", "1")
    deadline = time.time() + 240
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert first.is_file(), proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # interrupted after the first run
    proc.wait()
    done_before = first.read_text()

    monkeypatch.chdir(REPO)
    code, log = replicate_here(out, data, capsys, "--jobs", "2")
    assert code == 0, log[-3000:]
    assert "1 already done" in log and "queue s1-nca-50plus-n4-seed0" not in log
    assert first.read_text() == done_before
    report = json.loads((out / "report.json").read_text())
    owt = report["domains"]["owt"]
    arms = {"scratch", "nca-50plus-n4", "shuffled-50plus-n4", "random-n4", "dyck", "c4"}
    assert set(owt["final_ppl"]) == arms
    for arm in owt["final_ppl"].values():
        assert arm["n"] == 2 and arm["mean"] > 1 and arm["low"] < arm["mean"] < arm["high"]
        assert all(isinstance(arm[k], float) and math.isfinite(arm[k]) for k in ("mean", "low", "high"))
    pairs = {(d["method"], d["baseline"]) for d in owt["differences"]}
    assert {("nca-50plus-n4", "scratch"), ("nca-50plus-n4", "shuffled-50plus-n4"), ("nca-50plus-n4", "random-n4"),
            ("shuffled-50plus-n4", "scratch"), ("nca-50plus-n4", "c4"), ("nca-50plus-n4", "dyck")} <= pairs
    assert set(owt["speedup"]) == arms - {"scratch"} and len(report["verdicts"]) == len(pairs)
    assert all(d["detectable"]["n"] == 2 and "minimal detectable effect" in d["verdict"] for d in owt["differences"])
    assert {(c["method"], c["baseline"]) for c in owt["curves"]} == pairs
    assert all(c["steps"] == [2, 4, 6] for c in owt["curves"])  # evaluations at the optimizer steps taken
    assert 0 < report["carried"]["study"]["share"] < 1
    learning = report["stage1_learning"]
    assert set(learning) == {"nca-50plus-n4", "shuffled-50plus-n4", "random-n4", "dyck", "c4"}
    assert all(isinstance(e["learned"], bool) and e["uniform"] > 0 for e in learning.values())
    assert all((e["frame_slope"] is not None) == (e["kind"] in ("nca", "shuffled", "random")) for e in learning.values())
    text = (out / "report.md").read_text()
    for section in ("## Verdicts", "## Recipe", "## Stage 1: did it learn its data?", "### Final validation perplexity",
                    "### Paired differences", "### Difference along training", "### Convergence speed-up",
                    "## Induction heads and in-context learning", "## Paper's numbers"):
        assert section in text
    for picture in ("curves-owt.png", "differences-owt.png"):
        assert (out / picture).stat().st_size > 0
    assert "nan" not in text.lower()

    before, report_text = snapshot(out), (out / "report.md").read_text()
    code, log = replicate_here(out, data, capsys, "--jobs", "2")
    assert code == 0 and "22 already done, 0 to run" in log, log[-2000:]
    assert snapshot(out) == before and (out / "report.md").read_text() == report_text

    code, log = replicate_here(out, data, capsys, "--stage2.lr", "0.01")
    assert code == 2 and "other settings" in log and "--model.lr: '0.003' -> '0.01'" in log
    assert snapshot(out) == before


def test_band_transfer_section_when_several_bands_ran(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from nca.replication.results import band_transfer_section

    study = small_study(arms=["scratch", "nca"])
    runs = [r for r in plan(study, "v") if r.stage == 2]
    for run in runs:  # made-up validation curves: the bands help a little
        bonus = {"scratch": 0.0, "nca-50plus": 1.0, "nca-30-40": 0.5}[run.source]
        with SummaryWriter(str(run.directory(tmp_path) / "version_0")) as writer:
            for step, value in ((10, 30.0), (20, 20.0), (30, 15.0)):
                writer.add_scalar("val/ppl", value - bonus - 0.1 * run.seed, step)
    lines = band_transfer_section(study, runs, tmp_path)
    assert lines[0] == "## Band transfer" and (tmp_path / "band-transfer.png").stat().st_size > 0
    rows = [line for line in lines if line.startswith("| owt |")]
    assert len(rows) == 2 and any("| 50+ |" in row for row in rows) and any("| 30-40 |" in row for row in rows)
    assert band_transfer_section(small_study(arms=["scratch", "nca"], bands=["50plus"]), runs, tmp_path) == []
