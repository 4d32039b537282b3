"""The private Lightning names of nca.lit_modules.framework: after an upgrade, a failure here says which one
moved and what depends on it (and the pin in pyproject.toml says which versions they were checked on)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import lightning
import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelSummary, ThroughputMonitor

from nca.lit_modules import framework

ROOT = Path(__file__).resolve().parents[1]
# Objects whose private names are instance attributes, built cheaply.
INSTANCES = {
    "lightning.pytorch.callbacks.ModelSummary": lambda: ModelSummary(max_depth=3),
    "lightning.pytorch.callbacks.ThroughputMonitor": lambda: ThroughputMonitor(batch_size_fn=len),
    "lightning.pytorch.Trainer": lambda: Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                                 enable_model_summary=False, accelerator="cpu", devices=1),
}
# Methods the project overrides or calls: the parameters it passes.
SIGNATURES = {"_parse_ckpt_path": ["self"], "_add_instantiators": ["self"], "_run_subcommand": ["self", "subcommand"],
              "_compute": ["self", "trainer", "iter_num"]}


def resolve(where: str):
    try:
        return importlib.import_module(where)
    except ImportError:
        module, _, name = where.rpartition(".")
        return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("where, name, use", framework.PRIVATE, ids=[f"{w}.{n}" for w, n, _ in framework.PRIVATE])
def test_each_private_lightning_name_is_still_there(where, name, use):
    owner = resolve(where)
    holder = INSTANCES[where]() if where in INSTANCES and not hasattr(owner, name) else owner
    broke = (f"{where}.{name} is gone or changed in lightning {lightning.__version__} (checked on the version "
             f"pyproject.toml pins). It is used for: {use}. Update nca/lit_modules/framework.py")
    assert hasattr(holder, name), broke
    if name in SIGNATURES:
        assert list(inspect.signature(getattr(owner, name)).parameters) == SIGNATURES[name], broke


def test_the_accessors_read_what_they_name(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    assert framework.summary_depth(ModelSummary(max_depth=3)) == 3
    trainer = Trainer(logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", devices=1)
    assert framework.should_update_logs(trainer) in (True, False)
    framework.log_metrics(trainer, {"x": 1.0}, step=0)
    assert float(trainer.logged_metrics["x"]) == 1.0
    table = framework.format_summary_table(10, 8, 0.0, {"train": 1, "eval": 0}, 0, (" ", ["0"]), ("Name", ["model"]))
    assert "Total params" in table and "model" in table


def test_no_private_lightning_or_torch_name_outside_the_framework_module():
    """`from lightning... import _x` and `obj._x` on trainers, loggers and callbacks live in framework.py only."""
    imports = re.compile(r"from (lightning|torch)[\w.]* import [^\n]*\b_[a-z]\w*")
    uses = re.compile(r"\b(trainer|logger|experiment|strategy|pl_module|cb|callback)\._[a-z]|super\(\)\._[a-z]")
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
             for p in (ROOT / "nca").rglob("*.py") if p.name != "framework.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if imports.search(line) or uses.search(line)]
    assert not found, found


def test_lightning_is_pinned_to_the_minor_version_the_tests_ran_on():
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"lightning>=([\d.]+),<([\d.]+)"', pyproject)
    assert pin, "pyproject.toml: lightning needs an upper bound (the private names above change between minors)"
    major, minor = map(int, lightning.__version__.split(".")[:2])
    assert pin.group(2) == f"{major}.{minor + 1}" and pin.group(1).startswith(f"{major}.{minor}")
