"""The shipped YAML configs (package data in ``nca/configs``) and how ``--config NAME`` finds them.

``nca configs [WORD ...]`` lists them, one a line with the first line of its header comment (what it is for),
so a recipe can be found without opening the folder; words filter by path or text.

Every verb's ``--config NAME`` reads a local file when one exists (a user's own config wins) and otherwise the
shipped config of that name: ``stage1.yaml``, ``stage2/owt.yaml`` or ``configs/stage2/owt.yaml`` (the form the
README uses in a checkout), or a bare file name that one shipped folder holds (``smoke.yaml``), all work from
any directory once the package is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nca.cli import parsing
from nca.cli.errors import UsageError

SHIPPED = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FLAG = "--config"


def summary(path: Path) -> str:
    """The first comment line of a config (its one-line purpose), or '' if it has none."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def listing(root: Path = SHIPPED, words: list[str] = ()) -> list[tuple[str, str]]:
    """(name as ``--config`` takes it, purpose) of every YAML under ``root``, filtered by ``words``."""
    rows = []
    for path in sorted(root.rglob("*.yaml")):
        name, text = path.relative_to(root).as_posix(), summary(path)
        if all(w.lower() in f"{name} {text}".lower() for w in words):
            rows.append((name, text))
    return rows


def shipped(name: str) -> Path | None:
    """The shipped config ``name`` names: a path under the configs folder (``stage2/owt.yaml``, also written
    ``configs/stage2/owt.yaml``), or a bare file name found in exactly one of its folders (``smoke.yaml`` is
    ``replicate/smoke.yaml``); None when there is none, a one-line error when a bare name is ambiguous."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    if relative.parts[:1] == ("configs",):
        relative = Path(*relative.parts[1:]) if len(relative.parts) > 1 else relative
    candidate = SHIPPED / relative
    if candidate.is_file():
        return candidate
    if len(relative.parts) != 1:
        return None
    found = sorted(SHIPPED.rglob(relative.name))
    if len(found) > 1:
        raise UsageError(f"--config {name}: several shipped configs have that name "
                         f"({', '.join(p.relative_to(SHIPPED).as_posix() for p in found)}); give its folder too")
    return found[0] if found else None


def resolve(name: str) -> tuple[str, str | None]:
    """The file ``--config name`` reads, and a note for the log when the choice is worth saying:
    a local file wins over a shipped one of the same name; a name found only among the shipped configs
    reads the shipped one."""
    local, packaged = Path(name).expanduser(), shipped(name)
    if local.is_file():
        if packaged is not None and not local.resolve().samefile(packaged):
            return name, f"--config {name}: the local file {local.resolve()} (not the shipped config of that name)"
        return name, None
    if packaged is not None:
        return str(packaged), f"--config {name}: the shipped config {packaged}"
    if "{" in name or ":" in name and not name.endswith((".yaml", ".yml")):
        return name, None  # an inline YAML/JSON config, parsed by jsonargparse
    raise UsageError(f"--config {name}: no such file here, nor a shipped config of that name "
                     "(`nca configs` lists the shipped ones)")


def resolve_config_args(argv: list[str], say=lambda text: print(f"nca: {text}", file=sys.stderr)) -> list[str]:
    """``argv`` with every ``--config NAME`` / ``--config=NAME`` pointing at the file it reads."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == CONFIG_FLAG and i + 1 < len(argv):
            path, note = resolve(argv[i + 1])
            out += [arg, path]
            i += 2
        elif arg.startswith(CONFIG_FLAG + "="):
            path, note = resolve(arg.split("=", 1)[1])
            out.append(f"{CONFIG_FLAG}={path}")
            i += 1
        else:
            out.append(arg)
            i += 1
            continue
        if note:
            say(note)
    return out


def list_configs(words: list[str] = []) -> int:
    """List the shipped YAML configs, one a line with what each is for.

    Args:
        words: show only configs whose path or summary holds every word (given without a flag, or as --words).
    """
    rows = listing(SHIPPED, words)
    width = max((len(name) for name, _ in rows), default=0)
    print(f"shipped configs in {SHIPPED} (`--config NAME`; a local file of the same name wins):")
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    if not rows:
        print(f"no config matches {' '.join(words)!r}; `nca configs` lists them all")
    return 0


def main(argv: list[str]) -> int:
    return parsing.run(list_configs, argv, "nca configs", positional="words")
