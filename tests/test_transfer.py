"""Stage transition: every checkpoint format loads, blocks are carried, embeddings stay fresh, bad input fails early."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.distributed.checkpoint as dcp
from litgpt.model import GPT

from nca.lit_modules.checkpoint import read_checkpoint
from nca.lit_modules.transfer import (
    TransferReport,
    load_stage_weights,
    select_parameters,
    summarize_names,
)
from tests.helpers.models import tiny_gpt

EMBEDDINGS = {"transformer.wte.weight", "lm_head.weight"}


def random_gpt(seed: int, vocab: int = 64, **sizes) -> GPT:
    """A GPT whose every tensor (norms included) is random, so carried and fresh values always differ."""
    return tiny_gpt(vocab, seed=seed, intermediate_size=64, padded_vocab_size=vocab, randomize=True, **sizes).train()


class TinyLM(L.LightningModule):
    """Stands in for CausalLM: holds the GPT as ``self.model``."""

    def __init__(self, vocab: int = 64):
        super().__init__()
        self.model = random_gpt(0, vocab=vocab)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randint(0, 64, (8, 17)), batch_size=4)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_transferred(target: GPT, before: dict, source: dict, carried_embeddings: bool = False) -> None:
    for name, value in target.state_dict().items():
        if name in EMBEDDINGS and not carried_embeddings:
            assert torch.equal(value, before[name]), f"{name} should keep the fresh init"
            assert not torch.equal(value, source[name].to(value.dtype))
        else:
            assert torch.equal(value, source[name].to(value.dtype)), f"{name} should be carried"


@pytest.fixture
def stage1_ckpt(tmp_path):
    """A real Lightning checkpoint after one optimizer step of a tiny fit."""
    module = TinyLM()
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(module)
    path = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(path)
    return path, snapshot(module.model)


def test_lightning_checkpoint_carries_blocks_and_keeps_fresh_embeddings(stage1_ckpt):
    path, source = stage1_ckpt
    target = random_gpt(1, vocab=96)  # stage 2 has another vocabulary
    before = snapshot(target)
    report = load_stage_weights(target, path)
    assert_transferred(target, before, {**source, **{k: before[k] + 1 for k in EMBEDDINGS}})
    assert set(report.reinitialised) == EMBEDDINGS
    assert set(report.carried) == set(source) - EMBEDDINGS
    assert report.carried_params == sum(source[n].numel() for n in report.carried)
    assert report.format == "Lightning checkpoint" and not report.missing and not report.unexpected


def test_copy_is_in_place_so_optimizer_references_stay_valid(stage1_ckpt):
    path, source = stage1_ckpt
    target = random_gpt(1)
    optimizer = torch.optim.AdamW(target.parameters())
    load_stage_weights(target, path)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in target.parameters()}
    assert torch.equal(target.transformer.h[0].attn.qkv.weight, source["transformer.h.0.attn.qkv.weight"])


@pytest.mark.parametrize("layout", ["plain", "model_key", "directory"])
def test_litgpt_checkpoints_load(tmp_path, layout):
    source = snapshot(random_gpt(0))
    if layout == "plain":
        path = tmp_path / "lit_model.pth"
        torch.save(source, path)
    elif layout == "model_key":
        path = tmp_path / "lit_model.pth"
        torch.save({"model": source, "iter_num": 3}, path)
    else:
        torch.save(source, tmp_path / "lit_model.pth")
        path = tmp_path
    target = random_gpt(1)
    before = snapshot(target)
    report = load_stage_weights(target, path)
    assert_transferred(target, before, source)
    assert report.format in {"state dict", "litgpt checkpoint"}


def test_sharded_fsdp_directory_loads_without_a_process_group(tmp_path):
    """Lightning's FSDPStrategy(state_dict_type="sharded") layout: DCP of {"model": ..., "optimizer_0": ...} + meta.pt."""
    source = snapshot(random_gpt(0))
    state = {
        "model": {f"model.{k}": v for k, v in source.items()},
        "optimizer_0": {"state": {f"model.{k}": {"exp_avg": torch.zeros_like(v)} for k, v in source.items()}},
    }
    ckpt = tmp_path / "epoch=0-step=1.ckpt"
    dcp.save(state, checkpoint_id=ckpt, no_dist=True)
    torch.save({"global_step": 1}, ckpt / "meta.pt")
    target = random_gpt(1)
    before = snapshot(target)
    report = load_stage_weights(target, ckpt)
    assert_transferred(target, before, source)
    assert report.format.startswith("sharded")


