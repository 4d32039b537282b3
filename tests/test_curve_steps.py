"""Validation curves are logged at the optimizer steps taken (the convergence speed-up reads them as such)."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from nca.analysis.curves import load_scalars, speedup
from nca.lit_modules import CausalLM
from tests.helpers.data import PatternDataModule
from tests.helpers.models import TINY


@pytest.mark.parametrize("accumulate", [1, 2])
def test_validation_is_logged_at_the_optimizer_steps_taken(tmp_path, accumulate):
    L.seed_everything(0)
    dm = PatternDataModule(train_batches=4 * accumulate, val_batches=1)
    module = CausalLM(config=TINY, vocab_size=dm.vocab_size, lr=3e-3, warmup_steps=1)
    logger = TensorBoardLogger(str(tmp_path), name="run")
    t = L.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=logger, val_check_interval=2 * accumulate,
                  check_val_every_n_epoch=None, accumulate_grad_batches=accumulate, log_every_n_steps=1,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                  default_root_dir=tmp_path, callbacks=[ModelCheckpoint(  # as the CLI keeps them: newest by step
                      tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, monitor="step", mode="max")])
    t.fit(module, dm)
    steps, values = load_scalars(tmp_path / "run", "val/ppl")
    assert steps.tolist() == [2, 4] and t.global_step == 4  # Lightning's default would say 1, 3
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == [f"epoch=0-step={k}.ckpt" for k in (1, 2, 3, 4)]  # checkpoints still named by the step taken
    assert speedup((steps, values), (steps, values)) == pytest.approx(1.0)
