"""The one-GPU check (issues 14 and 22): cuda-marked tests, then the GPU benchmarks, as one summary table.

    python benchmarks/gpu_check.py --out DIR        # or benchmarks/gpu_check.sh [DIR]

Parts, each a subprocess under its own ``timeout`` (a failure or time-out in one never stops the others), all
inside ``--budget`` seconds (default 530, so the whole check fits 9 minutes); a part that no longer fits is
marked skipped. Caps in seconds, in running order (most wanted first); they add up to 645 s, more than the
budget, so when early parts run to their caps the last ones are cut or skipped, and the whole check still ends
within the budget. Every training part runs ``model.compile`` auto (on, on a GPU) unless it says otherwise; a
cap includes that part's start-up and compile time.

    cuda-tests       (60)   python -m pytest -m cuda
    fsdp-resume      (130)  160M (configs/model/160m.yaml) FSDP bf16 fit on NCA tokens made on the GPU, SIGKILLed
                            mid-run (after a checkpoint), resumed with ``--ckpt_path last``; its losses must equal
                            an uninterrupted run
    mfu-1.6b         (35)   benchmarks/train_throughput.py fsdp-mfu: 1.6B, FSDP bf16, no activation
    mfu-1.6b-compile (60)   checkpointing, torch.compile off / on
    fit-1.6b         (60)   ``nca fit`` itself: 1.6B with configs/strategy/fsdp.yaml (activation checkpointing on),
                            tokens/s and MFU from its progress line
    sampler-1.6b     (90)   benchmarks/sampler.py --config 1.6b --device cuda, n = 64: dynamic and compiled decoding
    mfu-400m         (25)   as mfu-1.6b for 400M
    mfu-400m-compile (45)
    replicate-smoke  (120)  ``nca replicate`` of configs/replicate/smoke.yaml with ``--device gpu`` on two small
                            generated corpora, 4 runs at a time: every run and the report (``gpu_check.py smoke``)
    nca-gpu          (20)   benchmarks/nca_throughput.py --device cuda: NCA tokens/s generated on the GPU

The table goes to stdout and to ``DIR/gpu_check.md`` (a free name ``gpu_check-N.md`` if taken: nothing is
overwritten), each part's full output to ``DIR/gpu_check_logs[-N]/PART.log``. Without a GPU every part is
skipped with the reason and the exit code is 0; with one, it is 1 when any part failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 530
LOSS_TOLERANCE = 1e-2  # |loss difference| allowed after the resume (bf16, GPU atomics): equal to ~3 digits
KILL_AT_STEP, CHECKPOINT_EVERY, RESUME_STEPS = 30, 20, 50

@dataclass
class Part:
    name: str
    what: str
    cap_s: int
    command: list[str]
    summarize: object  # (log text) -> str
    needs: Path | None = None  # a script that may not exist yet


@dataclass
class Outcome:
    part: Part
    status: str
    result: str
    seconds: float


# ---------------------------------------------------------------------------------------------- summaries
def summarize_pytest(log: str) -> str:
    lines = [line for line in log.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected|error)", line)]
    return lines[-1].strip("= ") if lines else "no pytest summary line"


def summarize_mfu(log: str) -> str:
    m = re.search(r"tokens/s per device ([\d,]*\d).*?MFU ([\d.]+%|nan%)", log)
    return f"{m.group(1)} tokens/s, MFU {m.group(2)}" if m else "no MFU line"


def summarize_nca(log: str) -> str:
    m = re.search(r"streamed [\d,]+ tokens in [\d.]+s: ([\d,]+) tokens/s", log)
    return f"{m.group(1)} tokens/s" if m else "no throughput line"


def summarize_sampler(log: str) -> str:
    rows = re.findall(r"^(\S.*?)\s+(\d+)\s+([\d.,]+)\s+(\S+)\s*$", log, flags=re.M)
    return "; ".join(f"{name.strip()}: {rate} new tok/s" for name, _, rate, _ in rows) or "no result table"


def summarize_fit(log: str) -> str:
    """The last progress line's tokens/s and MFU, and the FLOPs per token the MFU counts."""
    lines = re.findall(r"^step (\d+)/\d+ \|.*?\| ([\d,]+) tok/s(?: \| MFU ([\d.]+%))?", log, flags=re.M)
    if not lines:
        return "no progress line"
    step, rate, mfu = lines[-1]
    flops = re.search(r"x (\S+) model FLOPs per token", log)
    per_token = f" at {flops.group(1)} FLOPs/token" if flops else ""
    return f"step {step}: {rate} tokens/s, MFU {mfu or 'not shown'}{per_token}"