def test_sharded_read_skips_optimizer_state(tmp_path):
    source = snapshot(random_gpt(0))
    state = {"model": {f"model.{k}": v for k, v in source.items()},
             "optimizer_0": {"state": {f"model.{k}": {"exp_avg": v + 1} for k, v in source.items()}}}
    dcp.save(state, checkpoint_id=tmp_path, no_dist=True)
    read, _ = read_checkpoint(tmp_path, source)
    assert set(read) == set(source)
    assert all(torch.equal(read[k], source[k]) for k in source)


def test_no_reinit_variant_copies_embeddings(stage1_ckpt):
    path, source = stage1_ckpt
    target = random_gpt(1)  # same vocabulary as stage 1
    report = load_stage_weights(target, path, reinit_embeddings=False)
    assert_transferred(target, snapshot(target), source, carried_embeddings=True)
    assert report.reinitialised == [] and set(report.carried) == set(source)


def test_vocab_mismatch_without_reinit_fails_before_modifying(stage1_ckpt):
    path, _ = stage1_ckpt
    target = random_gpt(1, vocab=96)
    before = snapshot(target)
    with pytest.raises(ValueError, match="vocabulary mismatch") as err:
        load_stage_weights(target, path, reinit_embeddings=False)
    message = str(err.value)
    assert "(64, 32)" in message and "(96, 32)" in message and "reinit_embeddings" in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_other_model_size_fails_before_modifying(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(snapshot(random_gpt(0, n_embd=48)), path)
    target = random_gpt(1)
    before = snapshot(target)
    with pytest.raises(ValueError, match="shape mismatch") as err:
        load_stage_weights(target, path)
    message = str(err.value)
    assert "transformer.h.0.norm_1.weight" in message and "(48,)" in message and "(32,)" in message
    assert "model size" in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_other_layer_count_lists_keys_or_carries_matching_when_not_strict(tmp_path):
    path = tmp_path / "deep.pth"
    source = snapshot(random_gpt(0, n_layer=3))
    torch.save(source, path)
    target = random_gpt(1)
    before = snapshot(target)
    with pytest.raises(ValueError, match=r"not in the model \(7\): blocks 2 \[norm_1.weight") as err:
        load_stage_weights(target, path)
    assert "n_layer" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())

    report = load_stage_weights(target, path, strict=False)
    assert_transferred(target, before, source)
    assert report.unexpected and all(n.startswith("transformer.h.2.") for n in report.unexpected)
    assert "not the model" in str(report)


def test_missing_tensors_are_reported_and_kept_fresh_when_not_strict(tmp_path):
    source = snapshot(random_gpt(0))
    del source["transformer.ln_f.weight"]
    path = tmp_path / "partial.pth"
    torch.save(source, path)
    target = random_gpt(1)
    before = snapshot(target)
    with pytest.raises(ValueError, match="missing from the checkpoint"):
        load_stage_weights(target, path)
    report = load_stage_weights(target, path, strict=False)
    assert report.missing == ["transformer.ln_f.weight"]
    assert torch.equal(target.transformer.ln_f.weight, before["transformer.ln_f.weight"])
    assert "kept fresh: transformer.ln_f.weight" in str(report)


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "runs" / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_stage_weights(random_gpt(0), missing)


def test_files_without_gpt_weights_fail_clearly(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="no litgpt GPT weights.*encoder.weight"):
        load_stage_weights(random_gpt(0), path)
    with pytest.raises(ValueError, match="neither a sharded checkpoint"):
        load_stage_weights(random_gpt(0), tmp_path)


def test_bf16_checkpoint_is_cast_into_the_model_dtype(tmp_path):
    source = {k: v.bfloat16() for k, v in snapshot(random_gpt(0)).items()}
    path = tmp_path / "bf16.pth"
    torch.save(source, path)
    target = random_gpt(1)
    load_stage_weights(target, path)
    assert target.transformer.h[1].mlp.proj.weight.dtype == torch.float32
    assert torch.equal(target.transformer.h[1].mlp.proj.weight, source["transformer.h.1.mlp.proj.weight"].float())


def test_torch_compiled_lightning_keys_are_understood(tmp_path):
    source = snapshot(random_gpt(0))
    path = tmp_path / "compiled.ckpt"
    torch.save({"state_dict": {f"model._orig_mod.{k}": v for k, v in source.items()}, "epoch": 0}, path)
    target = random_gpt(1)
    before = snapshot(target)
    load_stage_weights(target, path)
    assert_transferred(target, before, source)


