"""Run a sampled evaluation into its own folder, resumably, in two stages that can run on different machines.

Folder (default ``runs/eval/<the checkpoint's run path>/<checkpoint>-<task>``, never inside a training run's
``version_N``):
  settings.json      what this evaluation is (checkpoint, task options, n, temperature, ...); a later run with
                     other settings is refused (``records.record_settings``)
  checkpoint.json    the checkpoint's training step, written by the generate stage (the TensorBoard step)
  completions.jsonl  stage "generate": one line per (problem, sample): completion text, finish reason and how
                     the prompt was fitted (exemplars dropped, reply budget); a problem whose question alone does
                     not fit the context has "finish": "skipped" (``problems.fit_prompt``)
  samples.jsonl      stage "score": the completion with its extracted answer, verdict and reason
  results.json       pass@k (k = 1, 2, 4, ... n), the task's own summary and headline, the skipped problems;
                     TensorBoard scalars in tensorboard/
Both logs are append-only and keyed by (problem, sample): an interrupted stage restarts where it stopped.
Samples are a pure function of (seed, problem index, sample index) (``nca.lit_modules.sampling``), so the samples
regenerated for a half-written problem equal the lost ones and only the missing keys are written.
Scoring imports neither Lightning nor torch (HumanEval runs programs, GSM8K math-verify).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Callable

from nca.evaluation.problems import Fitted, Problem, fit_prompt
from nca.evaluation.records import SampleLog, write_json
from nca.evaluation.task import SampledTask

COMPLETIONS, SAMPLES, RESULTS, TENSORBOARD = "completions.jsonl", "samples.jsonl", "results.json", "tensorboard"
CHECKPOINT = "checkpoint.json"
SKIPPED = "skipped"  # the finish reason of a problem that does not fit the context
_RUN_VERSION = re.compile(r"^version_\d+$")


def run_path(checkpoint: str | Path) -> tuple[str, ...]:
    """The folders that name a checkpoint's run: its path (relative to here when below it), less a leading
    ``runs`` and the ``checkpoints`` folder: runs/from_nca/stage2-owt/checkpoints/last.ckpt -> from_nca/stage2-owt."""
    path = Path(checkpoint).expanduser().absolute()
    try:
        parts = path.relative_to(Path.cwd()).parts
    except ValueError:
        parts = path.parts[1:]
    folders = [p for p in parts[:-1] if p not in ("checkpoints", "..", ".")]
    return tuple(folders[1:] if folders[:1] == ["runs"] else folders)


def default_folder(checkpoint: str | Path, task: str, root: str | Path = "runs/eval") -> Path:
    """``<root>/<run path>/<checkpoint name>-<task>``: one folder per checkpoint file, so runs of one name in
    different places (runs/stage2-owt, runs/from_nca/stage2-owt) never share one."""
    path = Path(checkpoint)
    name = path.stem if path.suffix else path.name
    return Path(root, *run_path(checkpoint), f"{name}-{task}")


def legacy_folder(checkpoint: str | Path, task: str, root: str | Path = "runs/eval") -> Path:
    """Where versions before the run-path folders put an evaluation: ``<root>/<run>-<checkpoint>-<task>``."""
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


def generate(task: SampledTask, problems: list[Problem], folder: Path, model, tokenizer, *, n: int,
             temperature: float, top_p: float, max_new_tokens: int, seed: int, batch_size: int = 64) -> int:
    """Write the missing completions of ``problems`` to ``completions.jsonl``; returns how many were written.
    Each prompt is fitted into the context (``fit_prompt``): exemplars go first, then reply tokens; a problem
    whose question alone does not fit is written as skipped."""
    from tqdm.auto import tqdm

    log = SampleLog(folder / COMPLETIONS)
    pending = missing_samples(problems, log.read(), n)
    choose = task.decoding == "choose"
    total = len(pending) * (1 if choose else n)  # what is generated: whole problems (half-done ones again)
    written = 0
    block = model.config.block_size
    with tqdm(total=total, desc=f"{task.name}: generating", unit="sample", dynamic_ncols=True) as bar:
        if choose:
            from nca.evaluation.bbl import choose_answer

            for p, todo in pending:
                choices = [tokenizer.encode(c) or [tokenizer.eot_id] for c in p.data["choices"]]
                longest = max(map(len, choices))
                fitted = fit_prompt(p, tokenizer, block, longest, min_reply=longest)
                record = skip_record(fitted) if fitted.skipped else choose_answer(model, p, fitted.ids, choices)
                log.append([{"problem": p.id, "sample": 0, **record, **fitted.record()}])
                bar.update(1)
                written += 1
            return written
        sample, SamplingConfig = load_sampler()
        cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             stop_ids=(tokenizer.eot_id,) if task.stop_at_eot else (),
                             stop_strings=tuple(task.stop_strings))
        fitted = {p.id: fit_prompt(p, tokenizer, block, max_new_tokens) for p, _ in pending}
        skipped = [(p, todo) for p, todo in pending if fitted[p.id].skipped]
        if skipped:
            records = [{"problem": p.id, "sample": j, **skip_record(fitted[p.id]), **fitted[p.id].record()}
                       for p, todo in skipped for j in todo]
            log.append(records)
            written += len(records)
            bar.update(len(skipped) * n)
        pending = [item for item in pending if not fitted[item[0].id].skipped]
        chunk = max(1, math.ceil(4 * batch_size / n))  # enough rows to keep the sampler's batch refilled
        for start in range(0, len(pending), chunk):
            part = pending[start: start + chunk]
            results = sample(model, [fitted[p.id].ids for p, _ in part], n, cfg, seed=seed,
                             prompt_ids=[p.index for p, _ in part], decode=tokenizer.decode, batch_size=batch_size,
                             progress=bar.update)
            records = [{"problem": p.id, "sample": j, "completion": results[i][j].text,
                        "finish": results[i][j].finish, "new_tokens": len(results[i][j].tokens),
                        **fitted[p.id].record()}
                       for i, (p, todo) in enumerate(part) for j in todo]
            log.append(records)
            written += len(records)
    return written


def skip_record(fitted: Fitted) -> dict[str, Any]:
    return {"completion": "", "finish": SKIPPED, "new_tokens": 0, "skipped": fitted.reason}


def score(task: SampledTask, problems: list[Problem], folder: Path, n: int, batch: int = 256) -> dict[str, Any]:
    """Score the completions not yet in ``samples.jsonl``; return every scored sample of ``problems``. Skipped
    problems are recorded without a verdict (``summarize`` leaves them out and reports them)."""
    from tqdm.auto import tqdm

    wanted = {p.id: p for p in problems}
    completions = SampleLog(folder / COMPLETIONS).read()
    log = SampleLog(folder / SAMPLES)
    scored = log.read()
    pending = [c for key, c in completions.items() if key not in scored and key[0] in wanted and key[1] < n]
    with tqdm(total=len(pending), desc=f"{task.name}: scoring", unit="sample", dynamic_ncols=True) as bar:
        for start in range(0, len(pending), batch):
            part = pending[start: start + batch]
            live = [c for c in part if c["finish"] != SKIPPED]
            verdicts = iter(task.score(wanted, live) if live else [])
            records = [{**c, **(next(verdicts) if c["finish"] != SKIPPED else
                                {"extracted": None, "verdict": None, "reason": f"skipped: {c.get('skipped')}"})}
                       for c in part]
            log.append(records)
            scored.update({(r["problem"], int(r["sample"])): r for r in records})
            bar.update(len(records))
    return {k: v for k, v in scored.items() if k[0] in wanted and k[1] < n}


def summarize(task: SampledTask, problems: list[Problem], scored: dict, folder: Path, settings: dict[str, Any],
              n: int, step: int = 0, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """results.json, TensorBoard scalars and a table on stdout from the scored samples; skipped problems are
    counted and named, and left out of every metric."""
    skipped_ids = {pid for (pid, _), r in scored.items() if r.get("finish") == SKIPPED}
    skipped = sorted(skipped_ids)
    kept = [p for p in problems if p.id not in skipped_ids]
    kept_scored = {k: v for k, v in scored.items() if k[0] not in skipped_ids}
    per_problem = {pid: r for (pid, _), r in kept_scored.items()}  # every sample of a problem has one fit
    expected = len(problems) * n
    results = {"task": task.name, "settings": settings, "problems": len(kept), "samples": len(kept_scored),
               "complete": len(scored) == expected,
               "skipped": {"problems": len(skipped), "ids": skipped,
                           "rule": "a problem whose question alone does not fit the model's context is not "
                                   "generated and not scored"},
               "prompt_fit": {"exemplars_dropped": sum(bool(r.get("exemplars_dropped")) for r in per_problem.values()),
                              "reply_shortened": sum(bool(r.get("reply_shortened")) for r in per_problem.values())},
               **task.summarize(kept, kept_scored)}
    write_json(folder / RESULTS, results)
    log_scalars(folder / TENSORBOARD, task.name, results["metrics"], step)
    echo(table(results))
    if skipped:
        echo(f"skipped {len(skipped)} problems whose question alone does not fit the context: "
             f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")
    fit = results["prompt_fit"]
    if fit["exemplars_dropped"] or fit["reply_shortened"]:
        echo(f"to fit the context, {fit['exemplars_dropped']} prompts lost exemplars and {fit['reply_shortened']} "
             "got a shorter reply budget (per sample in samples.jsonl)")
    if not results["complete"]:
        echo(f"incomplete: {len(scored)} of {expected} samples scored (run the generate stage to finish)")
    return results


def log_scalars(directory: Path, prefix: str, metrics: dict[str, float], step: int) -> None:
    """TensorBoard scalars through tensorboard's own event writer (no torch needed to score)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    directory.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(directory))
    for key, value in metrics.items():
        summary = Summary(value=[Summary.Value(tag=f"{prefix}/{key}", simple_value=float(value))])
        writer.add_event(Event(summary=summary, step=int(step), wall_time=time.time()))
    writer.close()


