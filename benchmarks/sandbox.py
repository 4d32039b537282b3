"""Sandbox throughput on HumanEval: the canonical solutions repeated (the 164 x 64 = 10,496 programs of a full
evaluation by default) plus some failing programs; every canonical solution must pass.

    python benchmarks/sandbox.py                          # 164 x 64 canonical + 1,312 failing, 2 workers
    python benchmarks/sandbox.py --repeats 4 --workers 2  # a quick look
    python benchmarks/sandbox.py --isolation unshare      # the fallback without bubblewrap (root)

Reports wall time, programs per second, and CPU per program (fork servers + programs, and this process).
The machine may be shared: the 1-minute load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nca.evaluation.humaneval import job, load_problems  # noqa: E402
from nca.evaluation.sandbox import ISOLATIONS, Limits, Sandbox, resolve_isolation  # noqa: E402

DEFAULT_PROBLEMS = "/work/shared/data/humaneval/HumanEval.jsonl.gz"
# Fast failures of the kinds a model produces (each program still gets its own process).
FAILING = ("    return None\n", "    raise ValueError('no idea')\n", "    import sys\n    sys.exit(0)\n",
           "    return undefined_name\n", "    pass\n  oops\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default=DEFAULT_PROBLEMS, help="HumanEval.jsonl.gz")
    parser.add_argument("--repeats", type=int, default=64, help="copies of each canonical solution")
    parser.add_argument("--failing", type=int, default=8, help="failing programs per problem")
    parser.add_argument("--timeouts", type=int, default=4, help="infinite loops in all (each costs the timeout)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--isolation", choices=ISOLATIONS, default="auto", help="namespaces: auto = bwrap, else unshare")
    args = parser.parse_args(argv)

    problems = load_problems(args.problems)
    jobs, expected = [], []
    for n, problem in enumerate(problems.values()):
        jobs += [job(problem, problem["canonical_solution"])] * args.repeats
        expected += [True] * args.repeats
        jobs += [job(problem, FAILING[(n + k) % len(FAILING)]) for k in range(args.failing)]
        expected += [False] * args.failing
    loop = next(iter(problems.values()))
    jobs += [job(loop, "    while True:\n        pass\n")] * args.timeouts
    expected += [False] * args.timeouts

    isolation = resolve_isolation(args.isolation)
    print(f"isolation: {isolation}, workers: {args.workers}, programs: {len(jobs)} "
          f"({len(problems)} x {args.repeats} canonical, {len(problems) * args.failing} failing, "
          f"{args.timeouts} timeouts); load before: {os.getloadavg()[0]:.1f}", flush=True)
    host_before = os.times()
    with Sandbox(args.workers, Limits(timeout=args.timeout), isolation) as sandbox:
        started = time.perf_counter()
        results = sandbox.run_many(jobs)
        wall = time.perf_counter() - started
        sandbox_cpu = sandbox.cpu_seconds
    host = os.times()
    host_cpu = host.user + host.system - host_before.user - host_before.system
    wrong = [(n, r) for n, (r, want) in enumerate(zip(results, expected)) if r.passed != want]
    for n, result in wrong[:10]:
        print(f"  unexpected: job {n}: {result}")
    print(f"wall {wall:.1f} s, {len(jobs) / wall:.1f} programs/s, {1000 * wall / len(jobs):.2f} ms wall per program")
    print(f"CPU per program: {1000 * sandbox_cpu / len(jobs):.2f} ms in the sandboxes, "
          f"{1000 * host_cpu / len(jobs):.2f} ms in this process; load after: {os.getloadavg()[0]:.1f}")
    print(f"verdicts as expected: {len(jobs) - len(wrong)}/{len(jobs)}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
