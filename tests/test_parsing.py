"""One command-line dialect (nca.cli.parsing): every verb answers --print_config and documents every option,
list options take their values every way the help shows, and a mistake is one line naming the nearest key."""

from __future__ import annotations

import inspect
import sys
import warnings
from typing import Literal, Optional

import docstring_parser
import pytest
import yaml

from nca.cli import VERBS, load, main, parsing

LIGHTNING = ("fit", "validate", "test")  # LightningCLI: tests/test_cli.py
PARSED = [v for v in VERBS if v not in LIGHTNING + ("replicate",)]  # through nca.cli.parsing


def listed(values: list[str], sizes: list[int] = [1], labels: Optional[list[str]] = None, seed: int = 0,
           mode: Literal["fast", "slow"] = "fast") -> dict:
    """A verb-shaped function for the tests.

    Args:
        values: several strings.
        sizes: several numbers.
        labels: optional strings.
        seed: a number.
        mode: a choice.
    """
    return dict(values=values, sizes=sizes, labels=labels, seed=seed, mode=mode)


def call(argv: list[str], positional: Optional[str] = None) -> dict:
    return parsing.call(listed, argv, "nca listed", positional)


@pytest.mark.parametrize("verb", [*PARSED, "replicate"])
def test_every_verb_answers_print_config(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--print_config"])
    assert exit_.value.code in (0, None)
    assert isinstance(yaml.safe_load(capsys.readouterr().out), dict)


def targets() -> dict[str, object]:
    """verb -> the typed function or dataclass nca.cli.parsing parses it into."""
    found, real = {}, parsing.call

    class Seen(Exception):
        pass

    def spy(target, argv, prog, positional=None):
        found[prog.split()[-1]] = target
        raise Seen

    parsing.call = spy
    try:
        for verb in PARSED:
            with pytest.raises(Seen):
                load(verb)([])
    finally:
        parsing.call = real
    return found


def test_every_option_of_every_verb_has_help_text_from_its_docstring():
    for verb, target in targets().items():
        documented = {p.arg_name for p in docstring_parser.parse(inspect.getdoc(target)).params}
        names = list(inspect.signature(target).parameters)
        assert set(names) <= documented, f"nca {verb}: no help text for {sorted(set(names) - documented)}"
        assert parsing.description(target), f"nca {verb} has no description"


def test_help_shows_the_docstring_text(capsys):
    with pytest.raises(SystemExit):
        main(["curves", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--baseline BASELINE the run the speed-up is measured against" in text


# ---------------------------------------------------------------------------------------------- lists
@pytest.mark.parametrize("argv", [
    ["--values", "a", "b=1", "--seed", "-2"],            # several values after one flag
    ["--values", "a", "--seed", "-2", "--values", "b=1"],  # the flag repeated
    ["--values", "[a, b=1]", "--seed", "-2"],            # the YAML form
    ["--values=a", "--values=b=1", "--seed=-2"],
])
def test_a_list_option_takes_its_values_every_way(argv):
    assert call(argv)["values"] == ["a", "b=1"] and call(argv)["seed"] == -2


def test_list_values_are_typed_and_kept_as_given():
    assert call(["--values", "1e-3", "null", "yes", "x: y", "--sizes", "3", "4"]) == dict(
        values=["1e-3", "null", "yes", "x: y"], sizes=[3, 4], labels=None, seed=0, mode="fast")
    assert call(["--values", "a", "--labels"])["labels"] == []  # a flag without values: an empty list
    assert call(["--values", "a", "--sizes+", "5"])["sizes"] == [1, 5]  # jsonargparse's append form


def test_bare_values_go_to_the_positional_list_and_a_command_line_list_replaces_the_config_one(tmp_path):
    assert call(["a", "--seed", "3", "b"], positional="values")["values"] == ["a", "b"]
    config = tmp_path / "c.yaml"
    config.write_text("values: [x, y]\nsizes: [7]\n")
    assert call(["--config", str(config), "--values", "z"]) == dict(values=["z"], sizes=[7], labels=None, seed=0,
                                                                    mode="fast")


def test_argv_without_list_options_passes_unchanged():
    argv = ["fit", "--config", "a.yaml", "-c", "b.yaml", "--trainer.max_steps=3", "--seed", "-1", "--print_config"]
    assert parsing.expand_lists(argv) == argv


# ---------------------------------------------------------------------------------------------- mistakes
@pytest.mark.parametrize("argv, message", [
    (["--values", "a", "--sed", "1"], "unknown key --sed; did you mean --seed?"),
    (["--values", "a", "--labls=x"], "unknown key --labls; did you mean --labels?"),
    (["--values", "a", "--zzz", "1"], "unknown key --zzz (`nca listed --help` lists the keys)"),
    (["--values", "a", "--mode", "quick"], "--mode: choose one of fast, slow"),
    (["--values", "a", "--sizes", "x"], "--sizes: Expected a <class 'int'>. Got value: x"),
    (["--seed", "1"], "--values is required (`nca listed --help` lists the options)"),
])
def test_a_mistake_is_one_line(argv, message):
    with pytest.raises(parsing.UsageError) as err:
        call(argv)
    assert str(err.value) == message


def test_a_verbs_typo_names_the_nearest_key_in_one_line(capsys):
    assert main(["curves", "--runs", "a=runs/a", "--baselin", "a"]) == 2
    assert capsys.readouterr().err == "nca curves: error: unknown key --baselin; did you mean --baseline?\n"
    assert main(["induction", "--ckpt", "a.ckpt", "b.ckpt", "--out", "x", "--probe_sequence", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith("did you mean --probe_sequences?")
    assert main(["replicate", "--config", "replicate/smoke.yaml", "--stage1.step", "3", "--plan"]) == 2
    assert capsys.readouterr().err.strip().endswith("unknown key --stage1.step; did you mean --stage1.steps?")


def test_nearest_prefers_a_sibling_then_the_same_name_elsewhere():
    keys = ["--model.lr", "--model.min_lr", "--trainer.max_steps", "--data.init_args.seed"]
    assert parsing.nearest("--trainer.max_step", keys) == "--trainer.max_steps"
    assert parsing.nearest("--trainer.lr", keys) == "--model.lr"
    assert parsing.nearest("--data.init_args.sourc", keys) is None  # no near sibling: no misleading guess


# ---------------------------------------------------------------------------------------------- export
def test_export_prints_every_note_once_also_when_it_fails(monkeypatch, capsys, tmp_path):
    import nca.lit_modules.export as lib

    def failing(ckpt, out, format, tokenizer=None, dtype="float32"):
        warnings.warn("the checkpoint records no text tokenizer")
        warnings.warn("the checkpoint records no text tokenizer")
        raise ValueError("the model is not a plain Llama")

    monkeypatch.setattr(lib, "export_checkpoint", failing)
    assert main(["export", "--ckpt", "a.ckpt", "--out", str(tmp_path / "x"), "--format", "hf"]) == 2
    assert capsys.readouterr().err.splitlines() == ["warning: the checkpoint records no text tokenizer",
                                                    "nca export: error: the model is not a plain Llama"]


def test_export_literals_match_the_library():
    from nca.cli.export import Dtype, Format
    from nca.lit_modules.export import DTYPES, FORMATS
    from typing import get_args

    assert get_args(Format) == FORMATS and get_args(Dtype) == tuple(DTYPES)


def test_nca_configs_imports_no_framework():
    """`nca configs` (and `nca --help`) answer at once: the shared parser loads no torch or Lightning."""
    import subprocess
    from pathlib import Path

    code = "import sys; from nca.cli import main; main(['configs', 'stage1']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip().endswith("False")
