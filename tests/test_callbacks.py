"""Ablation callbacks: re-init changes exactly the chosen tensors once (never on resume); freeze keeps them fixed."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from litgpt.model import GPT

from nca.lit_modules.callbacks import FreezeParameters, ReinitializeParameters, reinitialize
from nca.lit_modules.causal_lm import init_std
from nca.lit_modules.transfer import select_parameters
from tests.helpers.models import tiny_gpt


def random_gpt(seed: int = 0, n_layer: int = 2) -> GPT:
    """Every tensor random (norms too), so any re-initialisation is visible."""
    return tiny_gpt(seed=seed, n_layer=n_layer, intermediate_size=64, randomize=True).train()


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class TinyLM(L.LightningModule):
    def __init__(self, weight_decay: float = 0.1):
        super().__init__()
        self.model = random_gpt(0)
        self.weight_decay = weight_decay

    def training_step(self, batch, batch_idx):
        logits = self.model(batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=self.weight_decay)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randint(0, 64, (64, 17), generator=torch.Generator().manual_seed(0)),
                                           batch_size=4)


class Probe(L.Callback):
    """Records the GPT's state at train start (after earlier callbacks) and after every optimizer step."""

    def __init__(self):
        self.start = None
        self.after_step = {}

    def on_train_start(self, trainer, pl_module):
        self.start = snapshot(pl_module.model)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_step[trainer.global_step] = snapshot(pl_module.model)


def trainer(tmp_path, max_steps, callbacks, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=callbacks, **kwargs,
    )


@pytest.mark.parametrize(
    "parts, layers",
    [(["attention"], None), (["mlp"], [-1]), (["norms"], [0]), (["final_norm"], None), (["embeddings"], None),
     (["attention", "mlp"], [1])],
)
def test_reinit_changes_exactly_the_selected_tensors(parts, layers):
    model = random_gpt()
    before = snapshot(model)
    names = reinitialize(model, parts, layers, seed=3)
    assert names == select_parameters(model, parts, layers) and names
    for name, value in model.state_dict().items():
        if name in names:
            assert not torch.equal(value, before[name]), f"{name} should be re-initialised"
        else:
            assert torch.equal(value, before[name]), f"{name} must stay bit-identical"


def test_reinit_follows_the_pretraining_scheme():
    model = random_gpt(n_layer=2)
    reinitialize(model, ["attention", "mlp", "norms", "final_norm", "embeddings"])
    for norm in (model.transformer.h[0].norm_1, model.transformer.h[1].norm_2, model.transformer.ln_f):
        assert torch.equal(norm.weight, torch.ones(32))
    base, proj = math.sqrt(2 / 5 / 32), 1 / math.sqrt(32) / 2
    for tensor, std in [(model.transformer.h[0].attn.qkv.weight, base), (model.transformer.wte.weight, base),
                        (model.transformer.h[1].mlp.proj.weight, proj), (model.transformer.h[0].attn.proj.weight, proj)]:
        assert tensor.std().item() == pytest.approx(std, rel=0.15)


def test_init_scheme_is_litgpts_pretraining_init():
    """``init_std`` (used by CausalLM and the re-init callback) must match litgpt.pretrain.initialize_weights."""
    from types import SimpleNamespace

    from litgpt.pretrain import initialize_weights

    from nca.lit_modules.model import init_weights_

    ours, theirs = random_gpt(), random_gpt()
    init_weights_(ours)
    initialize_weights(SimpleNamespace(strategy=None), theirs, theirs.config.n_layer, theirs.config.n_embd)
    checked = 0
    for (name, a), (_, b) in zip(ours.named_modules(), theirs.named_modules()):
        if isinstance(a, (torch.nn.Linear, torch.nn.Embedding)):
            assert a.reset_parameters.keywords["std"] == pytest.approx(b.reset_parameters.keywords["std"]), name
            assert init_std(f"{name}.weight", ours.config) == pytest.approx(b.reset_parameters.keywords["std"]), name
            checked += 1
    assert checked >= 2 + 4 * ours.config.n_layer


def test_reinit_values_depend_on_seed_only():
    a, b, c = random_gpt(0), random_gpt(1), random_gpt(0)
    reinitialize(a, ["attention"], seed=5)
    reinitialize(b, ["attention"], seed=5)
    reinitialize(c, ["attention"], seed=6)
    assert torch.equal(a.transformer.h[1].attn.qkv.weight, b.transformer.h[1].attn.qkv.weight)
    assert not torch.equal(a.transformer.h[1].attn.qkv.weight, c.transformer.h[1].attn.qkv.weight)


def test_bad_parts_and_layers_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="valid parts are"):
        ReinitializeParameters(parts=["ffn"])
    with pytest.raises(ValueError, match="parts is empty"):
        FreezeParameters(parts=[])
    with pytest.raises(ValueError, match="steps must be a positive"):
        FreezeParameters(parts=["mlp"], steps=0)
    with pytest.raises(ValueError, match="layer 5 is out of range for a model with 2 layers"):
        trainer(tmp_path, 1, [ReinitializeParameters(layers=[5])]).fit(TinyLM())


