"""The import graph runs one way: the automaton library at the bottom, the command line on top, and one
installed top-level name (``nca``)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nca"
# Layers from the bottom: a module may import its own layer and those below, never one above.
LAYERS = ("automaton", "datamodules", "lit_modules", "evaluation", "analysis", "replication", "cli")
ABOVE_DATA = ("lit_modules", "evaluation", "analysis", "replication", "cli")
AUTOMATON = sorted(p.stem for p in (PACKAGE / "automaton").glob("*.py") if p.stem != "__init__")


def imports(path: Path) -> set[str]:
    """Project modules a file imports (at any depth: lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m == "nca" or m.startswith("nca.")}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (PACKAGE / folder).rglob("*.py")]


def test_the_automaton_loads_nothing_of_the_application():
    code = ("import sys\n" + "".join(f"import nca.automaton.{m}\n" for m in AUTOMATON)
            + "print(sorted(m for m in sys.modules if m.startswith('nca.') and not m.startswith('nca.automaton')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing the automaton loaded {out}"


def test_the_automaton_imports_only_itself():
    for path in sources("automaton"):
        assert all(m.startswith("nca.automaton") for m in imports(path)), path


def test_nothing_imports_the_command_line():
    for path in sources(*LAYERS[:-1]):
        assert not any(layer(m) == "cli" for m in imports(path)), path


def test_data_never_imports_models_or_anything_above():
    for path in sources("datamodules"):
        assert not any(layer(m) in ABOVE_DATA for m in imports(path)), path


def test_every_module_lives_in_a_layer():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name not in ("__pycache__", "configs"))
    assert top == sorted(LAYERS)


def test_one_installed_top_level_name():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'include = ["nca*"]' in text
    assert not [p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name not in ("nca", "tests")]


def test_no_source_file_is_over_400_lines():
    long = [(str(p.relative_to(ROOT)), n) for p in [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
            if (n := len(p.read_text().splitlines())) > 400]
    assert not long, long


def test_the_readme_map_matches_the_folders():
    """README's "Where things live" names every folder of the package, and every file it names exists."""
    block = (ROOT / "README.md").read_text().split("## Where things live", 1)[1].split("```")[1]
    folders: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        if m := re.match(r"^  (\w+)/\s", line):
            current = m.group(1)
        elif not line.startswith("   "):
            current = None
        if current:
            folders[current] = folders.get(current, "") + line
    assert sorted(folders) == sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    missing = [f"{folder}/{name}" for folder, text in folders.items() for name in re.findall(r"\b(\w+\.py)\b", text)
               if not (PACKAGE / folder / name).is_file()]
    assert not missing, missing
    assert all((ROOT / name).exists() for name in re.findall(r"^(\w+)/?\s", block, re.M))
