#!/usr/bin/env bash
# One-GPU check (issue 14), at most 9 minutes: the cuda-marked tests, then the GPU benchmarks (160M FSDP
# kill + `--ckpt_path last` resume with equal losses; MFU and tokens/s of 1.6B and 400M under FSDP bf16 with
# activation checkpointing on and off; NCA tokens/s generated on the GPU; the sampler's tokens/s for 1.6B at
# n = 64), each under its own time cap. Prints one summary table and writes it to OUT_DIR/gpu_check.md.
#
# On a bare GPU machine, once, from the repo root:   pip install -e ".[dev]"
# Usage:   benchmarks/gpu_check.sh [OUT_DIR]          (default: $OUT, else runs/gpu_check)
# Without a GPU every part is skipped with the reason, and it exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py check --out "${1:-${OUT:-runs/gpu_check}}"
