#!/usr/bin/env bash
# One-GPU check (issues 14 and 22), at most 9 minutes: the cuda-marked tests, then the GPU benchmarks (160M FSDP
# kill + `--ckpt_path last` resume with equal losses; tokens/s and MFU of 1.6B and 400M under FSDP bf16 with
# torch.compile off and on; `nca fit` of 1.6B with its own progress-line MFU; the sampler's tokens/s for 1.6B at
# n = 64, dynamic and compiled; the replication smoke preset on the GPU; NCA tokens/s generated on the GPU), each
# under its own time cap (listed in benchmarks/gpu_check.py). Prints one summary table and writes it to
# OUT_DIR/gpu_check.md.
#
# On a bare GPU machine, once, from the repo root:   pip install -e ".[dev]"
# Usage:   benchmarks/gpu_check.sh [OUT_DIR]          (default: $OUT, else runs/gpu_check)
# Without a GPU every part is skipped with the reason, and it exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py check --out "${1:-${OUT:-runs/gpu_check}}"