def summarize_smoke(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("SMOKE:")]
    return lines[-1].removeprefix("SMOKE:").strip() if lines else "no smoke verdict"


def summarize_resume(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("RESUME:")]
    return lines[-1].removeprefix("RESUME:").strip() if lines else "no resume verdict"


# ------------------------------------------------------------------------------------------------- parts
def parts(logs: Path) -> list[Part]:
    py = sys.executable
    mfu = [py, "benchmarks/train_throughput.py", "fsdp-mfu", "--batch-size", "8", "--steps", "20", "--warmup", "8",
           "--no-activation-checkpointing"]
    b16, m400 = ["--model", "configs/model/1.6b.yaml"], ["--model", "configs/model/400m.yaml"]
    return [
        Part("cuda-tests", "pytest -m cuda", 60, [py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
             summarize_pytest),
        Part("fsdp-resume", "160M FSDP fit, kill, --ckpt_path last", 130,
             [py, "benchmarks/gpu_check.py", "resume", "--runs", str(logs / "resume_runs")], summarize_resume),
        Part("mfu-1.6b", "1.6B FSDP bf16, eager", 35, mfu + b16 + ["--no-compile"], summarize_mfu),
        Part("mfu-1.6b-compile", "1.6B FSDP bf16, compiled", 60, mfu + b16 + ["--compile"], summarize_mfu),
        Part("fit-1.6b", "nca fit 1.6B FSDP, act. ckpt, compile auto", 60, fit_mfu_command(logs / "fit_runs"),
             summarize_fit),
        Part("sampler-1.6b", "sampler, 1.6B, n = 64, dynamic/compiled", 90,
             [py, "benchmarks/sampler.py", "--config", "1.6b", "--device", "cuda", "--n", "64", "--repeats", "2",
              "--baseline-n", "1", "--decodings", "dynamic,compiled"], summarize_sampler),
        Part("mfu-400m", "400M FSDP bf16, eager", 25, mfu + m400 + ["--no-compile"], summarize_mfu),
        Part("mfu-400m-compile", "400M FSDP bf16, compiled", 45, mfu + m400 + ["--compile"], summarize_mfu),
        Part("replicate-smoke", "nca replicate smoke.yaml --device gpu", 120,
             [py, "benchmarks/gpu_check.py", "smoke", "--out", str(logs / "smoke_study")], summarize_smoke),
        Part("nca-gpu", "NCA tokens generated on the GPU", 20,
             [py, "benchmarks/nca_throughput.py", "--device", "cuda", "--workers", "0", "--batch", "1024",
              "--tokens", "20e6"], summarize_nca),
    ]


def subprocess_env() -> dict[str, str]:
    """The repo (an uninstalled checkout works) and benchmarks/ (kill_at_step) importable in every part."""
    paths = [str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def run_part(part: Part, cap_s: int, log_path: Path) -> Outcome:
    """One part under coreutils ``timeout`` (which signals the whole process group, DataLoader workers too)."""
    env = subprocess_env()
    start = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(part.command)}   (cap {cap_s}s)\n")
        log.flush()
        rc = subprocess.call(["timeout", "--kill-after=10", str(cap_s), *part.command], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    text = log_path.read_text(errors="replace")
    if rc in (124, 137):
        return Outcome(part, "timeout", f"over its {cap_s}s cap; {part.summarize(text)}", seconds)
    status = "ok" if rc == 0 else f"failed (rc {rc})"
    return Outcome(part, status, part.summarize(text), seconds)


def table(outcomes: list[Outcome]) -> str:
    rows = [("part", "what", "status", "result", "s")]
    rows += [(o.part.name, o.part.what, o.status, o.result, f"{o.seconds:.0f}") for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def free_name(directory: Path, stem: str, suffix: str) -> Path:
    name, n = stem + suffix, 0
    while (directory / name).exists():
        n += 1
        name = f"{stem}-{n}{suffix}"
    return directory / name


def check(out: Path, budget_s: float) -> int:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    report, logs = free_name(out, "gpu_check", ".md"), free_name(out, "gpu_check_logs", "")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    if gpu is not None:
        logs.mkdir()
    header = f"GPU check: {gpu or 'no CUDA GPU'}; torch {torch.__version__}; budget {budget_s:.0f}s"
    print(header, flush=True)
    if gpu is None:
        print("No CUDA GPU (torch.cuda.is_available() is False): every GPU part is skipped.", flush=True)
    deadline = time.monotonic() + budget_s
    outcomes = []
    for part in parts(logs):
        left = int(deadline - time.monotonic())
        if gpu is None:
            outcomes.append(Outcome(part, "skipped", "no CUDA GPU", 0.0))
        elif part.needs is not None and not part.needs.exists():
            outcomes.append(Outcome(part, "not available", f"{os.path.relpath(part.needs, ROOT)} does not exist", 0.0))
        elif left < 15:
            outcomes.append(Outcome(part, "skipped", f"time budget spent ({budget_s:.0f}s)", 0.0))
        else:
            print(f"running {part.name} (cap {min(part.cap_s, left)}s) ...", flush=True)
            outcomes.append(run_part(part, min(part.cap_s, left), logs / f"{part.name}.log"))
            print(f"  {outcomes[-1].status}: {outcomes[-1].result}", flush=True)
    summary = table(outcomes)
    commands = "\n".join(f"- {p.name}: `{' '.join(p.command)}`" for p in parts(logs))
    where = f"logs in {logs}" if gpu is not None else "no logs (nothing ran)"
    report.write_text(f"# {header}\n\n{summary}\n\n{where[0].upper() + where[1:]}.\n\nCommands:\n{commands}\n")
    print(summary)
    print(f"table written to {report}; {where}")
    return 0 if gpu is None or all(o.status in ("ok", "not available") for o in outcomes) else 1


# ------------------------------------------------------------------------------------------- fsdp-resume
def fit_command(runs: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nca", "fit", "--config", "configs/stage1.yaml", "--config", "configs/model/160m.yaml",
            "--config", "configs/strategy/fsdp.yaml", "--trainer.devices", "1", "--trainer.precision", "bf16-mixed",
            "--trainer.max_steps", str(RESUME_STEPS), "--trainer.log_every_n_steps", "1",
            "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0",
            "--trainer.enable_progress_bar", "false", "--checkpoint.every_n_train_steps", str(CHECKPOINT_EVERY),
            "--data.init_args.seq_len", "1024", "--data.init_args.batch_size", "8", "--data.init_args.device", "cuda",
            "--trainer.logger.init_args.save_dir", str(runs), "--trainer.logger.init_args.name", name, *extra]


def fit_mfu_command(runs: Path, steps: int = 40) -> list[str]:
    """``nca fit`` of the paper's 1.6B model as a user runs it (FSDP config, compile auto), no checkpoints."""
    return [sys.executable, "-m", "nca", "fit", "--config", "configs/stage1.yaml",
            "--config", "configs/model/1.6b.yaml", "--config", "configs/strategy/fsdp.yaml",
            "--trainer.devices", "1", "--trainer.precision", "bf16-mixed", "--trainer.max_steps", str(steps),
            "--trainer.log_every_n_steps", "5", "--trainer.num_sanity_val_steps", "0",
            "--trainer.limit_val_batches", "0",  # progress bar on: in a log file it is the plain progress line
            "--checkpoint.save_last", "false", "--checkpoint.save_top_k", "0",
            "--checkpoint.every_n_train_steps", str(10 * steps), "--data.init_args.seq_len", "1024",
            "--data.init_args.batch_size", "8", "--data.init_args.device", "cuda",
            "--trainer.logger.init_args.save_dir", str(runs), "--trainer.logger.init_args.name", "fit_mfu"]


def compare_losses(reference: dict[int, float], resumed: dict[int, float], tolerance: float = LOSS_TOLERANCE):
    """(passed, message): the resumed run's losses against the uninterrupted run's at the same steps."""
    common = sorted(set(reference) & set(resumed))
    if not common:
        return False, "no common logged steps between the runs"
    diffs = [abs(reference[s] - resumed[s]) for s in common]
    worst = max(diffs)
    equal = sum(d == 0 for d in diffs)
    message = (f"steps {common[0]}-{common[-1]} after resume: max |dloss| {worst:.2e} "
               f"({equal}/{len(common)} bit-equal, tolerance {tolerance:g})")
    return worst <= tolerance, message


def resume(runs: Path) -> int:
    """Reference fit; the same fit SIGKILLed at step KILL_AT_STEP and resumed with --ckpt_path last; compare."""
    from nca.analysis.curves import load_scalars

    if runs.exists():
        print(f"RESUME: refused, {runs} exists (pick another --runs)")
        return 2
    kill = ["--trainer.callbacks+=kill_at_step.KillAtStep", f"--trainer.callbacks.step={KILL_AT_STEP}"]
    steps = [("reference", fit_command(runs, "reference")), ("killed", fit_command(runs, "resumed", *kill)),
             ("resumed", fit_command(runs, "resumed", "--ckpt_path", "last"))]
    env = subprocess_env()
    for label, command in steps:
        print(f"$ {' '.join(command)}", flush=True)
        rc = subprocess.call(command, cwd=ROOT, env=env)
        expected = -signal.SIGKILL if label == "killed" else 0
        if rc != expected:
            print(f"RESUME: the {label} run exited with {rc}, expected {expected}")
            return 1
    versions = sorted((runs / "resumed").glob("version_*"), key=lambda d: int(d.name.split("_")[1]))
    ref_steps, ref_loss = load_scalars(runs / "reference", "train/loss")
    new_steps, new_loss = load_scalars(versions[-1], "train/loss")
    start = int(new_steps.min())
    if not start < KILL_AT_STEP:
        print(f"RESUME: the resumed run started at step {start}, not from the checkpoint before the kill")
        return 1
    passed, message = compare_losses(dict(zip(ref_steps.tolist(), ref_loss.tolist())),
                                     dict(zip(new_steps.tolist(), new_loss.tolist())))
    print(f"RESUME: {'equal' if passed else 'DIFFERENT'}; killed at step {KILL_AT_STEP}, resumed from {start}; {message}")
    return 0 if passed else 1


# --------------------------------------------------------------------------------------- replicate-smoke
WORDS = ("the of and to in is was for on that with as by at from his her an which or had are this be not it were "
         "have their one all also after first new two been its but who they has more other into time would years "
         "when some there these only such out about most may over then them up three can could during while where "
         "made many city people part later so between under since state world small group high school found "
         "work").split()


def write_words(path: Path, documents: int, seed: int) -> str:
    """A small corpus of seeded word salad ({"text": ...} lines): the smoke needs text, not meaning."""
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(documents):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80)))
            f.write(json.dumps({"text": f"doc {i}: {words}."}) + "\n")
    return str(path)


