"""Training throughput of ``CausalLM`` through a Lightning Trainer vs a bare litgpt loop, and MFU under FSDP.

    # CPU: Lightning path vs bare loop, same model / batch / optimiser / clipping, interleaved repeats
    python benchmarks/train_throughput.py cpu --threads 2
    # GPU: tokens/s and MFU of the paper's 1.6B model, FSDP + bf16-mixed (+ activation checkpointing),
    # torch.compile of the blocks as in `nca fit` (model.compile auto: on) or off with --no-compile
    python benchmarks/train_throughput.py fsdp-mfu --model configs/model/1.6b.yaml --batch-size 8 [--no-compile]

Both paths train on the same pre-made random token batches (no data loading cost), so the difference is the
framework: Lightning's loops, hooks and logging plus what CausalLM adds (grad-norm and token counting).
Timing starts after ``--warmup`` optimizer steps; tokens/s = tokens per step / median step time (each step timed
from the end of the previous one, so data, forward, backward, clipping, optimiser and every hook are inside).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from litgpt.model import GPT
from litgpt.utils import reset_parameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nca.lit_modules.causal_lm import CausalLM, build_config, init_weights_, lr_factor  # noqa: E402


def make_batches(n: int, batch: int, seq_len: int, vocab: int, device: str) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, vocab, (n, batch, seq_len + 1), generator=g)
    return [{"input_ids": r[:, :-1].contiguous().to(device), "labels": r[:, 1:].contiguous().to(device)} for r in rows]


class Batches(L.LightningDataModule):
    def __init__(self, batches: list[dict[str, torch.Tensor]], vocab_size: int):
        super().__init__()
        self.batches, self.vocab_size = batches, vocab_size

    def train_dataloader(self):
        return InMemory(self.batches)


class InMemory:
    """Iterates pre-made batches: no DataLoader, no workers (a bare list would mean several loaders)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class StepTimes(L.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, *_):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def tokens_per_s(times: list[float], warmup: int, tokens_per_step: int) -> float:
    """Tokens over the median step time after warm-up: robust to other jobs briefly taking the shared cores."""
    steps = [b - a for a, b in zip(times[warmup:], times[warmup + 1:])]
    return tokens_per_step / statistics.median(steps)


def run_lightning(args, cfg: dict, batches, vocab: int, compile: bool | str = False,
                  **trainer_kw) -> tuple[float, CausalLM]:
    L.seed_everything(0, verbose=False)
    module = CausalLM(config=cfg, vocab_size=vocab, lr=args.lr, min_lr=args.lr / 10, warmup_steps=args.warmup,
                      compile=compile)
    timer = StepTimes()
    trainer = L.Trainer(
        max_steps=len(batches), logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, gradient_clip_val=1.0, callbacks=[timer],
        **trainer_kw,
    )
    trainer.fit(module, Batches(batches, vocab))
    return tokens_per_s(timer.times, args.warmup, batches[0]["input_ids"].numel()), module


