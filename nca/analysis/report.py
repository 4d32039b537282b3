"""The replication report: final validation perplexity per arm with 95% intervals, paired differences between
arms per domain, the paper's convergence speed-up, curve pictures with seed bands, the paper's numbers beside
ours (direction only) and one verdict line per claim. Writes ``report.json``, ``report.md`` and PNGs.

Input: ``curves[domain][arm][seed] = (steps, values)`` of ``val/ppl`` (``nca.analysis.curves.load_scalars``) and a
list of ``(method, baseline)`` comparisons. Nothing here depends on how the runs were made.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from nca.analysis.curves import speedup
from nca.analysis.stats import mean_interval, paired_difference, verdict
from nca.analysis.figures import pyplot, save_figure

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


def paper_arm(label: str) -> str | None:
    """Our arm label -> the paper's column (nca-50plus -> nca); ablation arms have no paper number."""
    if label.startswith("nca-"):
        return None if "reinit" in label else "nca"
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


def build_report(curves: dict[str, dict[str, dict[int, Curve]]], comparisons: list[tuple[str, str]],
                 meta: dict | None = None, baseline: str = "scratch") -> dict:
    """Every number of the report as plain JSON-able data."""
    report = {"meta": meta or {}, "tag": "val/ppl", "domains": {}, "verdicts": []}
    for domain, arms in curves.items():
        finals = {arm: {seed: float(c[1][-1]) for seed, c in seeds.items()} for arm, seeds in arms.items()}
        section = {"final_ppl": {}, "differences": [], "speedup": {}}
        for arm, values in finals.items():
            interval = mean_interval([values[s] for s in sorted(values)])
            section["final_ppl"][arm] = {**interval.as_dict(), "values": {str(s): values[s] for s in sorted(values)},
                                         "paper": PAPER_PPL.get(domain, {}).get(paper_arm(arm) or "")}
        for method, base in comparisons:
            if method not in finals or base not in finals:
                continue
            diff = paired_difference(finals[method], finals[base])
            paper = _paper_relative(domain, method, base)
            line = verdict(method, base, DOMAIN_NAMES.get(domain, domain), diff)
            section["differences"].append({"method": method, "baseline": base, **diff.as_dict(),
                                           "paper_relative_percent": paper,
                                           "direction_vs_paper": direction(diff.relative_percent, paper),
                                           "verdict": line})
            report["verdicts"].append(line)
        if baseline in arms:
            for arm, seeds in arms.items():
                if arm == baseline:
                    continue
                common = sorted(set(seeds) & set(arms[baseline]))
                ups = {s: speedup(arms[baseline][s], seeds[s]) for s in common}
                finite = [u for u in ups.values() if u is not None and math.isfinite(u)]
                section["speedup"][arm] = {
                    "per_seed": {str(s): (None if u is None else (u if math.isfinite(u) else "inf")) for s, u in ups.items()},
                    "reached": sum(u is not None for u in ups.values()), "seeds": len(common),
                    "interval": mean_interval(finite).as_dict() if finite else None,
                    "paper": PAPER_SPEEDUP.get(domain, {}).get(paper_arm(arm) or ""),
                }
        report["domains"][domain] = section
    return report


