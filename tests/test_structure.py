"""The import graph runs one way: the automaton library at the bottom, the command line on top."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nca", "datamodules", "lit_modules", "analysis", "evaluation", "replication")
AUTOMATON = sorted(p.stem for p in (ROOT / "nca" / "automaton").glob("*.py") if p.stem != "__init__")


def imports(path: Path) -> set[str]:
    """Project modules a file imports (at any depth: lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


def test_the_automaton_loads_nothing_of_the_application():
    code = ("import sys\n" + "".join(f"import nca.automaton.{m}\n" for m in AUTOMATON)
            + "print(sorted({m.split('.')[0] for m in sys.modules} & set(%r) - {'nca'}),"
              " sorted(m for m in sys.modules if m.startswith('nca.') and not m.startswith('nca.automaton')))"
            % (PACKAGES,))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []", f"importing the automaton loaded {out}"


def test_the_automaton_imports_only_itself():
    for path in sources("nca/automaton"):
        assert all(m.startswith("nca.automaton") for m in imports(path)), path


def test_nothing_imports_the_command_line():
    for path in sources(*PACKAGES[1:], "nca/automaton"):
        assert not any(m == "nca.cli" or m.startswith("nca.cli.") for m in imports(path)), path


def test_data_never_imports_models_or_anything_above():
    for path in sources("datamodules"):
        assert not any(m.split(".")[0] in ("lit_modules", "analysis", "evaluation", "replication") for m in imports(path)), path


def test_no_source_file_is_over_400_lines():
    long = [(str(p.relative_to(ROOT)), n) for p in sources(*PACKAGES, "benchmarks")
            if (n := len(p.read_text().splitlines())) > 400]
    assert not long, long
