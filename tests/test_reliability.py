"""Guarantees of docs/reliability.md that single-process runs can show: divergence stops a run before a bad
checkpoint, checkpoints are written whole or not at all, evaluation never writes into a training run's
versions, a log file gets plain progress lines, TensorBoard holds what the HParams tab needs."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import lightning as L
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import (ModelCheckpoint, ModelSummary, RichModelSummary, RichProgressBar,
                                         TQDMProgressBar)

from nca.analysis.curves import load_scalars, version_dirs
from nca.lit_modules.causal_lm import CausalLM
from nca.lit_modules.guards import NonFiniteGuard, TrainingDiverged
from nca.lit_modules.progress import ProgressLine, QuietModelSummary, StepProgressBar, use_quiet_console
from nca.cli import main
from tests.helpers.cli import toy_config
from tests.helpers.data import PatternDataModule
from tests.helpers.models import TINY, trainer



@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["nca"])


class NaNAt(CausalLM):
    """Returns a NaN loss at the given global steps (a stand-in for a spike)."""

    def __init__(self, nan_steps=(), **kw):
        super().__init__(**kw)
        self.nan_steps = set(nan_steps)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.trainer.global_step in self.nan_steps else loss


def finite_weights(path: Path) -> bool:
    state = torch.load(path, weights_only=False)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_diverging_run_stops_with_the_step_and_keeps_good_checkpoints(tmp_path, capsys):
    cfg = toy_config(tmp_path, trainer={"max_steps": 8, "gradient_clip_val": None}, model={"lr": 1e6})
    assert main(["fit", "--config", cfg, "--checkpoint.every_n_train_steps", "1"]) == 2
    err = capsys.readouterr().err
    step = int(re.search(r"diverged: non-finite loss or gradients at step (\d+)", err).group(1))
    assert step < 8 and "--guard.max_skipped_steps" in err and len(err.strip().splitlines()) == 1
    ckpts = sorted((tmp_path / "runs/toy/checkpoints").glob("*.ckpt"))
    assert ckpts and all(finite_weights(p) for p in ckpts)
    last = torch.load(tmp_path / "runs/toy/checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == step  # written after the last good update, never after the bad one


def test_skipped_steps_leave_the_weights_alone_up_to_the_limit(tmp_path):
    dm = PatternDataModule()
    weights = {}

    class Snapshot(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            weights[trainer.global_step] = pl_module.model.lm_head.weight.detach().clone()

    module = NaNAt(nan_steps={2}, config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    guard = NonFiniteGuard(max_skipped_steps=1)
    trainer(tmp_path, 4, callbacks=[guard, Snapshot()]).fit(module, dm)
    assert guard.skipped == [2]
    assert torch.equal(weights[3], weights[2]) and not torch.equal(weights[4], weights[3])  # step 2 = 3rd batch

    module = NaNAt(nan_steps={1, 2}, config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    with pytest.raises(TrainingDiverged, match=r"at step 2 \(2 such step\(s\): \[1, 2\]\)"):
        trainer(tmp_path, 4, callbacks=[NonFiniteGuard(max_skipped_steps=1)]).fit(module, PatternDataModule())


def test_guard_rejects_a_negative_limit():
    with pytest.raises(ValueError, match="max_skipped_steps"):
        NonFiniteGuard(-1)


class FailSavingAt(Callback):
    """Makes the checkpoint at ``step`` unserialisable, as a crash in the middle of a save would."""

    def __init__(self, step):
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_step == self.step:
            checkpoint["broken"] = lambda: None  # torch.save cannot pickle a lambda


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=2, save_last=True, save_top_k=-1)
    module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    with pytest.raises(Exception):
        trainer(tmp_path, 4, callbacks=[FailSavingAt(4), ckpt], enable_checkpointing=True).fit(module, PatternDataModule())
    assert torch.load(tmp_path / "ckpts/last.ckpt", weights_only=False)["global_step"] == 2
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]


def test_evaluation_logs_apart_from_the_training_run(tmp_path):
    config = toy_config(tmp_path, trainer={"max_steps": 2})
    assert main(["fit", "--config", config]) == 0
    assert main(["validate", "--config", config, "--ckpt_path", "last"]) == 0
    run = tmp_path / "runs/toy"
    assert sorted(p.name for p in run.glob("version_*")) == ["version_0"]
    assert [p.name for p in (run / "eval").glob("version_*")] == ["version_0"]
    assert version_dirs(run) == [run / "version_0"]
    assert load_scalars(run, "train/loss")[0][-1] == 1  # the training run's own last logged step
    assert list((run / "eval/version_0").glob("events.out.tfevents.*"))


def test_tensorboard_has_hparams_with_val_ppl_tokens_per_second_and_no_counters(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = toy_config(tmp_path, trainer={"max_steps": 6, "val_check_interval": 6})
    assert main(["fit", "--config", config]) == 0
    events = EventAccumulator(str(tmp_path / "runs/toy/version_0"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/ppl", "train/tokens_per_sec", "val/ppl"} <= tags
    assert not tags & {"hp_metric", "epoch", "train/time", "train/batches", "train/samples", "train/lengths",
                       "train/device/items_per_sec"}
    plugin = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugin and b"val/ppl" in plugin["_hparams_/experiment"]
    assert b"model/lr" in plugin["_hparams_/session_start_info"]
    assert b"trainer/max_steps" in plugin["_hparams_/session_start_info"]


def test_progress_line_every_n_steps(tmp_path):
    out = io.StringIO()
    module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    trainer(tmp_path, 4, callbacks=[ProgressLine(every_n_steps=2, stream=out)]).fit(module, PatternDataModule())
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 2/4", "step 4/4"]
    assert re.fullmatch(r"step 2/4 \| loss \d+\.\d{4} \| lr [0-9.e-]+ \| [\d,]+ tok/s \| ETA \d+m\d\ds", lines[0])


def console_trainer(tmp_path, max_steps, callbacks=()):
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                     default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=0, callbacks=list(callbacks))


def test_quiet_console_swaps_lightnings_defaults(tmp_path):
    for interactive, bar in ((True, StepProgressBar), (False, ProgressLine)):
        t = console_trainer(tmp_path, 1)
        use_quiet_console(t, interactive=interactive)
        kinds = [type(cb) for cb in t.callbacks]
        assert bar in kinds and QuietModelSummary in kinds
        assert not {TQDMProgressBar, RichProgressBar, ModelSummary, RichModelSummary} & set(kinds)


def test_step_bar_counts_steps_of_the_whole_run_and_hides_v_num(tmp_path):
    bar = StepProgressBar()
    module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    t = console_trainer(tmp_path, 3, callbacks=[bar])
    t.fit(module, PatternDataModule())
    assert bar.train_progress_bar.total == 3 and bar.train_progress_bar.n == 3
    assert "v_num" not in bar.get_metrics(t, module)
