"""The one tiny GPT of the tests, small Trainers, callbacks that record a run, and a real Lightning checkpoint."""

import dataclasses

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from litgpt.model import GPT

from nca.lit_modules.causal_lm import CausalLM
from nca.lit_modules.model import ModelConfig, build_config
from tests.helpers.tokenizers import write_bpe_files

TINY = dict(n_layer=2, n_embd=32, n_head=4, block_size=32)
EXPORT_TINY = dict(block_size=32, n_layer=2, n_embd=32, n_head=4, n_query_groups=2, head_size=8, intermediate_size=48,
                   rope_base=500, norm_eps=1e-6)  # every size away from its default, so an export must carry it


def tiny_gpt(vocab_size: int = 64, seed: int = 0, randomize: bool = False, **sizes) -> GPT:
    """The tests' Llama-style GPT (``TINY`` sizes unless overridden, the project's own ``build_config``; other
    ``litgpt.Config`` fields pass through), in eval mode; ``randomize`` draws every tensor from N(0, 1), norms included, so any re-initialisation shows."""
    sizes = {**TINY, **sizes}
    config = build_config({k: v for k, v in sizes.items() if k in ModelConfig.__annotations__}, vocab_size)
    config = dataclasses.replace(config, **{k: v for k, v in sizes.items() if k not in ModelConfig.__annotations__})
    torch.manual_seed(seed)
    model = GPT(config).eval()
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_()
    return model


class RecordLosses(Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def trainer(tmp_path, max_steps, callbacks=(), **kw) -> L.Trainer:
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(
        accelerator="cpu", devices=1, precision="32-true", max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        num_sanity_val_steps=0, callbacks=list(callbacks), **kw,
    )


class StartProbe(Callback):
    """The GPT's weights when training starts: after init_from and after any ablation callback."""

    def __init__(self):
        self.start: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


class StopAtStep(Callback):
    """Ends a run early, as an interruption would (last.ckpt is written at this step)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        trainer.should_stop = trainer.global_step >= self.step


def gpt_weights(checkpoint) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


class TinyText(L.LightningDataModule):
    """Random token rows; records its tokenizer like TextDataModule, so the checkpoint names it."""

    def __init__(self, tokenizer: str, vocab_size: int):
        super().__init__()
        self.save_hyperparameters()
        self.vocab_size = vocab_size

    def train_dataloader(self):
        rows = torch.randint(0, self.vocab_size, (4, 17), generator=torch.Generator().manual_seed(0))
        return torch.utils.data.DataLoader([{"input_ids": r[:-1], "labels": r[1:]} for r in rows], batch_size=2)


def make_lightning_ckpt(tmp_path, tokenizer: str | None = None):
    """A real Lightning checkpoint of CausalLM after one step, every tensor (norms included) randomised."""
    tok_dir = tmp_path / "bpe"
    vocab = write_bpe_files(tok_dir)
    torch.manual_seed(0)
    module = CausalLM(config=EXPORT_TINY, vocab_size=vocab, warmup_steps=1)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=TinyText(tokenizer or str(tok_dir), vocab))
    with torch.no_grad():
        for p in module.model.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.ndim == 1 else 0.0))
    path = tmp_path / "stage2.ckpt"
    trainer.save_checkpoint(path)
    return path, tok_dir
