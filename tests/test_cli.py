"""`python -m nca fit|validate|test`: config composition, early errors, logs/checkpoints that never overwrite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from nca.cli import main
from nca.cli.train import NCACLI, free_name
from tests.helpers.cli import toy_config, write
from tests.helpers.models import RecordLosses

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "nca" / "configs"


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["nca"])  # the CLI gets its arguments from the test, not from pytest


def parse_only(*args: str) -> NCACLI:
    return NCACLI(args=list(args), run=False)


def test_print_config_shows_the_composed_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIGS / "stage1.yaml"), "--config", str(CONFIGS / "model/small.yaml"),
              "--model.config.n_layer", "3", "--print_config"])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "nca.datamodules.nca.NCADataModule"
    # a model file replaces model.config whole; a command-line key then overrides one entry
    assert printed["model"]["config"] == {"block_size": 1024, "n_layer": 3, "n_embd": 256, "n_head": 4,
                                          "intermediate_size": 1024}
    assert printed["model"]["lr"] == 2e-3  # from stage1.yaml, untouched by the model file
    assert printed["checkpoint"]["save_last"] is True


@pytest.mark.parametrize("model_file", sorted(p.name for p in (CONFIGS / "model").glob("*.yaml")))
def test_every_model_file_composes_with_stage1(model_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIGS / "stage1.yaml"), "--config", str(CONFIGS / "model" / model_file),
              "--print_config"])
    assert exit_.value.code == 0


def test_paper_recipe_composes_with_1_6b_and_fsdp(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIGS / "stage1_paper.yaml"), "--config", str(CONFIGS / "model/1.6b.yaml"),
              "--config", str(CONFIGS / "strategy/fsdp.yaml"), "--print_config"])
    assert exit_.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["strategy"]["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    assert cfg["trainer"]["strategy"]["init_args"]["auto_wrap_policy"] == ["litgpt.model.Block"]
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["model"]["config"]["n_embd"] == 2048 and cfg["model"]["lr"] == 1e-4
    assert cfg["model"]["weight_decay"] == 0.0
    data = cfg["data"]["init_args"]
    assert (data["train_rules"], data["val_rules"], data["band"]) == (None, 2000, [0.5, 1.0])  # rules re-sampled
    assert cfg["trainer"]["max_steps"] * data["batch_size"] * data["seq_len"] == pytest.approx(164e6, rel=0.01)


def test_paper_model_has_1_61b_non_embedding_parameters():
    from nca.lit_modules.causal_lm import build_config
    from litgpt.model import GPT

    cfg = yaml.safe_load((CONFIGS / "model/1.6b.yaml").read_text())["model"]["config"]
    with torch.device("meta"):
        model = GPT(build_config(cfg, 10002))
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.transformer.wte.weight.numel() + model.lm_head.weight.numel()
    assert (total - embeddings) / 1e9 == pytest.approx(1.61, abs=0.01)


@pytest.mark.parametrize("bad, near", [
    (["--model.lrr", "1e-3"], "--model.lr"),                                    # misspelt module argument
    (["--trainer.max_step", "5"], "--trainer.max_steps"),                       # misspelt trainer argument
    (["--model.config.n_layers", "4"], "--model.config.n_layer"),               # misspelt model size key
    (["--data.init_args.seq_length", "32"], "--data.init_args.seq_len"),        # misspelt DataModule argument
    (["--trainer.logger.init_args.nam", "x"], "--trainer.logger.init_args.name"),
])
def test_unknown_key_is_one_line_naming_the_nearest_key(tmp_path, capsys, bad, near):
    assert main(["fit", "--config", toy_config(tmp_path), *bad]) == 2
    flag = bad[0].partition("=")[0]
    assert capsys.readouterr().err.strip() == f"nca fit: error: unknown key {flag}; did you mean {near}?"
    assert not (tmp_path / "runs").exists()


def test_a_nested_key_is_never_abbreviated(tmp_path, capsys):
    """jsonargparse's parsers of nested classes took `nca.temperatur` for `nca.temperature` and trained."""
    data = {"class_path": "nca.datamodules.nca.NCADataModule", "init_args": {"nca": {"n_states": 3, "grid": 4}}}
    assert main(["fit", "--config", toy_config(tmp_path, data=data), "--data.init_args.nca.temperatur", "1"]) == 2
    assert capsys.readouterr().err.strip() == ("nca fit: error: unknown key --data.init_args.nca.temperatur; "
                                               "did you mean --data.init_args.nca.temperature?")


