"""New tokens per second of ``nca.lit_modules.sampling.sample`` against litgpt's own ``generate``, once per sample.

    python benchmarks/sampler.py                                  # tiny model, 2 CPU threads, n = 64 x 250 tokens
    python benchmarks/sampler.py --config 1.6b --device cuda      # the paper's model in bf16 on one GPU

``--decodings`` picks the sampler's paths (default: all three): ``dynamic`` (the batch shrinks, attention
stops at the longest row), ``fixed`` (fixed shapes, eager) and ``compiled`` (the fixed step under torch.compile,
CUDA graphs on a GPU). The compiled path is compiled by one untimed run of the same shapes first; that run's
time is printed as its compile time.

Both run on the same randomly initialised model (GPT-2 vocabulary, 50,257 ids), the same random prompt and the
same settings (temperature 1, no stop tokens, so every sample runs its full length). The litgpt loop is timed
on ``--baseline-n`` samples (its rate per token does not depend on how many); each method is timed
``--repeats`` times and the table shows medians, since the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from nca.lit_modules.causal_lm import build_config
from nca.lit_modules.sampling import DECODINGS, SamplingConfig, sample

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "model"
GPT2_VOCAB = 50257
SAMPLES: dict[str, list[list[int]]] = {}  # the last samples of each decoding, compared at the end


def build_model(name: str, device: torch.device, dtype: torch.dtype):
    from litgpt.model import GPT

    sizes = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]["config"]
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(build_config(sizes, GPT2_VOCAB))
    return model.to(dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ours(model, prompt, args, device, decoding: str = "dynamic") -> float:
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=args.temperature, top_p=args.top_p)
    sync(device)
    start = time.perf_counter()
    out = sample(model, [prompt], args.n, cfg, seed=0, batch_size=args.batch_size, decoding=decoding)
    sync(device)
    elapsed = time.perf_counter() - start
    assert sum(len(c.tokens) for c in out[0]) == args.n * args.new_tokens
    SAMPLES[decoding] = [c.tokens for c in out[0]]
    return elapsed


def time_litgpt(model, prompt, args, device) -> float:
    from litgpt.generate.base import generate

    x = torch.tensor(prompt, device=device)
    model.set_kv_cache(batch_size=1, device=device)
    try:
        sync(device)
        start = time.perf_counter()
        for _ in range(args.baseline_n):
            out = generate(model, x, len(prompt) + args.new_tokens, temperature=args.temperature, top_p=args.top_p,
                           include_prompt=False)
            assert len(out) == args.new_tokens
        sync(device)
        return time.perf_counter() - start
    finally:
        model.clear_kv_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="a model size in configs/model (tiny, 160m, 400m, 1.6b)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the project's CPU budget: 2)")
    parser.add_argument("--n", type=int, default=64, help="samples of the one prompt")
    parser.add_argument("--new-tokens", type=int, default=250)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--baseline-n", type=int, default=None,
                        help="samples timed for the litgpt loop (default: 16 on CPU, 2 on GPU; 0 skips it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decodings", default="dynamic,fixed,compiled",
                        help="the sampler's paths to time, comma-separated (dynamic, fixed, compiled)")
    args = parser.parse_args()
    decodings = [d for d in args.decodings.split(",") if d]
    if not decodings or set(decodings) - set(DECODINGS):
        parser.error(f"--decodings takes a comma-separated subset of {', '.join(DECODINGS)}, got {args.decodings!r}")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU; run it on a GPU machine or use --device cpu")
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    baseline_n = args.baseline_n if args.baseline_n is not None else (2 if device.type == "cuda" else 16)
    args.baseline_n = baseline_n
    model = build_model(args.config, device, dtype)
    prompt = torch.randint(0, GPT2_VOCAB, (args.prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()

    warm = argparse.Namespace(**{**vars(args), "n": 2, "new_tokens": 4, "baseline_n": 1})
    compile_s = None
    for decoding in decodings:
        if decoding == "compiled":  # the timed shapes themselves: compile (and capture) before timing
            compile_s = time_ours(model, prompt, args, device, decoding)
        else:
            time_ours(model, prompt, warm, device, decoding)
    if baseline_n > 0:
        time_litgpt(model, prompt, warm, device)
    ours: dict[str, list[float]] = {d: [] for d in decodings}
    theirs = []
    for _ in range(args.repeats):  # interleaved, so all see the same load on a shared machine
        for decoding in decodings:
            ours[decoding].append(args.n * args.new_tokens / time_ours(model, prompt, args, device, decoding))
        if baseline_n > 0:
            theirs.append(baseline_n * args.new_tokens / time_litgpt(model, prompt, args, device))

    print(f"config {args.config}, {device.type} {str(dtype).removeprefix('torch.')}, threads {args.threads}, "
          f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens per sample, batch {args.batch_size}, "
          f"temperature {args.temperature}, top_p {args.top_p}, median of {args.repeats} interleaved repeats, "
          f"torch {torch.__version__}")
    print(f"{'method':<38} {'samples':>7} {'new tok/s':>10} {'speed-up':>9}")
    for decoding, rates in ours.items():
        speed = f"{statistics.median(o / t for o, t in zip(rates, theirs)):.1f}x" if theirs else "-"
        name = f"sample, {decoding}"
        print(f"{name:<38} {args.n:>7} {statistics.median(rates):>10.1f} {speed:>9}")
    if theirs:
        print(f"{'litgpt generate, one call per sample':<38} {baseline_n:>7} {statistics.median(theirs):>10.1f} "
              f"{'1.0x':>9}")
    if compile_s is not None:
        print(f"compiled: first call (compile + capture + one run) {compile_s:.1f}s")
    for decoding, rates in ours.items():
        print(f"per repeat tok/s, {decoding}: " + ", ".join(f"{o:.1f}" for o in rates))
    for decoding in decodings[1:]:  # the same seed: the same samples, up to rounding at a CDF boundary
        same = sum(a == b for a, b in zip(SAMPLES[decoding], SAMPLES[decodings[0]]))
        print(f"samples of {decoding} equal to {decodings[0]}'s: {same}/{args.n}")
    if theirs:
        print("per repeat tok/s, litgpt: " + ", ".join(f"{t:.1f}" for t in theirs))


if __name__ == "__main__":
    main()