def test_reinit_callback_runs_at_train_start_and_logs(tmp_path, caplog):
    module = TinyLM()
    expected = copy.deepcopy(module.model)
    reinitialize(expected, ["attention"], [0], seed=7)
    probe = Probe()
    with caplog.at_level("INFO"):
        trainer(tmp_path, 1, [ReinitializeParameters(["attention"], layers=[0], seed=7), probe],
                enable_checkpointing=False).fit(module)
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in probe.start.items())
    assert "re-initialised 2 tensors (4.1 K params): blocks 0 [attn.qkv.weight, attn.proj.weight]" in caplog.text


def test_reinit_is_not_applied_again_on_resume(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=2)
    callback = ReinitializeParameters(["mlp"], seed=1)
    trainer(tmp_path, 2, [callback, checkpoint]).fit(TinyLM())
    assert callback.applied
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["callbacks"][callback.state_key] == {"applied": True}

    probe = Probe()
    resumed = ReinitializeParameters(["mlp"], seed=1)
    trainer(tmp_path, 3, [resumed, probe]).fit(TinyLM(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    trained = {k.removeprefix("model."): v for k, v in saved["state_dict"].items()}
    assert all(torch.equal(v, trained[k]) for k, v in probe.start.items())
    assert resumed.applied


def test_reinit_state_flag_alone_prevents_reapplying(tmp_path):
    callback = ReinitializeParameters(["attention"])
    callback.load_state_dict({"applied": True})
    module, probe = TinyLM(), Probe()
    before = snapshot(module.model)
    trainer(tmp_path, 1, [callback, probe], enable_checkpointing=False).fit(module)
    assert all(torch.equal(v, before[k]) for k, v in probe.start.items())


def test_two_reinit_callbacks_keep_separate_state():
    a, b = ReinitializeParameters(["attention"]), ReinitializeParameters(["mlp"])
    assert a.state_key != b.state_key


def test_freeze_keeps_parameters_fixed_under_adamw_weight_decay(tmp_path):
    module, probe = TinyLM(weight_decay=0.5), Probe()
    start = snapshot(module.model)
    trainer(tmp_path, 3, [FreezeParameters(["attention"], layers=[1]), probe], enable_checkpointing=False).fit(module)
    frozen = set(select_parameters(module.model, ["attention"], [1]))
    final = probe.after_step[3]
    for name, value in final.items():
        if name in frozen:
            assert torch.equal(value, start[name]), f"{name} moved while frozen"
        else:
            assert not torch.equal(value, start[name]), f"{name} should train"


def test_freeze_for_some_steps_then_train(tmp_path):
    module, probe = TinyLM(), Probe()
    start = snapshot(module.model)
    trainer(tmp_path, 4, [FreezeParameters(["mlp", "norms"], steps=2), probe], enable_checkpointing=False).fit(module)
    names = select_parameters(module.model, ["mlp", "norms"])
    for step in (1, 2):
        assert all(torch.equal(probe.after_step[step][n], start[n]) for n in names), f"moved by step {step}"
    for step in (3, 4):
        assert all(not torch.equal(probe.after_step[step][n], start[n]) for n in names), f"frozen at step {step}"


@pytest.mark.cuda
def test_reinit_and_freeze_under_one_process_fsdp(tmp_path):
    """FSDP1 (Lightning FSDPStrategy, blocks auto-wrapped): re-init reaches the shards; frozen shards stay put."""
    from lightning.pytorch.strategies import FSDPStrategy
    from litgpt.model import Block
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    class FullProbe(L.Callback):
        def __init__(self):
            self.states = {}

        def _grab(self, trainer, pl_module, key):
            with FSDP.summon_full_params(trainer.model, writeback=False):
                self.states[key] = {k.replace("_fsdp_wrapped_module.", ""): v.detach().cpu().clone()
                                    for k, v in pl_module.model.state_dict().items()}

        def on_train_start(self, trainer, pl_module):
            self._grab(trainer, pl_module, "start")

        def on_train_end(self, trainer, pl_module):
            self._grab(trainer, pl_module, "end")

    module, probe = TinyLM(), FullProbe()
    expected = copy.deepcopy(module.model)
    reinitialize(expected, ["attention"], seed=2)
    fit = L.Trainer(
        max_steps=2, accelerator="cuda", devices=1, strategy=FSDPStrategy(auto_wrap_policy={Block}), logger=False,
        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
        callbacks=[ReinitializeParameters(["attention"], seed=2), FreezeParameters(["attention"]), probe],
    )
    fit.fit(module)
    attention = set(select_parameters(expected, ["attention"]))
    for name, value in probe.states["start"].items():
        assert torch.equal(value, expected.state_dict()[name].cpu()), name
    for name in attention:
        assert torch.equal(probe.states["end"][name], probe.states["start"][name]), name