def test_unknown_key_in_a_config_file_fails(tmp_path, capsys):
    assert main(["fit", "--config", toy_config(tmp_path, model={"learning_rate": 1e-3})]) == 2
    assert capsys.readouterr().err.strip().startswith("nca fit: error: unknown key --model.learning_rate")
    assert main(["fit", "--config", toy_config(tmp_path, trainer={"max_step": 1})]) == 2
    assert capsys.readouterr().err.strip().endswith("did you mean --trainer.max_steps?")


def test_a_bad_value_is_one_line_naming_its_key(tmp_path, capsys):
    assert main(["fit", "--config", toy_config(tmp_path), "--model.lr", "fast"]) == 2
    assert capsys.readouterr().err.strip() == "nca fit: error: --model.lr: Expected a <class 'float'>. Got value: fast"


def test_data_vocab_is_linked_into_the_model(tmp_path):
    cli = parse_only("--config", toy_config(tmp_path), "--data.init_args.vocab_size", "40")
    assert cli.datamodule.vocab_size == 40
    assert cli.model.model_config.vocab_size == 40 and cli.model.model_config.padded_vocab_size == 64


def test_too_small_model_vocab_fails_before_training(tmp_path, capsys):
    assert main(["fit", "--config", toy_config(tmp_path), "--model.config.padded_vocab_size", "8"]) == 2
    assert re.search(r"error: .*vocabulary of 8 rows.*vocab_size 16", capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_fit_logs_saves_config_and_resumes_without_overwriting(tmp_path, capsys):
    config = toy_config(tmp_path)
    main(["fit", "--config", config])
    run = tmp_path / "runs" / "toy"
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt",
                                                           "last.ckpt"]
    saved = (run / "version_0" / "config.yaml").read_text()
    assert "helpers.data.PatternDataModule" in saved
    assert list((run / "version_0").glob("events.out.tfevents.*"))

    # a second fresh run would mix with the first one's checkpoints: refused, nothing touched
    before = {p: p.stat().st_mtime_ns for p in ckpts.iterdir()}
    assert main(["fit", "--config", config]) == 2
    assert {p: p.stat().st_mtime_ns for p in ckpts.iterdir()} == before

    # the schedule's length is part of the run: a resume with another max_steps is refused, and leaves nothing
    resume = ["fit", "--config", config, "--trainer.logger.init_args.version", "0", "--ckpt_path", "last"]
    assert main([*resume, "--trainer.max_steps", "6"]) == 2
    assert "schedule was sized for 4 steps" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "version_0").glob("config*")) == ["config.yaml"]

    # resume into the same log version: the first config stays, the new one goes next to it
    main(resume)
    assert (run / "version_0" / "config.yaml").read_text() == saved
    assert (run / "version_0" / "config-1.yaml").is_file()
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4 and last["tokens_seen"] == 4 * 8 * 32
    assert last["lr_schedule"] == {"total_steps": 4, "warmup_steps": 1}

    # validate / test pick the newest last checkpoint of the experiment
    main(["validate", "--config", config, "--ckpt_path", "last"])


def test_free_name(tmp_path):
    assert free_name(tmp_path, "config", ".yaml") == "config.yaml"
    (tmp_path / "config.yaml").touch()
    (tmp_path / "config-1.yaml").touch()
    assert free_name(tmp_path, "config", ".yaml") == "config-2.yaml"