def test_report_reads_well():
    report = TransferReport(
        source="s1.ckpt", format="Lightning checkpoint",
        carried=[f"transformer.h.{i}.{s}" for i in range(24) for s in ("attn.qkv.weight", "mlp.fc_1.weight")]
        + ["transformer.ln_f.weight"],
        carried_params=1_610_612_736, reinitialised=["transformer.wte.weight", "lm_head.weight"],
        reinitialised_params=205_914_112,
    )
    text = str(report)
    assert text.startswith("carried 49 tensors (1.6 B params) from s1.ckpt")
    assert "blocks 0-23 [attn.qkv.weight, mlp.fc_1.weight], transformer.ln_f.weight" in text
    assert text.endswith("re-initialised: transformer.wte.weight, lm_head.weight (205 M params)")


def test_name_helpers():
    assert summarize_names(["transformer.h.0.a", "transformer.h.2.a", "transformer.h.3.a"]) == "blocks 0,2-3 [a]"
    assert summarize_names([]) == "nothing"


def test_select_parameters_parts_and_layers():
    model = random_gpt(0, n_layer=3)
    attn_last = select_parameters(model, ["attention"], layers=[-1])
    assert attn_last == ["transformer.h.2.attn.qkv.weight", "transformer.h.2.attn.proj.weight"]
    norms = select_parameters(model, ["norms", "final_norm"], layers=[0])
    assert norms == ["transformer.h.0.norm_1.weight", "transformer.h.0.norm_2.weight", "transformer.ln_f.weight"]
    assert select_parameters(model, "embeddings") == ["lm_head.weight", "transformer.wte.weight"]
    assert len(select_parameters(model, ["mlp"])) == 9
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['attn'\].*'attention'"):
        select_parameters(model, ["attn"])
    with pytest.raises(ValueError, match="layer 3 is out of range for a model with 3 layers"):
        select_parameters(model, ["mlp"], layers=[3])
    with pytest.raises(ValueError, match="layer -4 is out of range"):
        select_parameters(model, ["mlp"], layers=[-4])


@pytest.mark.cuda
def test_transfer_under_one_process_fsdp(stage1_ckpt, tmp_path):
    """Lightning FSDPStrategy (FSDP1, blocks auto-wrapped): the root must be given and values land in the shards."""
    from lightning.pytorch.strategies import FSDPStrategy
    from litgpt.model import Block
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    path, source = stage1_ckpt
    seen = {}

    class Stage2(TinyLM):
        def on_fit_start(self):
            with pytest.raises(RuntimeError, match="fsdp_root"):
                load_stage_weights(self.model, path)  # the root owns wte / ln_f / lm_head
            seen["report"] = load_stage_weights(self.model, path, fsdp_root=self.trainer.model)
            with FSDP.summon_full_params(self.trainer.model, writeback=False):
                seen["state"] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    module = Stage2(vocab=96)
    fresh = snapshot(module.model)
    trainer = L.Trainer(
        max_steps=1, accelerator="cuda", devices=1, strategy=FSDPStrategy(auto_wrap_policy={Block}),
        logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
    )
    trainer.fit(module)
    state = {k.replace("_fsdp_wrapped_module.", ""): v for k, v in seen["state"].items()}
    for name, value in state.items():
        expected = fresh[name] if name in EMBEDDINGS else source[name]
        assert torch.equal(value, expected), name
    assert set(seen["report"].reinitialised) == EMBEDDINGS



class TinyTextData(L.LightningDataModule):
    """A DataModule with saved settings, as the text DataModule has (its tokenizer spec travels in checkpoints)."""

    def __init__(self, tokenizer: str = "toy-tokenizer", vocab_size: int = 40):
        super().__init__()
        self.save_hyperparameters()
        self.vocab_size = vocab_size

    def train_dataloader(self):
        rows = torch.randint(0, self.vocab_size, (4, 9))
        return torch.utils.data.DataLoader([{"input_ids": r[:-1], "labels": r[1:]} for r in rows], batch_size=4)


def test_load_model_rebuilds_the_trained_gpt_with_its_data_settings(tmp_path):
    from nca.lit_modules.causal_lm import CausalLM
    from nca.lit_modules.checkpoint import load_model

    module = CausalLM(config=dict(n_layer=1, n_embd=32, n_head=4, block_size=16), vocab_size=40, warmup_steps=1)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=TinyTextData())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = load_model(tmp_path / "m.ckpt")
    x = torch.randint(0, 40, (1, 8))
    assert torch.equal(loaded.model(x), module.model.eval()(x))
    assert loaded.data["class_path"].endswith("TinyTextData") and loaded.tokenizer_spec == "toy-tokenizer"
    assert loaded.format == "Lightning checkpoint" and loaded.hparams["vocab_size"] == 40