def run_bare(args, cfg: dict, batches, vocab: int) -> float:
    """The loop litgpt's pretrain script runs (minus Fabric): forward, CE, backward, clip, AdamW, schedule."""
    L.seed_everything(0, verbose=False)
    config = build_config(cfg, vocab)
    model = GPT(config)
    init_weights_(model)
    reset_parameters(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, args.warmup, len(batches), 0.1))
    model.train()
    times = []
    for batch in batches:
        logits = model(batch["input_ids"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        times.append(time.perf_counter())
    return tokens_per_s(times, args.warmup, batches[0]["input_ids"].numel())


def cpu(args) -> None:
    torch.set_num_threads(args.threads)
    cfg = dict(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, block_size=args.seq_len)
    batches = make_batches(args.steps, args.batch_size, args.seq_len, args.vocab, "cpu")
    lightning, bare = [], []
    for r in range(args.repeats):  # interleaved, so drifting load on a shared machine hits both alike
        lightning.append(run_lightning(args, cfg, batches, args.vocab, compile=args.compile, accelerator="cpu",
                                       devices=1, precision="32-true")[0])
        bare.append(run_bare(args, cfg, batches, args.vocab))
        print(f"repeat {r}: lightning {lightning[-1]:,.0f} tok/s, bare {bare[-1]:,.0f} tok/s", flush=True)
    lm, bm = statistics.median(lightning), statistics.median(bare)
    print(f"model {cfg} vocab {args.vocab}, batch {args.batch_size} x {args.seq_len}, {args.steps} steps "
          f"({args.warmup} warm-up), {args.threads} threads, torch {torch.__version__}, {platform.processor()}, "
          f"Lightning path compiled: {args.compile}")
    print(f"median tokens/s: lightning {lm:,.0f}  bare {bm:,.0f}  lightning/bare {lm / bm:.3f}")


def fsdp_mfu(args) -> None:
    """One GPU (or all visible ones) with FSDP + bf16-mixed: tokens/s and MFU from the module's measured FLOPs
    (forward + backward; activation recompute excluded) over the dense bf16 peak (``nca.lit_modules.mfu``)."""
    from lightning.pytorch.strategies import FSDPStrategy
    from litgpt.model import Block

    from nca.lit_modules.mfu import flops_per_token, mfu, peak_flops

    if not torch.cuda.is_available():
        raise SystemExit("fsdp-mfu needs a CUDA GPU; use the `cpu` mode here.")
    cfg = yaml.safe_load(Path(args.model).read_text())["model"]["config"]
    batches = make_batches(args.steps, args.batch_size, cfg["block_size"], args.vocab, "cpu")
    strategy = FSDPStrategy(auto_wrap_policy={Block}, sharding_strategy="FULL_SHARD", state_dict_type="sharded",
                            activation_checkpointing_policy={Block} if args.activation_checkpointing else None)
    compile = "auto" if args.compile is None else args.compile
    start = time.perf_counter()
    tps, module = run_lightning(args, cfg, batches, args.vocab, compile=compile, accelerator="gpu",
                                devices=args.devices, strategy=strategy, precision="bf16-mixed")
    wall = time.perf_counter() - start
    world = torch.cuda.device_count() if args.devices == -1 else args.devices
    per_token = flops_per_token(module, batches[0])
    available = peak_flops(torch.device("cuda"), torch.bfloat16)
    rate = mfu(tps, per_token, available) if available else float("nan")
    compiled = module.model.transformer.h[0]._compiled_call_impl is not None
    print(f"{args.model}: {torch.cuda.get_device_name()} x {world}, batch {args.batch_size} x {cfg['block_size']} "
          f"per device, activation checkpointing {args.activation_checkpointing}, compile {compiled}, "
          f"torch {torch.__version__}, fit wall {wall:.0f}s (compile included), "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"tokens/s per device {tps:,.0f}, total {tps * world:,.0f}; model FLOPs/token {per_token:.3e} "
          f"(forward + backward, recompute excluded); MFU {rate:.1%} (peak {available or float('nan'):.3e} FLOP/s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cpu", help="Lightning vs bare loop on CPU")
    c.add_argument("--n-layer", type=int, default=4)
    c.add_argument("--n-embd", type=int, default=256)
    c.add_argument("--n-head", type=int, default=4)
    c.add_argument("--seq-len", type=int, default=256)
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--vocab", type=int, default=10002)
    c.add_argument("--steps", type=int, default=40)
    c.add_argument("--warmup", type=int, default=5)
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--compile", action="store_true", help="torch.compile the Lightning path's blocks (inductor)")
    g = sub.add_parser("fsdp-mfu", help="MFU of a model config under FSDP bf16 on GPU")
    g.add_argument("--model", default="configs/model/1.6b.yaml")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--vocab", type=int, default=10002)
    g.add_argument("--steps", type=int, default=30)
    g.add_argument("--warmup", type=int, default=10)
    g.add_argument("--devices", type=int, default=1)
    g.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the blocks (default: model.compile auto, i.e. on on a GPU)")
    g.add_argument("--lr", type=float, default=1e-4)
    args = p.parse_args()
    cpu(args) if args.mode == "cpu" else fsdp_mfu(args)


if __name__ == "__main__":
    main()
