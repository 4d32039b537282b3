"""CausalLM: a Llama-style untied litgpt GPT, learns, resumes exactly, and rejects a too-small vocabulary."""

from __future__ import annotations

import importlib.util
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from litgpt.model import GPT, LLaMAMLP, RMSNorm

from nca.lit_modules import CausalLM
from nca.lit_modules.causal_lm import build_config, lr_factor
from tests.helpers.data import PatternDataModule
from tests.helpers.models import RecordLosses, TINY, trainer


def test_model_is_llama_style_and_untied():
    module = CausalLM(config=TINY, vocab_size=18)
    module.configure_model()
    model = module.model
    assert isinstance(model, GPT)
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    block = model.transformer.h[0]
    assert isinstance(block.norm_1, RMSNorm) and isinstance(model.transformer.ln_f, RMSNorm)
    assert isinstance(block.mlp, LLaMAMLP) and block.mlp.fc_1.out_features == 4 * 32
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    c = model.config
    assert (c.rotary_percentage, c.rope_base, c.n_query_groups, c.parallel_residual) == (1.0, 10000, 4, False)
    assert c.vocab_size == 18 and c.padded_vocab_size == 64  # data's vocab, padded to padding_multiple
    # litgpt's pre-training init: residual projections are scaled down by depth
    assert block.attn.proj.weight.std() < block.attn.qkv.weight.std()


def test_configure_model_is_idempotent():
    module = CausalLM(config=TINY, vocab_size=18)
    module.configure_model()
    first = module.model
    module.configure_model()
    assert module.model is first


def test_too_small_vocabulary_fails_with_both_numbers():
    with pytest.raises(ValueError, match=r"(?s)vocabulary of 100 rows.*vocab_size 10002.*Remove"):
        CausalLM(config={**TINY, "padded_vocab_size": 100}, vocab_size=10002)
    # a large enough explicit size is kept (the reference's 64,000-row NCA embedding)
    assert build_config({**TINY, "padded_vocab_size": 64000}, 10002).padded_vocab_size == 64000


def test_missing_vocabulary_fails_clearly():
    with pytest.raises(ValueError, match="vocab_size"):
        CausalLM(config=TINY)


def test_lr_schedule_warmup_then_cosine_to_floor():
    f = partial_lr = [lr_factor(s, warmup=10, total=110, min_ratio=0.1) for s in range(0, 130)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(partial_lr[10:], partial_lr[11:]))
    assert f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1) and f[129] == pytest.approx(0.1)


def test_loss_falls_and_logs(tmp_path):
    L.seed_everything(0)
    dm = PatternDataModule(train_batches=30)
    module = CausalLM(config=TINY, vocab_size=dm.vocab_size, lr=3e-3, warmup_steps=2)
    rec = RecordLosses()
    t = trainer(tmp_path, max_steps=30, callbacks=[rec], log_every_n_steps=1)
    t.fit(module, dm)
    losses = list(rec.losses.values())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    m = t.callback_metrics
    assert {"train/loss", "train/lr", "train/tokens_seen", "train/grad_norm"} <= set(m)
    assert int(m["train/tokens_seen"]) == 30 * 8 * 32
    assert float(m["train/grad_norm"]) > 0
    t.validate(module, dm)
    assert math.isclose(float(t.callback_metrics["val/ppl"]), math.exp(float(t.callback_metrics["val/loss"])),
                        rel_tol=1e-5)
    assert module.flops_per_batch and module.flops_per_batch > 0


class Crash(Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, *_):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def test_resume_gives_same_losses_as_uninterrupted(tmp_path):
    def run(ckpt_dir, callbacks, ckpt_path=None):
        L.seed_everything(1)
        dm = PatternDataModule(train_batches=6)  # 6 batches / epoch: the checkpoint at step 4 is mid-epoch
        module = CausalLM(config=TINY, vocab_size=dm.vocab_size, lr=2e-3, warmup_steps=2, min_lr=1e-4)
        rec = RecordLosses()
        ckpt = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_last=True, save_top_k=-1)
        t = trainer(tmp_path, max_steps=10, callbacks=[rec, ckpt, *callbacks], enable_checkpointing=True)
        t.fit(module, dm, ckpt_path=ckpt_path)
        return rec.losses, module

    full, _ = run(tmp_path / "full", [])
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "crashed", [Crash(at_step=6)])
    resumed, module = run(tmp_path / "crashed", [], ckpt_path="last")
    assert sorted(resumed) == list(range(5, 11))
    assert [resumed[s] for s in range(5, 11)] == pytest.approx([full[s] for s in range(5, 11)], rel=1e-6)
    assert int(module._tokens_seen) == 10 * 8 * 32


def test_bnb_optimizer_missing_gives_install_hint(tmp_path):
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    dm = PatternDataModule()
    module = CausalLM(config=TINY, vocab_size=dm.vocab_size, optimizer="bitsandbytes.optim.AdamW8bit")
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[bnb\]\""):
        trainer(tmp_path, max_steps=1).fit(module, dm)


def test_optimizer_is_a_class_path_with_init_args(tmp_path):
    module = CausalLM(config=TINY, vocab_size=18, lr=0.01, weight_decay=0.1,
                      optimizer={"class_path": "torch.optim.SGD", "init_args": {"momentum": 0.5}})
    module.configure_model()
    module.trainer = trainer(tmp_path, max_steps=5)
    opt = module.configure_optimizers()["optimizer"]
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.5 and opt.defaults["lr"] == 0.01
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    with pytest.raises(ValueError, match="class path"):
        CausalLM(config=TINY, vocab_size=18, optimizer={"init_args": {}})


def test_weight_decay_spares_norms(tmp_path):
    module = CausalLM(config=TINY, vocab_size=18, weight_decay=0.1)
    module.configure_model()
    t = trainer(tmp_path, max_steps=5)
    module.trainer = t
    opt = module.configure_optimizers()["optimizer"]
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in plain["params"]) and all(p.ndim == 2 for p in decayed["params"])
