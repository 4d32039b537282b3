"""``nca evaluate``: stage-3 benchmarks of a checkpoint (docs/paper.md §7), resumable, in a folder of its own.

    nca evaluate --ckpt runs/stage3/stage3-gsm8k/checkpoints/last.ckpt --task gsm8k --data data/gsm8k
    nca evaluate --ckpt CKPT --task humaneval --data HumanEval.jsonl.gz
    nca evaluate --ckpt CKPT --task bbl --data bbl24_task_json.tar.xz [--mode logprob]
    nca evaluate --ckpt CKPT --task perplexity [--data corpus.jsonl]
    nca evaluate --config eval.yaml        # any option from a file; --print_config shows them all

A typed function parsed by jsonargparse, as the other verbs. The defaults of n, temperature, top_p and
max_new_tokens are the paper's per task (each task class's ``paper``, behind ``nca.evaluation.task.Task``).
``--stage generate`` only writes completions (on the GPU box), ``--stage score`` only scores them (the same
command elsewhere; the checkpoint is not read and neither Lightning nor torch is imported); the default does
both. Rerunning a command continues its evaluation; other settings in the same folder are refused. Every
check (the checkpoint is a text model, the tokenizer, the data, the sandbox) runs before anything is written.
See ``nca.evaluation.runner`` for the folder's files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional


from nca.cli import parsing
from nca.cli.errors import UsageError

# Known user errors of the checks before any work: one line each (nca.cli prints UsageError).
CHECKED = (ValueError, FileNotFoundError, RuntimeError)


def main(argv: list[str]) -> int:
    return parsing.run(evaluate, argv, "nca evaluate")


def evaluate(ckpt: str, task: Literal["gsm8k", "humaneval", "bbl", "perplexity"], data: Optional[str] = None,
             tokenizer: Optional[str] = None, n: Optional[int] = None, temperature: Optional[float] = None,
             top_p: Optional[float] = None, max_new_tokens: Optional[int] = None, limit: Optional[int] = None,
             seed: int = 0, out: Optional[str] = None, stage: Literal["all", "generate", "score"] = "all",
             batch_size: int = 64, device: Optional[str] = None, exemplars: int = 3,
             exemplar_split: Literal["train", "test"] = "train", prompt_style: Literal["paper", "release"] = "paper",
             score_truncated: bool = False, mode: Literal["generate", "logprob"] = "generate",
             chance: Literal["example", "first"] = "example",
             task_list: Literal["reference", "english", "all"] = "reference", tasks: Optional[list[str]] = None,
             shuffle_choices: Optional[int] = None, max_per_task: int = 350, min_train_examples: int = 100,
             stops: Literal["reference", "codex", "bigcode"] = "reference", workers: int = 2, timeout: float = 3.0,
             sandbox: Literal["auto", "bwrap", "unshare", "none"] = "auto", cache_dir: Optional[str] = None) -> int:
    """Evaluate a checkpoint on a stage-3 benchmark into a resumable folder (results.json, samples.jsonl).

    Args:
        ckpt: a Lightning .ckpt, sharded FSDP directory or litgpt checkpoint of a text model (stage 2 or 3).
        task: the benchmark: gsm8k, humaneval, bbl, or perplexity (loss on a corpus).
        data: gsm8k: a directory with {train,test}.jsonl or a HF name (default openai/gsm8k); humaneval:
            HumanEval.jsonl.gz or 'openai_humaneval' (HF); bbl: the task JSON .tar.xz or directory; perplexity:
            a corpus (default: the checkpoint's own validation split).
        tokenizer: a tokenizer directory or name, instead of the one the checkpoint records.
        n: samples per problem (default: the paper's, per task; bbl --mode logprob makes one choice).
        temperature: sampling temperature (default: the paper's, per task).
        top_p: nucleus sampling mass (default: the paper's, per task).
        max_new_tokens: most new tokens per sample (default: the paper's, per task; cut at the context).
        limit: the first LIMIT problems (bbl: per task; perplexity: batches).
        seed: sample j of problem i is a pure function of (seed, i, j); also draws the gsm8k exemplars.
        out: the evaluation folder (default runs/eval/<the checkpoint's run path>/<checkpoint>-<task>).
        stage: all, generate (write completions only, e.g. on the GPU box) or score (score them only).
        batch_size: rows decoded (or scored, for perplexity) at once.
        device: where the model runs (default cuda when available, else cpu).
        exemplars: gsm8k: exemplars in each prompt (paper 3).
        exemplar_split: gsm8k: train, or test (the reference's exemplars, drawn from the scored split).
        prompt_style: gsm8k: paper, or release (the reference's prompt, ending after the question line).
        score_truncated: gsm8k: also score replies without end-of-text (the reference did).
        mode: bbl: generate (sampled replies, exact match) or logprob (the most likely choice).
        chance: bbl: 1/C of the paper's normalisation from each example (example) or a task's first (first,
            the reference); the chance-corrected headline always uses each example's own C.
        task_list: bbl: reference (the reference's 18 English tasks), english (the 20 English ones) or all (24).
        tasks: bbl: task names, instead of task_list (e.g. --tasks "[winowhy, strategyqa]").
        shuffle_choices: bbl: a seed that shows every example's choices in a seeded order (default: file order).
        max_per_task: bbl: validation examples scored per task (paper 350).
        min_train_examples: bbl: tasks with fewer training examples are left out (the reference: 100).
        stops: humaneval: stop strings, the paper's (reference) or with the Codex / bigcode additions.
        workers: humaneval: programs executed at once.
        timeout: humaneval: wall-clock seconds per program (paper 3).
        sandbox: humaneval: namespaces for the programs: auto (bubblewrap, else unshare; refused where neither
            works), bwrap, unshare, or none (no namespaces: an explicit opt-in, recorded in results.json).
        cache_dir: perplexity: token cache of the text DataModule (default: the checkpoint's).
    """
    from nca.evaluation.records import SettingsMismatch

    try:
        if limit is not None and limit < 1:
            raise ValueError("--limit must be >= 1")
        if workers < 1 or timeout <= 0 or batch_size < 1:
            raise ValueError("--workers and --batch_size must be >= 1 and --timeout > 0")
        chosen = make_task(task, data, tokenizer, limit, seed, batch_size, exemplars, exemplar_split, prompt_style,
                           score_truncated, mode, chance, task_list, tasks, shuffle_choices, max_per_task,
                           min_train_examples, stops, workers, timeout, sandbox, cache_dir)
        folder = evaluation_folder(out, ckpt, task)
    except (*CHECKED, SettingsMismatch) as err:
        raise UsageError(str(err)) from err
    sampling = dict(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    if chosen.paper is None:
        if any(v is not None for v in sampling.values()) or stage != "all":
            raise UsageError("--task perplexity samples nothing: leave --n, --temperature, --top_p, "
                             "--max_new_tokens and --stage unset")
        return run_perplexity(chosen, ckpt, folder, device)
    return run_sampled(chosen, ckpt, folder, stage, sampling, tokenizer, seed, device, batch_size)


def make_task(task, data, tokenizer, limit, seed, batch_size, exemplars, exemplar_split, prompt_style,
              score_truncated, mode, chance, task_list, tasks, shuffle_choices, max_per_task, min_train_examples,
              stops, workers, timeout, sandbox, cache_dir):
    """The task object (``nca.evaluation.task.Task``) for the command-line options."""
    if task == "perplexity":
        from nca.evaluation.perplexity import PerplexityTask

        return PerplexityTask(data, tokenizer, cache_dir, limit, batch_size)
    if task == "gsm8k":
        from nca.evaluation.gsm8k import GSM8KTask

        return GSM8KTask(data or "openai/gsm8k", exemplars, exemplar_split, prompt_style, score_truncated, seed, limit)
    if data is None:
        raise ValueError(f"--task {task} needs --data: "
                         + ("HumanEval.jsonl.gz or 'openai_humaneval'" if task == "humaneval"
                            else "the BIG-bench task JSON (.tar.xz or directory)"))
    if task == "humaneval":
        from nca.evaluation.humaneval_task import HumanEvalTask

        return HumanEvalTask(data, stops, workers, timeout, limit, sandbox)
    from nca.evaluation.bbl import BBLTask

    return BBLTask(data, mode, chance, tasks, max_per_task, min_train_examples=min_train_examples, limit=limit,
                   task_list_name=task_list, shuffle_choices=shuffle_choices)


def evaluation_folder(out: Optional[str], ckpt: str, task: str) -> Path:
    """``--out``, or the default folder of this checkpoint and task; an evaluation of this very checkpoint in
    the folder an earlier version chose (``runs/eval/<run>-<checkpoint>-<task>``) is continued there."""
    from nca.evaluation.records import SETTINGS
    from nca.evaluation.runner import check_folder, default_folder, legacy_folder

    if out is not None:
        return check_folder(out)
    folder, legacy = default_folder(ckpt, task), legacy_folder(ckpt, task)
    if not folder.exists() and (legacy / SETTINGS).is_file():
        recorded = json.loads((legacy / SETTINGS).read_text()).get("checkpoint")
        if recorded == str(Path(ckpt).expanduser().resolve()):
            print(f"continuing the evaluation of {ckpt} in {legacy} (the folder of an earlier version)",
                  file=sys.stderr)
            return check_folder(legacy)
    return check_folder(folder)


def text_checkpoint(ckpt: str, task: str, tokenizer: Optional[str]):
    """(Provenance, the tokenizer to use, the training step) of a checkpoint that a text task can read, from its
    recorded metadata alone (``nca.lit_modules.provenance``, the one reader); one line naming the fix otherwise."""
    from nca.lit_modules.checkpoint import read_meta
    from nca.lit_modules.provenance import provenance

    if not Path(ckpt).expanduser().exists():
        raise UsageError(f"checkpoint {ckpt} does not exist")
    try:
        meta = read_meta(ckpt)
    except ValueError as err:
        raise UsageError(str(err)) from err
    recorded = provenance(meta.get("data"), meta.get("hyper_parameters"))
    if recorded.is_stage1:
        raise UsageError(f"{ckpt} was trained on {recorded.describe()}: --task {task} needs a text model (a stage-2 "
                         "or stage-3 checkpoint, e.g. runs/from_nca/stage2-owt/checkpoints/last.ckpt)")
    spec = tokenizer or recorded.tokenizer
    if spec is None and task != "perplexity":
        raise UsageError(f"{ckpt} records no text tokenizer ({recorded.describe()}): give --tokenizer, the one it "
                         "was trained with")
    if spec is not None and recorded.vocab_size is not None:
        from nca.datamodules.tokenizers import load_tokenizer

        try:
            ids = load_tokenizer(spec).vocab_size
        except (OSError, ValueError, RuntimeError) as err:
            raise UsageError(f"tokenizer {spec!r}: {err}") from err
        if ids > recorded.vocab_size:
            raise UsageError(f"tokenizer {spec} has {ids} ids but the model was trained on {recorded.vocab_size}: "
                             "give the tokenizer it was trained with (--tokenizer)")
    return recorded, spec, int(meta.get("global_step", 0))


def device_of(device: Optional[str]) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def run_sampled(task, ckpt: str, folder: Path, stage: str, sampling: dict, tokenizer: Optional[str], seed: int,
                device: Optional[str], batch_size: int) -> int:
    """Check everything, then generate and/or score (``nca.evaluation.runner``)."""
    from nca.evaluation import runner
    from nca.evaluation.records import SettingsMismatch, compare_settings, record_settings

    if task.decoding == "choose" and sampling["n"] not in (None, 1):
        raise UsageError("--mode logprob takes one choice per problem: leave --n unset")
    _, spec, step = text_checkpoint(ckpt, task.name, tokenizer) if stage != "score" else (None, tokenizer, 0)
    try:
        gen = task.paper.override(**sampling)
        problems = task.problems()  # reads and checks the data before any model is loaded
        if stage != "generate":
            task.ready_to_score()
        settings = {"task": task.name, "checkpoint": str(Path(ckpt).expanduser().resolve()), "tokenizer": tokenizer,
                    "seed": seed, "n": gen.n, "temperature": gen.temperature, "top_p": gen.top_p,
                    "max_new_tokens": gen.max_new_tokens, **task.settings()}
        compare_settings(folder, settings)
    except (*CHECKED, SettingsMismatch) as err:
        raise UsageError(str(err)) from err
    print(f"{task.name}: {len(problems)} problems x {gen.n} samples -> {folder}")
    for line in task.notes():
        print(line)
    if stage in ("all", "generate"):
        loaded, text_tokenizer = load(ckpt, spec, device)
        record_settings(folder, settings)
        runner.record_step(folder, step)
        runner.generate(task, problems, folder, loaded.model, text_tokenizer, seed=seed, batch_size=batch_size,
                        n=gen.n, temperature=gen.temperature, top_p=gen.top_p, max_new_tokens=gen.max_new_tokens)
    if stage in ("all", "score"):
        record_settings(folder, settings)
        scored = runner.score(task, problems, folder, gen.n)
        runner.summarize(task, problems, scored, folder, settings, gen.n, step=runner.recorded_step(folder))
    return 0


def load(ckpt: str, spec: str, device: Optional[str]):
    """(LoadedModel, tokenizer) for generation."""
    import torch

    from nca.datamodules.tokenizers import load_tokenizer
    from nca.lit_modules.checkpoint import load_model

    where = device_of(device)
    dtype = torch.bfloat16 if where.startswith("cuda") and torch.cuda.is_bf16_supported() else None
    loaded = load_model(ckpt, device=where, dtype=dtype)
    tokenizer = load_tokenizer(spec)
    if tokenizer.vocab_size > loaded.config.padded_vocab_size:
        raise UsageError(f"tokenizer {spec} has {tokenizer.vocab_size} ids but the model only "
                         f"{loaded.config.padded_vocab_size} rows: give the model's own tokenizer")
    return loaded, tokenizer


def run_perplexity(task, ckpt: str, folder: Path, device: Optional[str]) -> int:
    """Loss / perplexity on the checkpoint's validation split or ``--data``; a finished folder is shown again."""
    from tqdm.auto import tqdm

    from nca.evaluation.records import SettingsMismatch, compare_settings, record_settings, write_json
    from nca.evaluation.runner import RESULTS, TENSORBOARD, log_scalars, table
    from nca.lit_modules.checkpoint import load_model

    recorded, _, step = text_checkpoint(ckpt, task.name, task.tokenizer)
    if task.data is None and recorded.kind != "text":
        raise UsageError(f"{ckpt} was trained on {recorded.describe()}, not text: give a corpus with --data")
    settings = {"task": task.name, "checkpoint": str(Path(ckpt).expanduser().resolve()), **task.settings()}
    try:
        compare_settings(folder, settings)
    except SettingsMismatch as err:
        raise UsageError(str(err)) from err
    if (folder / RESULTS).is_file():  # the same measurement again: show it
        print(table(json.loads((folder / RESULTS).read_text())))
        return 0
    loaded = load_model(ckpt, device=device_of(device))
    try:
        with tqdm(total=task.limit, desc="perplexity", unit="batch") as bar:
            measured = task.measure(loaded, progress=bar.update)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    header = f"perplexity: {measured['tokens']} target tokens in {measured['batches']} batches ({measured['cache']})"
    results = {"task": "perplexity", "settings": settings, "header": header, **measured}
    record_settings(folder, settings)
    write_json(folder / RESULTS, results)
    log_scalars(folder / TENSORBOARD, "perplexity", results["metrics"], step)
    print(table(results))
    return 0
