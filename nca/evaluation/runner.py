"""Run a sampled evaluation into its own folder, resumably, in two stages that can run on different machines.

Folder (default ``runs/eval/<checkpoint>-<task>``, never inside a training run's ``version_N``):
  settings.json      what this evaluation is (checkpoint, task options, n, temperature, ...); a later run with
                     other settings is refused (``records.check_settings``)
  completions.jsonl  stage "generate": one line per (problem, sample): completion text and finish reason
  samples.jsonl      stage "score": the completion with its extracted answer, verdict and reason
  results.json       pass@k (k = 1, 2, 4, ... n) and the task's own summary; TensorBoard scalars in tensorboard/
Both logs are append-only and keyed by (problem, sample): an interrupted stage restarts where it stopped.
Samples are a pure function of (seed, problem index, sample index) (``nca.lit_modules.sampling``), so the samples
regenerated for a half-written problem equal the lost ones and only the missing keys are written.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

from nca.evaluation.problems import Problem, prompt_ids
from nca.evaluation.records import SampleLog, write_json

COMPLETIONS, SAMPLES, RESULTS, TENSORBOARD = "completions.jsonl", "samples.jsonl", "results.json", "tensorboard"
_RUN_VERSION = re.compile(r"^version_\d+$")


def default_folder(checkpoint: str | Path, task: str, root: str | Path = "runs/eval") -> Path:
    """``<root>/<name>-<task>``; a checkpoint in ``<run>/checkpoints/`` is named ``<run>-<stem>``."""
    path = Path(checkpoint)
    name = path.stem if path.suffix else path.name
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        name = f"{path.parent.parent.name}-{name}"
    return Path(root) / f"{name}-{task}"


def check_folder(folder: str | Path) -> Path:
    """Refuse a folder inside a training run's log version or checkpoint directory."""
    folder = Path(folder)
    if any(_RUN_VERSION.match(part) or part == "checkpoints" for part in folder.resolve().parts):
        raise ValueError(f"{folder} lies inside a training run (version_N / checkpoints); give --out elsewhere, "
                         "e.g. runs/eval/NAME")
    return folder


def load_sampler():
    """(sample, SamplingConfig) of ``nca.lit_modules.sampling``, imported on first use (tests replace this)."""
    from nca.lit_modules.sampling import SamplingConfig, sample

    return sample, SamplingConfig


def missing_samples(problems: list[Problem], done: dict, n: int) -> list[tuple[Problem, list[int]]]:
    out = []
    for p in problems:
        todo = [j for j in range(n) if (p.id, j) not in done]
        if todo:
            out.append((p, todo))
    return out


def generate(task, problems: list[Problem], folder: Path, model, tokenizer, *, n: int, temperature: float,
             top_p: float, max_new_tokens: int, seed: int, batch_size: int = 64) -> int:
    """Write the missing completions of ``problems`` to ``completions.jsonl``; returns how many were written."""
    from tqdm.auto import tqdm

    log = SampleLog(folder / COMPLETIONS)
    pending = missing_samples(problems, log.read(), n)
    logprob = getattr(task, "mode", "generate") == "logprob"
    total = len(pending) * (1 if logprob else n)  # what is generated: whole problems (half-done ones again)
    written = 0
    block = model.config.block_size
    with tqdm(total=total, desc=f"{task.name}: generating", unit="sample", dynamic_ncols=True) as bar:
        if logprob:
            from nca.evaluation.bbl import choose

            for p, todo in pending:
                log.append([{"problem": p.id, "sample": 0, **choose(model, tokenizer, p, prompt_ids(p, tokenizer))}])
                bar.update(1)
                written += 1
            return written
        sample, SamplingConfig = load_sampler()
        cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             stop_ids=(tokenizer.eot_id,) if task.stop_at_eot else (),
                             stop_strings=tuple(task.stop_strings))
        # Long prompts lose their oldest ids, leaving room for the reply (but at least half the context).
        room = max(block // 2, block - max_new_tokens, 1)
        chunk = max(1, math.ceil(4 * batch_size / n))  # enough rows to keep the sampler's batch refilled
        for start in range(0, len(pending), chunk):
            part = pending[start: start + chunk]
            prompts = [prompt_ids(p, tokenizer, max_len=room) for p, _ in part]
            results = sample(model, prompts, n, cfg, seed=seed, prompt_ids=[p.index for p, _ in part],
                             decode=tokenizer.decode, batch_size=batch_size,
                             progress=bar.update)
            records = [{"problem": p.id, "sample": j, "completion": results[i][j].text,
                        "finish": results[i][j].finish, "new_tokens": len(results[i][j].tokens)}
                       for i, (p, todo) in enumerate(part) for j in todo]
            log.append(records)
            written += len(records)
    return written


def score(task, problems: list[Problem], folder: Path, n: int, batch: int = 256) -> dict[str, Any]:
    """Score the completions not yet in ``samples.jsonl``; return every scored sample of ``problems``."""
    from tqdm.auto import tqdm

    wanted = {p.id: p for p in problems}
    completions = SampleLog(folder / COMPLETIONS).read()
    log = SampleLog(folder / SAMPLES)
    scored = log.read()
    pending = [c for key, c in completions.items() if key not in scored and key[0] in wanted and key[1] < n]
    with tqdm(total=len(pending), desc=f"{task.name}: scoring", unit="sample", dynamic_ncols=True) as bar:
        for start in range(0, len(pending), batch):
            part = pending[start: start + batch]
            records = [{**c, **v} for c, v in zip(part, task.score(wanted, part))]
            log.append(records)
            scored.update({(r["problem"], int(r["sample"])): r for r in records})
            bar.update(len(records))
    return {k: v for k, v in scored.items() if k[0] in wanted and k[1] < n}


def summarize(task, problems: list[Problem], scored: dict, folder: Path, settings: dict[str, Any], n: int,
              step: int = 0, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """results.json, TensorBoard scalars and a table on stdout from the scored samples."""
    expected = len(problems) * n
    results = {"task": task.name, "settings": settings, "problems": len(problems), "samples": len(scored),
               "complete": len(scored) == expected, **task.summarize(problems, scored)}
    write_json(folder / RESULTS, results)
    log_scalars(folder / TENSORBOARD, task.name, results["metrics"], step)
    echo(table(results))
    if not results["complete"]:
        echo(f"incomplete: {len(scored)} of {expected} samples scored (run the generate stage to finish)")
    return results


def log_scalars(directory: Path, prefix: str, metrics: dict[str, float], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(directory)) as writer:
        for key, value in metrics.items():
            writer.add_scalar(f"{prefix}/{key}", value, step)


def table(results: dict[str, Any]) -> str:
    """A plain-text table: the overall metrics, then one line per task where the task has several."""
    metrics = results["metrics"]
    width = max(map(len, metrics), default=10)
    lines = [results.get("header") or f"{results['task']}: {results['problems']} problems, {results['samples']} samples"]
    lines += [f"  {k:<{width}}  {v:8.4f}" + ("  <- headline" if k == results.get("headline") else "")
              for k, v in metrics.items()]
    per_task = results.get("per_task") or {}
    if per_task:
        cols = [c for c in next(iter(per_task.values())) if c != "examples"]
        name_w = max(map(len, per_task))
        lines.append(f"  {'task':<{name_w}}  {'examples':>8}  " + "  ".join(f"{c:>18}" for c in cols))
        for name, row in per_task.items():
            lines.append(f"  {name:<{name_w}}  {row['examples']:>8}  " + "  ".join(f"{row[c]:>18.4f}" for c in cols))
    return "\n".join(lines)
