"""``nca evaluate``: stage-3 benchmarks of a checkpoint (docs/paper.md §7), resumable, in a folder of its own.

    nca evaluate --ckpt runs/stage3-gsm8k/checkpoints/last.ckpt --task gsm8k --data data/gsm8k
    nca evaluate --ckpt CKPT --task humaneval --data HumanEval.jsonl.gz
    nca evaluate --ckpt CKPT --task bbl --data bbl24_task_json.tar.xz [--mode logprob]
    nca evaluate --ckpt CKPT --task perplexity [--data corpus.jsonl]

Defaults are the paper's settings per task (``PAPER``). ``--stage generate`` only writes completions (on the
GPU box), ``--stage score`` only scores them (the same command elsewhere; the checkpoint is not read); the
default does both. Rerunning a command continues its evaluation; other settings in the same folder are
refused. See ``nca.evaluation.runner`` for the folder's files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# task -> (n, temperature, top_p, max_new_tokens): docs/paper.md §7.1-7.3
PAPER: dict[str, tuple[int, float, float, int]] = {
    "gsm8k": (32, 0.6, 1.0, 250),
    "bbl": (64, 0.4, 0.95, 35),
    "humaneval": (64, 0.4, 0.95, 500),
}
TASKS = ("gsm8k", "humaneval", "bbl", "perplexity")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nca evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="Lightning .ckpt, sharded FSDP directory or litgpt checkpoint")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", help="gsm8k: directory with {train,test}.jsonl or a HF name (default openai/gsm8k); "
                                  "humaneval: HumanEval.jsonl.gz or 'openai_humaneval' (HF; required); "
                                  "bbl: task JSON .tar.xz or directory (required); perplexity: a corpus "
                                  "(default: the checkpoint's validation split)")
    p.add_argument("--tokenizer", help="tokenizer spec (default: the one the checkpoint was trained with)")
    p.add_argument("--n", type=int, help="samples per problem (default: the paper's, per task)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top_p", type=float)
    p.add_argument("--max_new_tokens", type=int)
    p.add_argument("--limit", type=int, help="first LIMIT problems (bbl: per task; perplexity: batches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="evaluation folder (default runs/eval/<checkpoint>-<task>)")
    p.add_argument("--stage", choices=("all", "generate", "score"), default="all")
    p.add_argument("--batch_size", type=int, default=64, help="rows decoded (or scored for perplexity) at once")
    p.add_argument("--device", default=None, help="default cuda when available, else cpu")
    g = p.add_argument_group("gsm8k")
    g.add_argument("--exemplars", type=int, default=3)
    g.add_argument("--exemplar_split", choices=("train", "test"), default="train",
                   help="test = the reference release's exemplars (from the scored split)")
    g.add_argument("--prompt_style", choices=("paper", "release"), default="paper",
                   help="release = the reference's prompt, ending after the question line")
    g.add_argument("--score_truncated", action="store_true",
                   help="score replies without end-of-text too (the reference release)")
    b = p.add_argument_group("bbl")
    b.add_argument("--mode", choices=("generate", "logprob"), default="generate")
    b.add_argument("--chance", choices=("example", "first"), default="example",
                   help="first = chance from a task's first example (the reference release)")
    b.add_argument("--tasks", nargs="+", help="BBL task names (default: the English tasks)")
    b.add_argument("--max_per_task", type=int, default=350)
    b.add_argument("--min_train_examples", type=int, default=100, help="tasks with fewer are left out (the reference)")
    h = p.add_argument_group("humaneval")
    h.add_argument("--stops", choices=("reference", "codex", "bigcode"), default="reference",
                   help="stop strings: the paper's reference list, or with the Codex / bigcode additions")
    h.add_argument("--workers", type=int, default=2, help="programs executed at once")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds per program")
    t = p.add_argument_group("perplexity")
    t.add_argument("--cache_dir", help="token cache of the text DataModule (default: the checkpoint's)")
    return p


def make_task(args: argparse.Namespace):
    if args.task == "gsm8k":
        from nca.evaluation.gsm8k import GSM8KTask

        return GSM8KTask(args.data or "openai/gsm8k", args.exemplars, args.exemplar_split, args.prompt_style,
                         args.score_truncated, args.seed, args.limit)
    if args.data is None:
        raise ValueError(f"--task {args.task} needs --data: "
                         + ("HumanEval.jsonl.gz or 'openai_humaneval'" if args.task == "humaneval"
                            else "the BIG-bench task JSON (.tar.xz or directory)"))
    if args.task == "humaneval":
        from nca.evaluation.humaneval_task import HumanEvalTask

        return HumanEvalTask(args.data, args.stops, args.workers, args.timeout, args.limit)
    from nca.evaluation.bbl import BBLTask

    return BBLTask(args.data, args.mode, args.chance, args.tasks, args.max_per_task,
                   min_train_examples=args.min_train_examples, limit=args.limit)


def sampling(args: argparse.Namespace) -> dict[str, Any]:
    n, temperature, top_p, max_new = PAPER[args.task]
    if args.task == "bbl" and args.mode == "logprob":
        n = 1  # one deterministic choice per problem
    out = {"n": args.n or n, "temperature": args.temperature if args.temperature is not None else temperature,
           "top_p": args.top_p if args.top_p is not None else top_p, "max_new_tokens": args.max_new_tokens or max_new}
    if out["n"] < 1 or out["max_new_tokens"] < 1 or out["temperature"] < 0 or not 0 < out["top_p"] <= 1:
        raise ValueError(f"need n >= 1, max_new_tokens >= 1, temperature >= 0 and 0 < top_p <= 1; got {out}")
    if args.task == "bbl" and args.mode == "logprob" and out["n"] != 1:
        raise ValueError("--mode logprob takes one choice per problem: leave --n unset")
    return out


def device_of(args: argparse.Namespace) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def load(args: argparse.Namespace):
    """(LoadedModel, tokenizer) for generation."""
    import torch

    from nca.datamodules.tokenizers import load_tokenizer
    from nca.lit_modules.checkpoint import load_model

    device = device_of(args)
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else None
    loaded = load_model(args.ckpt, device=device, dtype=dtype)
    spec = args.tokenizer or loaded.tokenizer_spec
    if spec is None:
        raise ValueError(f"{args.ckpt} records no text tokenizer: give --tokenizer (e.g. gpt2 or a directory)")
    tokenizer = load_tokenizer(spec)
    if tokenizer.vocab_size > loaded.config.padded_vocab_size:
        raise ValueError(f"tokenizer {spec} has {tokenizer.vocab_size} ids but the model only "
                         f"{loaded.config.padded_vocab_size} rows: give the model's own tokenizer")
    return loaded, tokenizer


def checkpoint_step(path: str) -> int:
    from nca.lit_modules.checkpoint import read_meta

    return int(read_meta(path).get("global_step", 0)) if Path(path).exists() else 0


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from nca.evaluation.records import SettingsMismatch, check_settings
    from nca.evaluation.runner import check_folder, default_folder

    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit must be >= 1")
        folder = check_folder(args.out or default_folder(args.ckpt, args.task))
        if args.task == "perplexity":
            return perplexity(args, folder)
        if args.stage != "score" and not Path(args.ckpt).expanduser().exists():
            raise FileNotFoundError(f"checkpoint {args.ckpt} does not exist")
        task, gen = make_task(args), sampling(args)
        problems = task.problems()  # reads and checks the data before any model is loaded
        settings = {"task": args.task, "checkpoint": str(Path(args.ckpt).expanduser().resolve()),
                    "tokenizer": args.tokenizer, "seed": args.seed, **gen, **task.settings()}
        check_settings(folder, settings)
    except (ValueError, FileNotFoundError, SettingsMismatch) as err:
        print(f"nca evaluate: {err}", file=sys.stderr)
        return 2
    from nca.evaluation import runner

    print(f"{args.task}: {len(problems)} problems x {gen['n']} samples -> {folder}")
    if getattr(task, "used_tasks", None):
        print(f"tasks ({len(task.used_tasks)}): {', '.join(task.used_tasks)}")
    if args.stage in ("all", "generate"):
        loaded, tokenizer = load(args)
        runner.generate(task, problems, folder, loaded.model, tokenizer, seed=args.seed,
                        batch_size=args.batch_size, **gen)
    if args.stage in ("all", "score"):
        scored = runner.score(task, problems, folder, gen["n"])
        runner.summarize(task, problems, scored, folder, settings, gen["n"], step=checkpoint_step(args.ckpt))
    return 0


def perplexity(args: argparse.Namespace, folder: Path) -> int:
    """Loss / perplexity on the checkpoint's validation split or ``--data``; a finished folder is shown again."""
    import json

    from tqdm.auto import tqdm

    from nca.evaluation.perplexity import perplexity as measure
    from nca.evaluation.perplexity import text_datamodule
    from nca.evaluation.records import check_settings, write_json
    from nca.evaluation.runner import RESULTS, TENSORBOARD, log_scalars, table
    from nca.lit_modules.checkpoint import load_model

    loaded = load_model(args.ckpt, device=device_of(args))
    dm = text_datamodule(loaded.provenance, args.data, args.tokenizer, args.cache_dir, args.batch_size)
    if dm.vocab_size > loaded.config.padded_vocab_size:
        raise ValueError(f"the corpus tokenizer has {dm.vocab_size} ids but the model only "
                         f"{loaded.config.padded_vocab_size} rows: give the model's own --tokenizer")
    settings = {"task": "perplexity", "checkpoint": str(Path(args.ckpt).expanduser().resolve()), "data": args.data,
                "tokenizer": args.tokenizer, "limit": args.limit, "cache_dir": args.cache_dir}
    check_settings(folder, settings)
    if (folder / RESULTS).is_file():  # the same measurement again: show it
        print(table(json.loads((folder / RESULTS).read_text())))
        return 0
    with tqdm(total=args.limit, desc="perplexity", unit="batch") as bar:
        measured = measure(loaded.model, dm, args.limit, progress=bar.update)
    header = f"perplexity: {measured['tokens']} target tokens in {measured['batches']} batches ({measured['cache']})"
    results = {"task": "perplexity", "settings": settings, "header": header, **measured}
    write_json(folder / RESULTS, results)
    log_scalars(folder / TENSORBOARD, "perplexity", results["metrics"], checkpoint_step(args.ckpt))
    print(table(results))
    return 0
