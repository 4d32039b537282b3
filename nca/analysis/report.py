"""The replication report: final validation perplexity per arm with 95% intervals, paired differences between
arms with the minimal detectable effect and p values (Holm-adjusted over the report's comparisons), paired difference curves along training (band, crossover, area), the
paper's convergence speed-up, the paper's numbers beside ours (direction only) and one verdict line per claim.
Writes ``report.json``, ``report.md`` and PNGs (``nca.analysis.report_figures``).

Input: ``curves[key][arm][seed] = (steps, values)`` of ``val/ppl`` (``nca.analysis.curves.load_scalars``), where a
key is a stage-2 domain (``owt``) or, in a ladder, ``<rung>/<domain>``; and a list of ``(method, baseline)``
comparisons. Nothing here depends on how the runs were made.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from nca.analysis.curves import speedup
from nca.analysis.stats import geometric_interval, holm, paired_curve, paired_difference, verdict

Curve = tuple[np.ndarray, np.ndarray]
# docs/paper.md §8 (1.6B model): final validation perplexity and convergence speed-up over scratch.
PAPER_PPL = {
    "owt": {"scratch": 14.66, "c4": 14.69, "dyck": 14.35, "nca": 13.82, "c4_10x": 14.61, "c4_noreinit": 14.33},
    "math": {"scratch": 8.11, "c4": 8.14, "dyck": 7.91, "nca": 7.70},
    "code": {"scratch": 1.92, "c4": 1.88, "dyck": 1.85, "nca": 1.84},
}
PAPER_SPEEDUP = {"owt": {"nca": 1.49, "dyck": 1.25}, "math": {"nca": 1.41, "dyck": 1.26},
                 "code": {"nca": 1.62, "dyck": 1.54}}
DOMAIN_NAMES = {"owt": "web text", "math": "math", "code": "code"}


def split_key(key: str) -> tuple[str, str]:
    """'160m/owt' -> ('160m', 'owt'); 'owt' -> ('', 'owt')."""
    rung, _, domain = key.rpartition("/")
    return rung, domain


def key_name(key: str) -> str:
    rung, domain = split_key(key)
    return f"{rung + ': ' if rung else ''}{DOMAIN_NAMES.get(domain, domain)}"


def paper_arm(label: str) -> str | None:
    """Our arm label -> the paper's column (nca-50plus -> nca); ablations, controls and other alphabets have no
    paper number."""
    if label.startswith("nca-"):
        return None if "reinit" in label or re.search(r"-n\d+$", label) else "nca"
    return label


def _paper_relative(domain: str, method: str, baseline: str) -> float | None:
    table = PAPER_PPL.get(domain, {})
    m, b = paper_arm(method), paper_arm(baseline)
    if m in table and b in table:
        return 100.0 * (table[m] - table[b]) / table[b]
    return None


def direction(ours, paper_percent: float | None) -> str:
    """'agrees' / 'opposite' when our interval excludes zero, 'inconclusive' when it crosses it."""
    if paper_percent is None:
        return "no paper number"
    if ours.crosses_zero:
        return "inconclusive (interval crosses zero)"
    return "agrees" if (ours.mean < 0) == (paper_percent < 0) else "opposite"


def _speedups(arms: dict, baseline: str, domain: str) -> dict:
    out = {}
    for arm, seeds in arms.items():
        if arm == baseline:
            continue
        common = sorted(set(seeds) & set(arms[baseline]))
        ups = {s: speedup(arms[baseline][s], seeds[s]) for s in common}
        finite = [u for u in ups.values() if u is not None and math.isfinite(u) and u > 0]
        out[arm] = {
            "per_seed": {str(s): (None if u is None else (u if math.isfinite(u) else "inf")) for s, u in ups.items()},
            "reached": sum(u is not None for u in ups.values()), "seeds": len(common),
            "interval": geometric_interval(finite).as_dict() if finite else None,
            "paper": PAPER_SPEEDUP.get(domain, {}).get(paper_arm(arm) or ""),
        }
    return out


def build_report(curves: dict[str, dict[str, dict[int, Curve]]], comparisons: list[tuple[str, str]],
                 meta: dict | None = None, baseline: str = "scratch") -> dict:
    """Every number of the report as plain JSON-able data."""
    report = {"meta": meta or {}, "tag": "val/ppl", "domains": {}, "verdicts": []}
    made: list[tuple[dict, str, object]] = []   # (its row, where, the difference)
    for key, arms in curves.items():
        domain = split_key(key)[1]
        finals = {arm: {seed: float(c[1][-1]) for seed, c in seeds.items()} for arm, seeds in arms.items()}
        section = {"final_ppl": {}, "differences": [], "curves": [], "speedup": {}}
        for arm, values in finals.items():
            interval = geometric_interval([values[s] for s in sorted(values)])
            section["final_ppl"][arm] = {**interval.as_dict(), "values": {str(s): values[s] for s in sorted(values)},
                                         "paper": PAPER_PPL.get(domain, {}).get(paper_arm(arm) or "")}
        for method, base in comparisons:
            if method not in finals or base not in finals:
                continue
            diff = paired_difference(finals[method], finals[base])
            paper = _paper_relative(domain, method, base)
            row = {"method": method, "baseline": base, **diff.as_dict(), "paper_relative_percent": paper,
                   "direction_vs_paper": direction(diff.relative_percent, paper)}
            section["differences"].append(row)
            made.append((row, key_name(key), diff))
            section["curves"].append({"method": method, "baseline": base,
                                      **paired_curve(arms[method], arms[base]).as_dict()})
        if baseline in arms:
            section["speedup"] = _speedups(arms, baseline, domain)
        report["domains"][key] = section
    # one family: every comparison of the report, over all domains (and rungs)
    adjusted = holm([diff.p_value for *_, diff in made])
    tested = sum(p is not None for p in adjusted)
    for (row, where, diff), p_holm in zip(made, adjusted):
        row["p_holm"] = p_holm
        row["verdict"] = verdict(row["method"], row["baseline"], where, diff,
                                 family=None if p_holm is None else (p_holm, tested))
        report["verdicts"].append(row["verdict"])
    return report


# ------------------------------------------------------------------------------------------------ markdown
def _num(value, spec=".3f") -> str:
    return "n/a" if value is None else (value if isinstance(value, str) else format(value, spec))


def _interval(d: dict | None, spec=".3f", unit="") -> str:
    if d is None:
        return "n/a"
    if d["low"] is None:
        return f"{d['mean']:{spec}}{unit} (n={d['n']})"
    return f"{d['mean']:{spec}}{unit} [{d['low']:{spec}}, {d['high']:{spec}}]"


def _detectable(d: dict | None) -> str:
    if d is None:
        return "n/a (1 seed)"
    seeds = d["seeds_for_observed"]
    return f"{abs(d['percent']):.2f}% ({'>1000' if seeds is None else seeds} seeds for the observed effect)"


def _key_section(key: str, section: dict) -> list[str]:
    lines = ["", f"## {key_name(key)} ({key})", "", f"![curves](curves-{key.replace('/', '-')}.png)", "",
             "### Final validation perplexity", "",
             "Geometric mean over seeds with the t interval of log perplexity (always positive).", "",
             "| arm | seeds | mean [95% interval] | per seed | paper (1.6B) |", "|---|---|---|---|---|"]
    for arm, f in section["final_ppl"].items():
        per_seed = ", ".join(f"{v:.3f}" for v in f["values"].values())
        lines.append(f"| {arm} | {f['n']} | {_interval(f)} | {per_seed} | {_num(f['paper'], '.2f')} |")
    lines += ["", "### Paired differences (method - baseline)", "",
              "Relative change of the final perplexity from the per-seed log ratio (exp(mean) - 1, interval mapped "
              "the same way); the minimal detectable effect is the smallest true change these seeds and this spread "
              "detect with 80% power at the 5% level; p: the paired t test of the log ratio, in brackets adjusted "
              "(Holm) over every comparison of this report.", "",
              "| method - baseline | absolute | relative | minimal detectable effect | p (Holm) | paper relative | "
              "direction vs paper |", "|---|---|---|---|---|---|---|"]
    for d in section["differences"]:
        lines.append(f"| {d['method']} - {d['baseline']} | {_interval(d['absolute'], '+.3f')} | "
                     f"{_interval(d['relative_percent'], '+.2f', '%')} | {_detectable(d['detectable'])} | "
                     f"{_num(d.get('p_value'), '.3g')} ({_num(d.get('p_holm'), '.3g')}) | "
                     f"{_num(d['paper_relative_percent'], '+.1f')}{'%' if d['paper_relative_percent'] is not None else ''} | "
                     f"{d['direction_vs_paper']} |")
    lines += ["", "### Difference along training", "", f"![differences](differences-{key.replace('/', '-')}.png)", "",
              "Paired difference of log perplexity (= validation loss, nats) at every evaluation, negative = the method "
              "ahead. Crossover: the step where the mean difference last changes sign; area: the area between the "
              "curves divided by the steps spanned (the mean difference over training), per seed, with its interval.",
              "", "| method - baseline | pattern | crossover step | final difference (nats) | area / steps (nats) |",
              "|---|---|---|---|---|"]
    for c in section["curves"]:
        final = {"mean": c["mean"][-1], "low": c["low"][-1], "high": c["high"][-1], "n": len(c["seeds"])}
        lines.append(f"| {c['method']} - {c['baseline']} | {c['pattern']} | {_num(c['crossover'], '.0f')} | "
                     f"{_interval(final, '+.4f')} | {_interval(c['area'], '+.4f')} |")
    lines += ["", "### Convergence speed-up over scratch", "",
              "Optimizer steps scratch needs to reach its own final validation perplexity / steps the arm needs to "
              "reach it (linear interpolation between validation points; `nca.analysis.curves.speedup`); geometric "
              "mean of the seeds that reached it.", "",
              "| arm | reached | mean [95% interval] | per seed | paper |", "|---|---|---|---|---|"]
    for arm, s in section["speedup"].items():
        per_seed = ", ".join("never" if v is None else _num(v, ".2f") for v in s["per_seed"].values())
        lines.append(f"| {arm} | {s['reached']}/{s['seeds']} | {_interval(s['interval'], '.2f')} | {per_seed} | "
                     f"{_num(s['paper'], '.2f')} |")
    return lines


def markdown(report: dict, extra_sections: list[str] = (), first_sections: list[str] = ()) -> str:
    meta = report["meta"]
    lines = ["# Replication report", ""]
    for key, value in meta.items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", "## Verdicts", "", "Relative difference of the final validation perplexity, method - baseline, "
              "paired by seed, mean and 95% t interval on the log scale (negative = the method is better), with the "
              "minimal detectable effect at these seeds, the paired t test's p value and that p value adjusted "
              "(Holm) over all the report's comparisons: among a dozen comparisons at the 5% level, one may "
              "exclude zero by chance alone.", ""]
    lines += [f"- {v}" for v in report["verdicts"]] or ["- no comparison could be made"]
    lines += ["", *first_sections] if first_sections else []
    for key, section in report["domains"].items():
        lines += _key_section(key, section)
    lines += ["", *extra_sections]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict, curves: dict, out: Path, extra_sections: list[str] = (),
                 first_sections: list[str] = ()) -> list[Path]:
    """report.json, report.md, curves-<key>.png and differences-<key>.png in ``out``; returns the paths written."""
    from nca.analysis.report_figures import plot_differences, plot_domain

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, arms in curves.items():
        name = key.replace("/", "-")
        plot_domain(key_name(key), arms, report["domains"][key], out / f"curves-{name}.png")
        plot_differences(key_name(key), report["domains"][key]["curves"], out / f"differences-{name}.png")
        paths += [out / f"curves-{name}.png", out / f"differences-{name}.png"]
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (out / "report.md").write_text(markdown(report, extra_sections, first_sections))
    return [out / "report.json", out / "report.md", *paths]
