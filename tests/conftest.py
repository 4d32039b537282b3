"""Fixtures and helpers shared by the test files (tests never import each other): tiny tokenizers, toy
DataModules and configs, CLI runners, small corpora."""

import contextlib
import copy
import functools
import io
import json
import logging
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from datamodules.tokenizers import _byte_decoder
from lit_modules.causal_lm import CausalLM
from nca.cli.train import NCACLI, TRAINER_DEFAULTS

# Lightning stops its logger propagating when it is imported before logging has a handler, as it is here
# (at collection); caplog reads messages through the root logger.
logging.getLogger("lightning.pytorch").propagate = True

TO_CHAR = {b: c for c, b in _byte_decoder().items()}  # byte -> GPT-2's printable character


def pytest_collection_modifyitems(config, items):
    """Skip `cuda`-marked tests where no GPU exists; they run unchanged where one does."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the tests' tiny models and generators run faster without OpenMP hand-offs,
    and much faster when the 2 CI cores are shared with DataLoader workers or other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_bpe(directory: Path, merges: list[tuple[str, str]], names=("encoder.json", "vocab.bpe")) -> Path:
    """A tiny GPT-2-format vocabulary: 256 byte tokens in tiktoken's order, the merges, then <|endoftext|>."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder = {c: i for i, c in enumerate(_byte_decoder())}
    for a, b in merges:
        encoder[a + b] = len(encoder)
    encoder["<|endoftext|>"] = len(encoder)
    (directory / names[0]).write_text(json.dumps(encoder))
    (directory / names[1]).write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return directory


# ---- shared by several test files (first written for test_causal_lm.py)


TINY = dict(n_layer=2, n_embd=32, n_head=4, block_size=32)


def pattern_rows(n: int, seq_len: int, vocab_size: int, seed: int) -> torch.Tensor:
    """Arithmetic sequences x_t = (a + k t) mod V, k in {1, 2, 3}: predictable after two tokens."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, vocab_size, (n, 1), generator=g)
    k = torch.randint(1, 4, (n, 1), generator=g)
    return (a + k * torch.arange(seq_len + 1)) % vocab_size


def to_batch(rows: torch.Tensor) -> dict[str, torch.Tensor]:
    labels = rows[:, 1:].clone()
    labels[:, 0] = -100  # the first target is a guess; exercises ignore_index
    return {"input_ids": rows[:, :-1].contiguous(), "labels": labels}


class StepBatches:
    """Batch ``i`` of an epoch is a pure function of (seed, i); resumable through state_dict/load_state_dict.

    Lightning fetches one batch ahead, so the position saved is the number of batches *consumed*
    (``consumed`` is advanced by the module hook below, not by ``__next__``).
    """

    def __init__(self, rows: torch.Tensor, batch_size: int):
        self.rows, self.batch_size = rows, batch_size
        self.start = 0
        self.consumed = 0

    def __len__(self) -> int:
        return len(self.rows) // self.batch_size

    def __iter__(self):
        start, self.start = self.start, 0
        self.consumed = start
        for i in range(start, len(self)):
            yield to_batch(self.rows[i * self.batch_size:(i + 1) * self.batch_size])

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.start = state["consumed"] % len(self)


class PatternDataModule(L.LightningDataModule):
    """Deterministic toy data obeying the batch contract; exposes ``vocab_size`` like every DataModule."""

    def __init__(self, vocab_size: int = 16, seq_len: int = 32, batch_size: int = 8, train_batches: int = 8,
                 val_batches: int = 2, seed: int = 0):
        super().__init__()
        self.vocab_size, self.batch_size = vocab_size, batch_size
        self.train_rows = pattern_rows(train_batches * batch_size, seq_len, vocab_size, seed)
        self.val_rows = pattern_rows(val_batches * batch_size, seq_len, vocab_size, seed + 1)
        self.train_loader = StepBatches(self.train_rows, batch_size)

    def train_dataloader(self):
        return self.train_loader

    def val_dataloader(self):
        return StepBatches(self.val_rows, self.batch_size)

    test_dataloader = val_dataloader

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.trainer is not None and self.trainer.training:
            self.train_loader.consumed += 1
        return batch


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


# ---- shared by several test files (first written for test_cli.py)


PATTERN = f"{PatternDataModule.__module__}.{PatternDataModule.__name__}"  # importable the way pytest imported it


def write(path: Path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def toy_config(tmp_path: Path, **extra) -> str:
    """A complete fit config on the toy DataModule, logging and checkpointing under tmp_path."""
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": 4,
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "log_every_n_steps": 1, "limit_val_batches": 1,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "runs"), "name": "toy"}},
        },
        "checkpoint": {"every_n_train_steps": 2},
        "model": {"config": dict(TINY), "lr": 3e-3, "warmup_steps": 1},
        "data": {"class_path": PATTERN, "init_args": {"train_batches": 8}},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return write(tmp_path / "toy.yaml", cfg)


# ---- shared by several test files (first written for test_stage3_data.py)


# ------------------------------------------------------------------------------------------- data makers
def write_tokenizer(directory: Path) -> Path:
    """A byte-level GPT-2-style tokenizer (256 byte ids + end-of-text 256, no merges)."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder = {c: i for i, c in enumerate(_byte_decoder())}
    encoder["<|endoftext|>"] = 256
    (directory / "encoder.json").write_text(json.dumps(encoder))
    (directory / "vocab.bpe").write_text("#version: 0.2\n")
    return directory


