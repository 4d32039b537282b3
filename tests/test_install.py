"""The package works anywhere: its wheel, installed in a fresh venv outside the checkout and run from an empty
directory, lists and runs the shipped configs by name; a local file of the same name wins, the log says
which file was read, and a user's own callback module beside the configs is used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# A local file named like a shipped one (configs/model/tiny.yaml): it wins, and makes the run take seconds.
LOCAL_TINY = {
    "model": {"config": {"block_size": 64, "n_layer": 1, "n_embd": 32, "n_head": 2, "intermediate_size": 64},
              "warmup_steps": 1},
    "trainer": {"accelerator": "cpu", "max_steps": 2, "val_check_interval": 2, "limit_val_batches": 1,
                "num_sanity_val_steps": 0, "log_every_n_steps": 1},
    "checkpoint": {"every_n_train_steps": 2},
    "data": {"init_args": {"seq_len": 64, "batch_size": 2, "band": None, "val_rules": 2, "val_sequences": 2}},
}
CALLBACK = """import json, lightning, nca

class Mark(lightning.pytorch.Callback):
    def on_train_end(self, trainer, pl_module):
        open("mark.json", "w").write(json.dumps({"nca": nca.__file__, "step": trainer.global_step}))
"""


def run(args: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, dict]:
    """A venv (system torch/lightning, no checkout on the path) with the wheel built from a copy of the sources."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(ROOT / "nca", src / "nca", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src],
        tmp, env)
    (wheel,) = (tmp / "dist").glob("nca_pretraining-*.whl")
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv"], tmp, env)
    python = tmp / "venv" / "bin" / "python"
    # the system pip, run by the venv's python, installs into the venv; the checkout's editable install is ignored
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel], tmp, env)
    return tmp / "venv", env


def test_the_wheel_holds_one_top_level_name_and_the_configs(venv):
    site = next((venv[0] / "lib").glob("python*/site-packages"))
    installed = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"}
    assert installed == {"nca"}, installed
    assert (site / "nca" / "configs" / "stage1.yaml").is_file() and (site / "nca" / "configs" / "stage2" / "owt.yaml").is_file()


def test_configs_and_a_two_step_fit_by_config_name_from_an_empty_directory(venv, tmp_path):
    root, env = venv
    work = tmp_path / "work"
    work.mkdir()
    listed = run([root / "bin" / "nca", "configs"], work, env).stdout
    assert f"shipped configs in {root}" in listed and "\nstage1.yaml " in listed and "stage2/owt.yaml" in listed

    (work / "model").mkdir()
    (work / "model" / "tiny.yaml").write_text(yaml.safe_dump(LOCAL_TINY))
    (work / "my_callbacks.py").write_text(CALLBACK)
    fit = run([root / "bin" / "python", "-m", "nca", "fit", "--config", "stage1.yaml", "--config", "model/tiny.yaml",
               "--trainer.callbacks+", "my_callbacks.Mark"], work, env)
    shipped = next(root.glob("lib/python*/site-packages/nca/configs/stage1.yaml"))
    assert f"nca: --config stage1.yaml: the shipped config {shipped}" in fit.stderr
    assert f"nca: --config model/tiny.yaml: the local file {work / 'model' / 'tiny.yaml'}" in fit.stderr
    mark = json.loads((work / "mark.json").read_text())
    assert mark["step"] == 2 and Path(mark["nca"]).is_relative_to(root), mark  # the venv's nca, not the checkout
    assert (work / "runs" / "stage1" / "checkpoints" / "last.ckpt").is_file()
    saved = yaml.safe_load((work / "runs" / "stage1" / "version_0" / "config.yaml").read_text())
    assert saved["model"]["config"]["n_embd"] == 32 and saved["model"]["lr"] == 2e-3  # local tiny over shipped stage1


def test_replicate_plans_a_shipped_preset_by_name_from_an_empty_directory(venv, tmp_path):
    """The study driver finds its preset and the run configs it composes without a checkout (plan mode: offline)."""
    root, env = venv
    planned = run([root / "bin" / "nca", "replicate", "--config", "smoke.yaml", "--plan"], tmp_path, env)
    shipped = next(root.glob("lib/python*/site-packages/nca/configs/replicate/smoke.yaml"))
    assert f"nca: --config smoke.yaml: the shipped config {shipped}" in planned.stderr
    assert "All: 22 runs" in planned.stdout
