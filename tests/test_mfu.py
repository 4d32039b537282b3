"""MFU where people look: the arithmetic, the dense peak table (devices Lightning does not know or lists sparse),
the progress line and TensorBoard's train/mfu, on CPU with a faked device or peak."""

from __future__ import annotations

import io
import re

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.loggers import CSVLogger

from nca.lit_modules import CausalLM
from nca.lit_modules.mfu import mfu, peak_flops, table_peak
from nca.lit_modules.progress import ProgressLine
from tests.helpers.data import PatternDataModule
from tests.helpers.models import TINY, trainer


def test_mfu_is_model_flops_per_second_over_the_peak():
    assert mfu(1000.0, 6e9, 1e13) == pytest.approx(0.6)
    assert mfu(40_000.0, 6 * 1.6e9, 989.4e12) == pytest.approx(0.388, abs=1e-3)  # 1.6B at 40k tokens/s on an H100


@pytest.mark.parametrize("name, dtype, peak", [
    ("NVIDIA H200", torch.bfloat16, 989.4e12),
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.4e12),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312e12),
    ("NVIDIA A100-SXM4-80GB", torch.float16, 312e12),
    ("NVIDIA H100 PCIe", torch.bfloat16, None),  # slower variant: left to Lightning's table
    ("Tesla T4", torch.bfloat16, None),
])
def test_dense_peak_table(name, dtype, peak):
    assert table_peak(name, dtype) == peak


def test_peak_on_a_faked_h200_where_lightning_knows_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    cuda = torch.device("cuda")
    assert get_available_flops(cuda, torch.bfloat16) is None  # why the table exists
    assert peak_flops(cuda, torch.bfloat16) == 989.4e12
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert peak_flops(cuda, torch.float32) == 494.7e12  # float32 matmuls on tensor cores (TF32)
    assert peak_flops(torch.device("cpu"), torch.float32) is None


def test_progress_line_shows_mfu_against_a_given_peak_and_states_flops_per_token(tmp_path):
    out = io.StringIO()
    module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    trainer(tmp_path, 4, callbacks=[ProgressLine(every_n_steps=2, stream=out, peak_flops=1e9)]).fit(
        module, PatternDataModule())
    stated, *lines = out.getvalue().splitlines()
    per_token = module.flops_per_batch / (8 * 32)  # PatternDataModule: batches of 8 x 32 tokens
    assert stated.startswith(f"MFU = tokens/s per device x {per_token:.4g} model FLOPs per token (forward + backward")
    assert "activation recompute excluded" in stated and "/ 1e+09 FLOP/s peak (cpu, float32, dense)" in stated
    assert [line.split(" | ")[0] for line in lines] == ["step 2/4", "step 4/4"]
    for line in lines:
        rate, shown = re.search(r"\| ([\d,]+) tok/s \| MFU ([\d.]+)% \| ETA", line).groups()
        assert float(shown) == pytest.approx(100 * mfu(float(rate.replace(",", "")), per_token, 1e9), abs=0.06)


def test_progress_line_without_a_known_peak_shows_no_mfu(tmp_path):
    out = io.StringIO()
    module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    trainer(tmp_path, 2, callbacks=[ProgressLine(every_n_steps=2, stream=out)]).fit(module, PatternDataModule())
    assert "MFU" not in out.getvalue() and "tok/s" in out.getvalue()


def test_tensorboard_mfu_uses_the_peak_table(tmp_path, monkeypatch):
    monkeypatch.setattr("nca.lit_modules.tb_logging.run_peak", lambda trainer, override=None: 1e9)  # a faked device's peak
    module = CausalLM(config=TINY, vocab_size=16, lr=3e-3, warmup_steps=1)
    t = L.Trainer(accelerator="cpu", max_steps=6, logger=CSVLogger(tmp_path, name="csv"), log_every_n_steps=1,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=tmp_path)
    t.fit(module, PatternDataModule())
    header, *rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    values = [dict(zip(columns, row.split(","))) for row in rows]
    logged = [(float(v["train/mfu"]), float(v["train/flops_per_sec"])) for v in values if v.get("train/mfu")]
    assert logged and all(m == pytest.approx(f / 1e9) for m, f in logged)