def gsm8k_record(i: int) -> dict:
    a, b = i + 2, 3 * i + 1
    return {"question": f"Tom has {a} apples and buys {b}. How many?",
            "answer": f"He has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b:,}"}


def write_gsm8k(directory: Path, train: int = 40, test: int = 6) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", range(train)), ("test", range(1000, 1000 + test))):
        with open(directory / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(gsm8k_record(i)) + "\n" for i in rows)
    return directory


def write_task(path: Path, examples: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": path.parent.name, "examples": examples}))


def write_bbl(directory: Path, per_task: int = 40, reverse: bool = False) -> Path:
    """logical_deduction (3- and 5-way subtasks), winowhy (2-way, twice as many examples), operators
    (free-form) and a non-English task; ``reverse`` writes every file's examples in the opposite order."""
    order = (lambda xs: xs[::-1]) if reverse else (lambda xs: xs)

    def mc(i: int, ways: int) -> dict:
        return {"input": f"Puzzle {i} with {ways} options.",
                "target_scores": {f"option {j}": int(j == i % ways) for j in range(ways)}}

    write_task(directory / "logical_deduction" / "task.json", [])  # metadata only, as in BIG-bench
    write_task(directory / "logical_deduction" / "three" / "task.json", order([mc(i, 3) for i in range(per_task // 2)]))
    write_task(directory / "logical_deduction" / "five" / "task.json",
               order([mc(i, 5) for i in range(per_task // 2, per_task)]))
    write_task(directory / "winowhy" / "task.json", order([mc(i, 2) for i in range(2 * per_task)]))
    write_task(directory / "operators" / "task.json",
               order([{"input": f"{i} op 2 =", "target": [str(i + 2), f"{i + 2}.0"]} for i in range(per_task)]))
    write_task(directory / "language_identification" / "task.json",
               [{"input": f"Bonjour {i}", "target_scores": {"French": 1, "German": 0}} for i in range(per_task)])
    return directory


# ---- shared by several test files (first written for test_pipeline.py)


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


TINY_RUN = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
            "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1"]


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


def run_cli(args: list[str], monkeypatch, callbacks: tuple = ()) -> tuple[NCACLI, StartProbe]:
    probe = StartProbe()
    monkeypatch.setattr(sys, "argv", ["nca"])
    cli = NCACLI(args=["fit", *args], trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [probe, *callbacks]})
    return cli, probe


def gpt_weights(checkpoint) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


# ---- shared by several test files (first written for test_export.py)


# Merges of a tiny GPT-2-style byte-level BPE, each forming a token in exactly one way.
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ c", "e l", "Ġc el", "l l", "o r", "Ġ w", "Ġw or", "l d",
          "Ġwor ld"]


EXPORT_TINY = dict(block_size=32, n_layer=2, n_embd=32, n_head=4, n_query_groups=2, head_size=8, intermediate_size=48,
            rope_base=500, norm_eps=1e-6)


def write_bpe_files(directory) -> int:
    """encoder.json + vocab.bpe of a 272-id byte-level BPE (256 bytes, the merges, <|endoftext|>)."""
    byte_to_char = {b: c for c, b in _byte_decoder().items()}
    vocab = {byte_to_char[b]: i for i, b in enumerate(sorted(byte_to_char, key=lambda b: ord(byte_to_char[b])))}
    for pair in MERGES:
        vocab["".join(pair.split())] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    return len(vocab)


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


# ---- shared by several test files (first written for test_configs.py)


ROOT = Path(__file__).resolve().parents[1]


def parse(*config_files: str) -> dict:
    """The resolved config of ``python -m nca fit --config ... --print_config``, in process."""
    return copy.deepcopy(_parse(config_files))


@functools.lru_cache(maxsize=None)  # each composition is parsed once, however many tests read it
def _parse(config_files: tuple[str, ...]) -> dict:
    from nca.cli.train import NCACLI

    args = ["fit"] + [a for name in config_files for a in ("--config", str(ROOT / name))] + ["--print_config"]
    out = io.StringIO()
    argv, sys.argv = sys.argv, ["nca"]  # LightningCLI warns when pytest's own argv is present too
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            NCACLI(args=args)
    finally:
        sys.argv = argv
    assert exit_.value.code in (0, None), f"{config_files} failed to parse"
    return yaml.safe_load(out.getvalue())


# ---- shared by several test files (first written for test_text.py)


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A byte-level tokenizer (256 byte ids + <|endoftext|> = 256), no merges: made here, no shared data."""
    d = tmp_path_factory.mktemp("tok")
    encoder = {c: i for i, c in enumerate(_byte_decoder())}
    encoder["<|endoftext|>"] = 256
    (d / "encoder.json").write_text(json.dumps(encoder))
    (d / "vocab.bpe").write_text("#version: 0.2\n")
    return str(d)


def documents(n, seed=0):
    rng = np.random.default_rng(seed)
    return [f"doc {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))) for i in range(n)]


def write_jsonl(path, docs, field="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({field: d, "meta": 1}) + "\n")
    return path
