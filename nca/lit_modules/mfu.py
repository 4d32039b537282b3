"""Model FLOPs utilisation: the model's FLOPs per second over the device's peak, where people look (the progress
line, TensorBoard's ``train/mfu``, the GPU check).

FLOPs per token are the model's own (``measure_model_flops``: forward + backward as torch's FLOP counter sees
the model, so activation-checkpointing recompute is excluded); the peak is the dense (no sparsity) tensor-core
rate of one device in the run's compute dtype. Lightning's table (``get_available_flops``) does not know the
H200 (``NVIDIA H200`` matches none of its names) and lists 2.0e15 for its ``h200 sxm1`` entry, the sparse rate;
``DENSE_PEAKS`` below comes first for the chips it names.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

# Dense peak FLOP/s per GPU from NVIDIA's datasheets (the sparse figures are twice these). "tfloat32" is float32
# matmuls on tensor cores (torch.set_float32_matmul_precision below "highest"). Matched on the lower-cased device
# name; PCIe/NVL H100 variants run slower and are left to Lightning's table.
_HOPPER = {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12, torch.float32: 66.9e12}
DENSE_PEAKS: dict[str, dict[Any, float]] = {
    "h200": _HOPPER,
    "h100": _HOPPER,  # SXM (HBM3)
    "a100": {torch.bfloat16: 312e12, torch.float16: 312e12, "tfloat32": 156e12, torch.float32: 19.5e12},
}


def table_peak(device_name: str, dtype: torch.dtype, tf32: bool = False) -> Optional[float]:
    """The ``DENSE_PEAKS`` entry for a device name and compute dtype, or None when the table has none."""
    name = device_name.lower()
    if "h100" in name and ("pcie" in name or "nvl" in name):
        return None
    for chip, peaks in DENSE_PEAKS.items():
        if chip in name:
            key = "tfloat32" if dtype is torch.float32 and tf32 else dtype
            return peaks.get(key)
    return None


def peak_flops(device: torch.device, dtype: torch.dtype) -> Optional[float]:
    """Peak FLOP/s of one ``device`` in ``dtype``: ``DENSE_PEAKS``, else Lightning's table; None on CPU or an
    unknown device (no MFU is shown then)."""
    if device.type != "cuda":
        return None
    tf32 = torch.get_float32_matmul_precision() != "highest"
    peak = table_peak(torch.cuda.get_device_name(device), dtype, tf32)
    if peak is None:
        from lightning.fabric.utilities.throughput import get_available_flops

        peak = get_available_flops(device, dtype)
    return None if peak is None else float(peak)


def run_peak(trainer: Any, override: Optional[float] = None) -> Optional[float]:
    """The peak a run's MFU divides by: ``override`` when given, else its device's in its compute dtype."""
    if override is not None:
        return override
    from nca.lit_modules import framework

    return peak_flops(trainer.strategy.root_device, framework.compute_dtype(trainer))


def mfu(tokens_per_s_per_device: float, flops_per_token: float, peak: float) -> float:
    """Fraction of the peak the model's own FLOPs reach: tokens/s (one device) x FLOPs/token / peak FLOP/s."""
    return tokens_per_s_per_device * flops_per_token / peak


def flops_per_token(pl_module: Any, batch: Any) -> Optional[float]:
    """The module's FLOPs for ``batch`` (``flops_per_batch``, per device) over its tokens; None when unknown."""
    flops = getattr(pl_module, "flops_per_batch", None)
    if not flops or not isinstance(batch, dict) or "input_ids" not in batch:
        return None
    return flops / batch["input_ids"].numel()
