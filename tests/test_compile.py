"""model.compile: torch.compile of each block in place. The wiring (Lightning fit, init_from, the re-init and freeze
callbacks, checkpoints and resume, FSDP with activation checkpointing) is checked with the ``aot_eager`` backend,
which traces forward and backward through dynamo and AOTAutograd like inductor but generates no code (seconds,
not a C++ build); one slow test runs inductor itself, and a cuda test runs Lightning's FSDPStrategy."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from litgpt.model import Block

from nca.lit_modules import CausalLM
from nca.lit_modules.callbacks import FreezeParameters, ReinitializeParameters
from nca.lit_modules.model import compile_blocks_, compile_mode
from tests.helpers.data import PatternDataModule
from tests.helpers.models import RecordLosses, StartProbe, TINY, StopAtStep, gpt_weights, tiny_gpt, trainer

INDUCTOR_TOLERANCE = 1e-4  # |loss difference| over 20 steps (measured: 2.4e-7 on this machine's CPU, float32)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_compile_setting_per_device_and_unknown_values_fail_early(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_mode("auto", cpu) is None and compile_mode(False, cpu) is None
    assert compile_mode(True, cpu) == "default" and compile_mode("max-autotune", cpu) == "max-autotune"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert compile_mode("auto", cuda) == "default"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 1))  # no Triton before 7.0
    assert compile_mode("auto", cuda) is None
    with pytest.raises(ValueError, match=r"Unknown model.compile 'fast'.*auto.*max-autotune"):
        CausalLM(config=TINY, vocab_size=16, compile="fast")
    module = CausalLM(config=TINY, vocab_size=16)  # auto, outside a Trainer: CPU, eager
    module.configure_model()
    assert module.model.transformer.h[0]._compiled_call_impl is None


def fit(tmp_path, name, steps, compile, callbacks=(), ckpt_path=None, **module_kw):
    L.seed_everything(0)
    module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1, compile=compile,
                      compile_backend="aot_eager", **module_kw)
    rec, probe = RecordLosses(), StartProbe()
    ckpt = ModelCheckpoint(dirpath=tmp_path / name, filename="{step}", every_n_train_steps=2, save_last=True,
                           save_top_k=-1)
    t = trainer(tmp_path, steps, callbacks=[rec, probe, ckpt, *callbacks], enable_checkpointing=True)
    t.fit(module, PatternDataModule(), ckpt_path=ckpt_path)
    return rec.losses, probe.start, module


def test_compiled_fit_with_init_from_reinit_and_freeze_matches_eager_and_keeps_keys(tmp_path):
    fit(tmp_path, "stage1", 2, compile=False)
    stage1 = str(tmp_path / "stage1" / "last.ckpt")

    def callbacks():
        return [ReinitializeParameters(parts=["attention"], layers=[0], seed=3),
                FreezeParameters(parts=["mlp"], layers=[1], steps=2)]

    eager = fit(tmp_path, "eager", 4, False, callbacks(), init_from=stage1, reinit_embeddings=False)
    compiled = fit(tmp_path, "compiled", 4, True, callbacks(), init_from=stage1, reinit_embeddings=False)
    assert compiled[2].model.transformer.h[0]._compiled_call_impl is not None and graphs() >= 1
    assert all(torch.equal(compiled[1][k], eager[1][k]) for k in eager[1])  # init_from + re-init, then step 1
    assert compiled[0] == pytest.approx(eager[0], abs=1e-6)
    saved = torch.load(tmp_path / "compiled" / "last.ckpt", weights_only=False)["state_dict"]
    assert list(saved) == list(torch.load(tmp_path / "eager" / "last.ckpt", weights_only=False)["state_dict"])
    assert not [k for k in saved if "_orig_mod" in k]
    frozen = "transformer.h.1.mlp.fc_1.weight"
    after_2 = gpt_weights(tmp_path / "compiled" / "step=2.ckpt")[frozen]
    assert torch.equal(after_2, compiled[1][frozen])  # the freeze held for steps 0-1 through the compiled blocks


def test_compiled_run_resumes_with_the_same_losses(tmp_path):
    full = fit(tmp_path, "full", 6, True)[0]
    fit(tmp_path, "cut", 6, True, [StopAtStep(4)])
    resumed = fit(tmp_path, "cut", 6, True, ckpt_path=str(tmp_path / "cut" / "last.ckpt"))[0]
    assert sorted(resumed) == [5, 6]
    assert [resumed[s] for s in (5, 6)] == pytest.approx([full[s] for s in (5, 6)], abs=1e-6)


def test_compiled_blocks_inside_fsdp_and_activation_checkpointing_give_eager_gradients():
    """What Lightning's FSDPStrategy builds around the blocks (FSDP1 units per Block, non-reentrant checkpoint
    wrappers), on one CPU process over gloo: same loss and gradients, plain state-dict keys."""
    import torch.distributed as dist
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    eager, model = tiny_gpt(64).train(), tiny_gpt(64).train()
    compile_blocks_(model, backend="aot_eager")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        wrapped = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True,
                       device_id=torch.device("cpu"))
        apply_activation_checkpointing(wrapped, check_fn=lambda m: isinstance(m, Block), checkpoint_wrapper_fn=partial(
            checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT))
        x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
        losses = []
        for net in (eager, wrapped):
            loss = F.cross_entropy(net(x).flatten(0, 1), x.flatten())
            loss.backward()
            losses.append(float(loss))
        assert graphs() >= 1 and losses[0] == pytest.approx(losses[1], abs=1e-6)
        with FSDP.summon_full_params(wrapped, with_grads=True):
            grads = [p.grad for p in wrapped.parameters()]
            assert all(torch.allclose(a.grad, b, atol=1e-6) for a, b in zip(eager.parameters(), grads))
        assert list(wrapped.state_dict()) == list(eager.state_dict())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_inductor_losses_match_eager_over_20_steps(tmp_path):
    """inductor on CPU (a C++ build): about 20 s with a cold graph cache here, 5 s warm, 76 s on a fresh machine."""
    losses = {}
    for compile in (False, True):
        L.seed_everything(0)
        module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1, compile=compile)
        rec = RecordLosses()
        trainer(tmp_path, 20, callbacks=[rec]).fit(module, PatternDataModule())
        losses[compile] = rec.losses
    assert module.model.transformer.h[0]._compiled_call_impl is not None and len(losses[True]) == 20
    assert max(abs(losses[True][s] - losses[False][s]) for s in losses[False]) <= INDUCTOR_TOLERANCE
    assert losses[True][20] < losses[True][1] - 0.5  # it trained


@pytest.mark.cuda
def test_fsdp_compiled_fit_on_a_gpu_saves_plain_keys_and_resumes(tmp_path):
    """Lightning's FSDPStrategy (blocks wrapped and activation-checkpointed) around compiled blocks, bf16."""
    from lightning.pytorch.strategies import FSDPStrategy

    def run(name, steps, callbacks=(), ckpt_path=None):
        L.seed_everything(0)
        module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)  # compile auto: on, on a GPU
        rec = RecordLosses()
        strategy = FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block},
                                state_dict_type="full")
        t = L.Trainer(accelerator="cuda", devices=1, strategy=strategy, precision="bf16-mixed", max_steps=steps,
                      logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      callbacks=[rec, ModelCheckpoint(dirpath=tmp_path / name, every_n_train_steps=2, save_last=True),
                                 *callbacks])
        t.fit(module, PatternDataModule(), ckpt_path=ckpt_path)
        return rec.losses, module

    full, module = run("full", 6)
    assert module.model.transformer.h[0]._compiled_call_impl is not None
    run("cut", 6, [StopAtStep(4)])
    resumed = run("cut", 6, ckpt_path=str(tmp_path / "cut" / "last.ckpt"))[0]
    assert [resumed[s] for s in (5, 6)] == pytest.approx([full[s] for s in (5, 6)], abs=1e-2)
    keys = list(torch.load(tmp_path / "full" / "last.ckpt", weights_only=False)["state_dict"])
    assert "model.transformer.h.0.attn.qkv.weight" in keys and not [k for k in keys if "_orig_mod" in k]