def record_step(folder: Path, step: int) -> None:
    write_json(folder / CHECKPOINT, {"global_step": int(step)})


def recorded_step(folder: Path) -> int:
    """The training step the generate stage recorded (0 when it did not run here)."""
    path = folder / CHECKPOINT
    return int(json.loads(path.read_text()).get("global_step", 0)) if path.is_file() else 0


def table(results: dict[str, Any]) -> str:
    """A plain-text table: the overall metrics, then one line per task where the task has several."""
    metrics = results["metrics"]
    width = max(map(len, metrics), default=10)
    skipped = (results.get("skipped") or {}).get("problems")
    lines = [results.get("header") or f"{results['task']}: {results['problems']} problems, {results['samples']} samples"
             + (f" ({skipped} skipped: too long for the context)" if skipped else "")]
    lines += [f"  {k:<{width}}  {v:8.4f}" + ("  <- headline" if k == results.get("headline") else "")
              for k, v in metrics.items()]
    per_task = results.get("per_task") or {}
    if per_task:
        cols = results.get("per_task_columns") or [c for c in next(iter(per_task.values())) if c != "examples"]
        name_w = max(map(len, per_task))
        widths = [max(10, len(c)) for c in cols]
        lines.append(f"  {'task':<{name_w}}  {'examples':>8}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths)))
        for name, row in per_task.items():
            cells = "  ".join(f"{row[c]:>{w}.4f}" if c in row else f"{'-':>{w}}" for c, w in zip(cols, widths))
            lines.append(f"  {name:<{name_w}}  {row['examples']:>8}  " + cells)
    return "\n".join(lines)
