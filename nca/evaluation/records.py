"""An evaluation folder's files: recorded settings and append-only sample logs that make it resumable.

A log is JSON lines keyed by (problem, sample). Reading it truncates a torn last line (an interrupted write)
and reports the keys already done, so a restarted evaluation skips them: nothing is repeated or duplicated.
The first run records its settings in ``settings.json``; a later run in the same folder with other settings
stops with the differences instead of mixing two evaluations in one set of numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

SETTINGS = "settings.json"
Key = tuple[str, int]


class SampleLog:
    """Append-only JSON lines keyed by ``(record["problem"], record["sample"])``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> dict[Key, dict[str, Any]]:
        """The complete records (first of any repeated key); a torn last line is cut off the file."""
        if not self.path.is_file():
            return {}
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):  # the last write was interrupted mid-line
            with open(self.path, "r+b") as f:
                f.truncate(end)
        records: dict[Key, dict[str, Any]] = {}
        for number, line in enumerate(raw[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}:{number} is not JSON ({err}); the log is damaged, move it away") from err
            records.setdefault((str(record["problem"]), int(record["sample"])), record)
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())


class SettingsMismatch(ValueError):
    pass


def compare_settings(folder: str | Path, settings: dict[str, Any]) -> bool:
    """Whether ``folder`` already records these settings (False: a new folder); `SettingsMismatch` when it
    records others. Writes nothing."""
    path = Path(folder) / SETTINGS
    if not path.is_file():
        return False
    settings = json.loads(json.dumps(settings))  # the JSON form (tuples -> lists) for a fair comparison
    recorded = json.loads(path.read_text())
    diff = [f"{k}: recorded {recorded.get(k)!r}, now {settings.get(k)!r}"
            for k in sorted(set(recorded) | set(settings)) if recorded.get(k) != settings.get(k)]
    if not diff:
        return True
    new = sorted(set(settings) - set(recorded))
    older = (f" It was written by an older nca evaluate that did not record {', '.join(new)}: its samples stay "
             "readable there, but this version scores with these settings only.") if new else ""
    raise SettingsMismatch(
        f"{path.parent} holds an evaluation with other settings ({'; '.join(diff)}).{older} Rerun with the "
        "recorded settings to resume it, or give another --out for a new evaluation."
    )


def record_settings(folder: str | Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``folder`` unless it already holds them (`SettingsMismatch` when it holds others)."""
    if not compare_settings(folder, settings):
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_json(Path(folder) / SETTINGS, json.loads(json.dumps(settings)))




def write_json(path: str | Path, data: Any) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
