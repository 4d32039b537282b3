"""``nca configs [WORD ...]``: the shipped YAML configs, one a line with the first line of its header comment
(what it is for), so a recipe can be found without opening the folder. Words filter by path or text."""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def summary(path: Path) -> str:
    """The first comment line of a config (its one-line purpose), or '' if it has none."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def listing(root: Path = CONFIGS, words: list[str] = ()) -> list[tuple[str, str]]:
    rows = []
    for path in sorted(root.rglob("*.yaml")):
        name, text = path.relative_to(root.parent).as_posix(), summary(path)
        if all(w.lower() in f"{name} {text}".lower() for w in words):
            rows.append((name, text))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nca configs", description=__doc__.split("\n\n")[0])
    parser.add_argument("words", nargs="*", help="show only configs whose path or summary holds every word")
    args = parser.parse_args(argv)
    if not CONFIGS.is_dir():
        from nca.cli.errors import UsageError

        raise UsageError(f"no configs folder at {CONFIGS}: run from a clone of the repository")
    rows = listing(CONFIGS, args.words)
    width = max((len(name) for name, _ in rows), default=0)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    if not rows:
        print(f"no config matches {' '.join(args.words)!r}; `nca configs` lists them all")
    return 0