def test_init_from_loads_blocks_on_fresh_fit_only(tmp_path):
    """The stage-transition hook: blocks come from `init_from`, embeddings stay fresh, resumes skip it."""
    main(["fit", "--config", toy_config(tmp_path)])
    source = torch.load(tmp_path / "runs/toy/checkpoints/last.ckpt", weights_only=False)["state_dict"]

    captured = {}

    class Capture(RecordLosses):
        def on_train_start(self, trainer, pl_module):
            captured.update({k: v.clone() for k, v in pl_module.state_dict().items()})

    stage2 = write(tmp_path / "stage2.yaml", {"trainer": {"max_steps": 1, "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(tmp_path / "runs"), "name": "stage2"}}}})
    cli = NCACLI(args=["--config", toy_config(tmp_path), "--config", stage2, "--model.init_from",
                       str(tmp_path / "runs/toy/checkpoints/last.ckpt"), "--data.init_args.vocab_size", "20"],
                 run=False)
    cli.trainer.callbacks.append(Capture())
    cli.trainer.fit(cli.model, cli.datamodule)
    block = "model.transformer.h.0.attn.qkv.weight"
    assert torch.equal(captured[block], source[block])
    assert torch.equal(captured["model.transformer.ln_f.weight"], source["model.transformer.ln_f.weight"])
    assert not torch.equal(captured["model.lm_head.weight"][:16], source["model.lm_head.weight"][:16])

    # a resumed run restores its own checkpoint and never reads init_from (here: a path that does not exist)
    assert main(["fit", "--config", toy_config(tmp_path), "--model.init_from", str(tmp_path / "missing.ckpt"),
                 "--ckpt_path", "last"]) == 0
    assert main(["fit", "--config", toy_config(tmp_path), "--model.init_from", str(tmp_path / "missing.ckpt"),
                 "--checkpoint.dirpath", str(tmp_path / "fresh")]) == 2


def nca_config(tmp_path: Path, steps: int) -> list[str]:
    data = {"class_path": "nca.datamodules.nca.NCADataModule", "init_args": {
        "seq_len": 64, "batch_size": 8, "band": None, "nca": {"n_states": 3, "grid": 4, "patch": 2},
        "train_rules": None, "val_rules": 8, "val_sequences": 8, "seed": 0, "num_workers": 0}}
    cfg = toy_config(tmp_path, data=data, trainer={"max_steps": steps, "val_check_interval": steps,
                                                   "check_val_every_n_epoch": None},
                     checkpoint={"every_n_train_steps": steps})
    return ["--config", cfg, "--model.config.block_size", "64"]


def test_a_few_steps_lower_the_loss_on_the_nca_stream(tmp_path):
    cli = NCACLI(args=nca_config(tmp_path, steps=40), run=False)
    assert cli.model.model_config.vocab_size == 3 ** 4 + 2
    rec = RecordLosses()
    cli.trainer.callbacks.append(rec)
    cli.trainer.fit(cli.model, cli.datamodule)
    losses = [rec.losses[s] for s in sorted(rec.losses)]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert "val/loss" in cli.trainer.callback_metrics


@pytest.mark.cuda
@pytest.mark.parametrize("activation_checkpointing", [True, False])
def test_fsdp_two_steps_on_one_gpu(tmp_path, activation_checkpointing):
    args = ["fit", "--config", toy_config(tmp_path), "--config", str(CONFIGS / "strategy/fsdp.yaml"),
            "--trainer.devices", "1", "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "2"]
    if not activation_checkpointing:
        args += ["--trainer.strategy.init_args.activation_checkpointing_policy", "null"]
    main(args)
    ckpts = tmp_path / "runs/toy/checkpoints"
    assert (ckpts / "last.ckpt").is_dir()  # sharded: a folder of per-rank files
    main(args + ["--trainer.max_steps", "3", "--ckpt_path", "last"])


@pytest.mark.cuda
def test_fsdp_builds_on_meta_and_initialises_like_single_device(tmp_path):
    from lightning.pytorch.strategies import FSDPStrategy

    cli = NCACLI(args=["--config", toy_config(tmp_path), "--config", str(CONFIGS / "strategy/fsdp.yaml"),
                       "--trainer.devices", "1", "--trainer.max_steps", "1"], run=False)
    assert isinstance(cli.trainer.strategy, FSDPStrategy)
    cli.trainer.fit(cli.model, cli.datamodule)
    proj = [p for n, p in cli.model.model.named_parameters() if n.endswith("attn.proj.weight")]
    assert proj and all(torch.isfinite(p).all() and p.float().std() > 0 for p in proj)


def test_configs_verb_lists_every_shipped_config_with_its_purpose(capsys):
    assert main(["configs"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert "shipped configs in" in header
    shipped = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))
    assert [line.split()[0] for line in lines] == shipped
    stage1 = next(line for line in lines if line.startswith("stage1.yaml "))
    assert "Stage 1" in stage1
    assert main(["configs", "stage2", "paper"]) == 0
    assert {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]} == {
        "stage2/code.yaml", "stage2/math.yaml", "stage2/owt.yaml"}


def test_config_names_read_a_local_file_first_then_the_shipped_one(tmp_path, monkeypatch):
    from nca.cli.configs import resolve, resolve_config_args
    from nca.cli.errors import UsageError

    monkeypatch.chdir(tmp_path)
    shipped = CONFIGS / "stage1.yaml"
    for name in ("stage1.yaml", "configs/stage1.yaml"):
        path, note = resolve(name)
        assert Path(path) == shipped and "shipped" in note
    (tmp_path / "stage1.yaml").write_text("trainer: {max_steps: 3}\n")
    path, note = resolve("stage1.yaml")
    assert path == "stage1.yaml" and "local file" in note
    notes = []
    assert resolve_config_args(["fit", "--config", "stage1.yaml", "--config=stage2/owt.yaml", "--x", "y"],
                               say=notes.append) == ["fit", "--config", "stage1.yaml",
                                                     f"--config={CONFIGS / 'stage2/owt.yaml'}", "--x", "y"]
    assert len(notes) == 2
    assert Path(resolve("smoke.yaml")[0]) == CONFIGS / "replicate/smoke.yaml"  # a bare name one folder holds
    with pytest.raises(UsageError, match="nca configs"):
        resolve("no-such.yaml")
    for folder in ("a", "b"):  # a bare name two shipped folders hold
        (tmp_path / "shipped" / folder).mkdir(parents=True)
        (tmp_path / "shipped" / folder / "twin.yaml").write_text("{}\n")
    monkeypatch.setattr("nca.cli.configs.SHIPPED", tmp_path / "shipped")
    with pytest.raises(UsageError, match=r"several shipped configs have that name \(a/twin.yaml, b/twin.yaml\)"):
        resolve("twin.yaml")


def test_an_integer_batch_limit_counts_batches_a_float_is_a_fraction(tmp_path):
    """`--trainer.limit_val_batches 1` is one batch (jsonargparse alone read it as 1.0 = every batch)."""
    yaml_one = write(tmp_path / "one.yaml", {"trainer": {"limit_val_batches": 1, "val_check_interval": 2}})
    cases = [(["--trainer.limit_val_batches", "1"], 1), (["--config", yaml_one], 1),
             (["--trainer.limit_val_batches", "1.0"], 1.0), (["--config", yaml_one, "--trainer.limit_val_batches=0.5"], 0.5)]
    for extra, expected in cases:
        cli = NCACLI(args=["--config", toy_config(tmp_path), *extra], run=False)
        assert cli.trainer.limit_val_batches == expected and type(cli.trainer.limit_val_batches) is type(expected)
        assert type(cli.config["trainer"]["limit_val_batches"]) is type(expected)
    assert cli.trainer.val_check_interval == 2 and isinstance(cli.trainer.val_check_interval, int)