def smoke(out: Path, jobs: int = 4, device: str = "gpu") -> int:
    """The replication smoke preset on the GPU (bf16, runs sharing it) on two generated corpora; checks the report."""
    if out.exists():
        print(f"SMOKE: refused, {out} exists (pick another --out)")
        return 2
    out.mkdir(parents=True)
    owt, c4 = write_words(out / "owt.jsonl", 400, seed=1), write_words(out / "c4.jsonl", 400, seed=2)
    command = [sys.executable, "-m", "nca", "replicate", "--config", "configs/replicate/smoke.yaml", "--device", device,
               "--out", str(out / "study"), "--jobs", str(jobs), "--data.owt", owt, "--data.c4", c4,
               "--data.c4_val", "null"]
    print(f"$ {' '.join(command)}", flush=True)
    start = time.monotonic()
    rc = subprocess.call(command, cwd=ROOT, env=subprocess_env())
    report = out / "study" / "report.json"
    if rc != 0 or not report.is_file():
        print(f"SMOKE: failed (rc {rc}{'' if report.is_file() else ', no report.json'})")
        return 1
    ppl = json.loads(report.read_text())["domains"]["owt"]["final_ppl"]
    finite = all(math.isfinite(arm["mean"]) for arm in ppl.values())
    means = ", ".join(f"{name} {arm['mean']:.1f}" for name, arm in sorted(ppl.items()))
    print(f"SMOKE: {'report ok' if finite else 'NON-FINITE perplexity'} in {time.monotonic() - start:.0f}s; "
          f"final ppl {means}")
    return 0 if finite else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode")
    c = sub.add_parser("check", help="all parts (the default)")
    c.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "runs/gpu_check"))
    c.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all parts together")
    r = sub.add_parser("resume", help="the fsdp-resume part alone")
    r.add_argument("--runs", type=Path, required=True, help="a new directory for the three runs' logs/checkpoints")
    m = sub.add_parser("smoke", help="the replicate-smoke part alone")
    m.add_argument("--out", type=Path, required=True, help="a new directory for the corpora and the study")
    m.add_argument("--jobs", type=int, default=4, help="runs at once on the GPU")
    m.add_argument("--device", default="gpu", choices=["gpu", "cpu"], help="cpu: the same smoke without a GPU")
    given = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(given if given[:1] in (["check"], ["resume"], ["smoke"]) else ["check", *given])
    if args.mode == "resume":
        return resume(args.runs)
    return smoke(args.out, args.jobs, args.device) if args.mode == "smoke" else check(args.out, args.budget)


if __name__ == "__main__":
    sys.exit(main())
