"""``nca replicate``: the paper's comparison (docs/paper.md §8) with seeds, controls, confidence intervals and a report.

    nca replicate --config configs/replicate/cpu.yaml --out studies/cpu [--jobs 2]
    nca replicate --config configs/replicate/ladder.yaml --plan      # every run's tokens, FLOPs, GPU-hours; runs nothing
    nca replicate --config configs/replicate/gpu.yaml --out /scratch/study --launcher slurm --slurm.partition gpu

Configs compose (``--config a.yaml --config b.yaml``, later wins) and any key can be overridden
(``--seeds '[0,1,2,3]'``, ``--stage2.lr 1e-3``). The call is idempotent: finished runs are skipped, a started
run continues from its last checkpoint, and a run whose settings changed is refused before anything starts.
The report (``report.md``, ``report.json``, PNGs) is written into ``--out`` once every run is done.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from jsonargparse import ActionConfigFile, ActionYesNo

from nca.cli import parsing

from nca.replication.config import Study, check_study, study_from_dict
from nca.replication.launch import SlurmOptions, launch, pending

STUDY_FILE = "study.json"


def parser() -> parsing.Parser:
    """The verb's parser: the ``Study`` dataclass (help from its docstrings) plus how to run it."""
    p = parsing.Parser(prog="nca replicate", description=__doc__.split("\n\n")[0], default_meta=False)
    p.add_argument("--config", action=ActionConfigFile, help="a replication YAML (configs/replicate/*.yaml)")
    p.add_class_arguments(Study, None)
    p.add_argument("--out", type=str, default=None, help="the study folder (runs, vocabulary, report); "
                   "required unless --plan")
    p.add_argument("--plan", action=ActionYesNo, default=False, help="print every run with its tokens, FLOPs and GPU-hours "
                   "and the recipe beside the paper's, from the config alone (no data, no vocabulary); start nothing")
    p.add_argument("--jobs", type=int, default=1, help="local runs at once (2 cores: 2 jobs of 1 thread)")
    p.add_argument("--threads_per_job", type=int, default=1, help="OMP threads of each run")
    p.add_argument("--launcher", type=str, default="local", help="local, or slurm (submitit; see --slurm.*)")
    p.add_class_arguments(SlurmOptions, "slurm")
    p.add_argument("--dry_run", action=ActionYesNo, default=False, help="print the runs and their status (and "
                   "commands), start nothing")
    return p


def main(argv: list[str]) -> int:
    args = parsing.parse(parser(), argv, "nca replicate")
    values = args.as_dict()
    study = study_from_dict(values)
    try:
        check_study(study)
        from nca.replication.plan import plan

        if args.plan:
            from nca.replication.recipe import plan_lines

            print("\n".join(plan_lines(study, plan(study, "(vocabulary not built)"))))
            return 0
        if args.out is None:
            raise ValueError("--out is required (the study folder), unless --plan")
        if args.launcher not in ("local", "slurm") or args.jobs < 1 or args.threads_per_job < 1:
            raise ValueError(f"--launcher must be local or slurm and --jobs/--threads_per_job >= 1, got "
                             f"{args.launcher!r}, {args.jobs}, {args.threads_per_job}")
        from nca.replication.state import check_unchanged, status
        from nca.replication.vocab import prepare_vocabulary

        out = Path(args.out).expanduser().resolve()
        if args.dry_run:
            runs = plan(study, "(vocabulary not built)")
            for run in runs:
                print(f"{status(run, out).value:8} {run.id}: {' '.join(run.command(out)[3:])}")
            return 0
        out.mkdir(parents=True, exist_ok=True)
        vocab_dir, vocab_hash = prepare_vocabulary(study, out)
        runs = plan(study, vocab_hash)
        check_unchanged(runs, out)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"nca replicate: {err}", file=sys.stderr)
        return 2
    todo = pending(runs, out)
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run -> {out}")
    start = time.time()
    failed = launch(runs, out, args.launcher, args.jobs, args.threads_per_job, SlurmOptions(**values["slurm"]))
    if failed:
        print(f"nca replicate: {len(failed)} run(s) failed: {', '.join(failed)}; fix and call again "
              "(finished runs are kept)", file=sys.stderr)
        return 1
    from nca.replication.results import build

    paths = build(study, runs, out, vocab_dir)
    (out / STUDY_FILE).write_text(json.dumps({k: v for k, v in values.items() if k in Study.__dataclass_fields__},
                                             indent=2, default=str) + "\n")
    print(f"runs took {time.time() - start:.0f} s; report: {', '.join(str(p) for p in paths[:2])}")
    return 0