# ----------------------------------------------------------------------------------------------- pictures
def plot_domain(domain: str, arms: dict[int, Curve] | dict, section: dict, path: Path) -> None:
    """Left: mean val/ppl per arm with its 95% band over seeds; right: final perplexity with intervals."""
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for arm, seeds in arms.items():
        steps = sorted(set.intersection(*(set(c[0].tolist()) for c in seeds.values())))
        table = np.array([[dict(zip(c[0].tolist(), c[1].tolist()))[s] for s in steps] for c in seeds.values()])
        bands = [mean_interval(table[:, i]) for i in range(len(steps))]
        means = np.array([b.mean for b in bands])
        line, = left.plot(steps, means, marker="o", ms=3, label=f"{arm} ({len(seeds)} seeds)")
        if len(seeds) > 1:
            left.fill_between(steps, [b.low for b in bands], [b.high for b in bands], color=line.get_color(), alpha=0.2)
    left.set_xlabel("stage-2 step")
    left.set_ylabel("validation perplexity")
    left.set_yscale("log")
    left.set_title(f"{DOMAIN_NAMES.get(domain, domain)}: validation curves (mean, 95% band over seeds)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    names = list(section["final_ppl"])
    finals = [section["final_ppl"][a] for a in names]
    means = [f["mean"] for f in finals]
    errors = [[m - (f["low"] if f["low"] is not None else m) for m, f in zip(means, finals)],
              [(f["high"] if f["high"] is not None else m) - m for m, f in zip(means, finals)]]
    right.bar(range(len(names)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.7)
    right.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    right.set_ylim(min(f["low"] if f["low"] is not None else f["mean"] for f in finals) * 0.98,
                   max(f["high"] if f["high"] is not None else f["mean"] for f in finals) * 1.02)
    right.set_title("final validation perplexity (95% interval)")
    right.grid(alpha=0.3, axis="y")
    save_figure(fig, path, dpi=110)


# ------------------------------------------------------------------------------------------------ markdown
def _num(value, spec=".3f") -> str:
    return "n/a" if value is None else (value if isinstance(value, str) else format(value, spec))


def _interval(d: dict | None, spec=".3f", unit="") -> str:
    if d is None:
        return "n/a"
    if d["low"] is None:
        return f"{d['mean']:{spec}}{unit} (n={d['n']})"
    return f"{d['mean']:{spec}}{unit} [{d['low']:{spec}}, {d['high']:{spec}}]"


def markdown(report: dict, extra_sections: list[str] = ()) -> str:
    meta = report["meta"]
    lines = ["# Replication report", ""]
    for key, value in meta.items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", "## Verdicts", "", "Relative difference of the final validation perplexity, method - baseline, "
              "paired by seed, mean and 95% t interval (negative = the method is better).", ""]
    lines += [f"- {v}" for v in report["verdicts"]] or ["- no comparison could be made"]
    for domain, section in report["domains"].items():
        name = DOMAIN_NAMES.get(domain, domain)
        lines += ["", f"## {name} ({domain})", "", f"![curves](curves-{domain}.png)", "",
                  "### Final validation perplexity", "", "| arm | seeds | mean [95% interval] | per seed | paper (1.6B) |",
                  "|---|---|---|---|---|"]
        for arm, f in section["final_ppl"].items():
            per_seed = ", ".join(f"{v:.3f}" for v in f["values"].values())
            lines.append(f"| {arm} | {f['n']} | {_interval(f)} | {per_seed} | {_num(f['paper'], '.2f')} |")
        lines += ["", "### Paired differences (method - baseline)", "",
                  "| method - baseline | absolute | relative | paper relative | direction vs paper |", "|---|---|---|---|---|"]
        for d in section["differences"]:
            lines.append(f"| {d['method']} - {d['baseline']} | {_interval(d['absolute'], '+.3f')} | "
                         f"{_interval(d['relative_percent'], '+.2f', '%')} | {_num(d['paper_relative_percent'], '+.1f')}% | "
                         f"{d['direction_vs_paper']} |")
        lines += ["", "### Convergence speed-up over scratch", "",
                  "Steps scratch needs to reach its own final validation perplexity / steps the arm needs to reach it "
                  "(linear interpolation between validation points; `nca.analysis.curves.speedup`).", "",
                  "| arm | reached | mean [95% interval] | per seed | paper |", "|---|---|---|---|---|"]
        for arm, s in section["speedup"].items():
            per_seed = ", ".join("never" if v is None else _num(v, ".2f") for v in s["per_seed"].values())
            lines.append(f"| {arm} | {s['reached']}/{s['seeds']} | {_interval(s['interval'], '.2f')} | {per_seed} | "
                         f"{_num(s['paper'], '.2f')} |")
    lines += ["", *extra_sections]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict, curves: dict, out: Path, extra_sections: list[str] = ()) -> list[Path]:
    """report.json, report.md and curves-<domain>.png in ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for domain, arms in curves.items():
        path = out / f"curves-{domain}.png"
        plot_domain(domain, arms, report["domains"][domain], path)
        paths.append(path)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (out / "report.md").write_text(markdown(report, extra_sections))
    return [out / "report.json", out / "report.md", *paths]
