"""One command-line dialect for every verb: a typed function or dataclass parsed by jsonargparse.

Every verb gets ``--config FILE`` (a YAML of the same keys; later flags win), ``--print_config`` and help text
for each option from the ``Args:`` section of its docstring. A list option takes several values
(``--runs a=x b=y``), its YAML form (``--runs '[a=x, b=y]'``) or repeated flags (``--ckpt A --ckpt B``); a
verb may name one list parameter that also takes the bare values (``nca token-stats DIR DIR``).

A mistake costs one line, never the usage: an unknown key names the nearest valid one
(``unknown key --trainer.max_step; did you mean --trainer.max_steps?``), a bad value names its key. The
parser raises instead of exiting and takes no abbreviations (``--max_step`` is not ``--max_steps``), also in
the parsers jsonargparse builds for nested classes (``--data.init_args.nca.temperatur``).

A verb plugs in with one call::

    def main(argv): return run(my_typed_function, argv, "nca my-verb")

A verb that builds its own parser (several classes, extra arguments) uses ``Parser`` and ``parse``::

    p = Parser(prog="nca replicate"); p.add_class_arguments(Study, None); p.add_argument("--out", ...)
    args = parse(p, argv, "nca replicate")
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import re
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Callable, Iterable, Literal, Optional, Union

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from nca.cli.errors import UsageError

NO_VALUE = ("-h", "--help", "--print_config")  # flags that never take the next token as their value
NOISE = (  # lines of jsonargparse's nested messages that say nothing about the mistake
    "Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:",
    "Given value:", "Expected a <class 'NoneType'>", "Expected a config path but",
)


class StrictParsing:
    """A jsonargparse parser that raises ``ArgumentError`` instead of printing the usage and exiting, and
    takes no abbreviations. jsonargparse builds the parsers of nested classes as ``type(parser)(...)``, so
    they inherit both (a LightningArgumentParser gets them by mixing this in first)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class Parser(StrictParsing, ArgumentParser):
    """jsonargparse's ``ArgumentParser`` with the strict behaviour above."""


# -------------------------------------------------------------------------------------------- building
def description(target: Callable) -> str:
    """The first paragraph of a docstring, one line."""
    doc = inspect.getdoc(target) or ""
    return " ".join(doc.split("\n\n")[0].split())


def parser_for(target: Callable, prog: str) -> Parser:
    """``--config``, ``--print_config`` and one option per parameter of ``target`` (a function or a class)."""
    parser = Parser(prog=prog, description=description(target), default_meta=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these keys (later flags win)")
    add = parser.add_class_arguments if inspect.isclass(target) else parser.add_function_arguments
    add(target, as_group=False, fail_untyped=True, sub_configs=True)
    return parser


def _is_list(hint: Any) -> bool:
    if typing.get_origin(hint) is list:
        return True
    return typing.get_origin(hint) is Union and any(typing.get_origin(a) is list for a in typing.get_args(hint))


def _dataclass_in(hint: Any) -> Optional[type]:
    options = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
    return next((h for h in options if inspect.isclass(h) and is_dataclass(h)), None)


def parameters(target: Callable, prefix: str = "") -> dict[str, Any]:
    """key -> type hint of every parameter of ``target``, nested dataclasses flattened (``nca.hidden``)."""
    hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) and not is_dataclass(target) else target)
    names = [f.name for f in fields(target)] if is_dataclass(target) else list(inspect.signature(target).parameters)
    found: dict[str, Any] = {}
    for name in names:
        hint = hints.get(name)
        nested = _dataclass_in(hint)
        found.update(parameters(nested, f"{prefix}{name}.") if nested else {prefix + name: hint})
    return found


def list_keys(target: Callable) -> set[str]:
    """Keys of ``target``'s list-typed parameters: the ones that take several values."""
    return {key for key, hint in parameters(target).items() if _is_list(hint)}


def choices(target: Callable) -> dict[str, tuple]:
    """key -> allowed values of ``target``'s ``Literal`` parameters (jsonargparse 4.41's own message for a
    value outside a Literal of strings is 'Cannot take a Union of no types')."""
    return {key: typing.get_args(hint) for key, hint in parameters(target).items()
            if typing.get_origin(hint) is Literal}


# -------------------------------------------------------------------------------------------- argv
def expand_lists(argv: list[str], lists: Iterable[str] = (), positional: Optional[str] = None) -> list[str]:
    """``argv`` with each list option's values as one JSON list at its first place: ``--k a b``, ``--k a --k b``
    and bare values of the ``positional`` key all become ``--k '["a", "b"]'`` (strings, typed by jsonargparse
    like any other value). A lone YAML form ``--k '[a, b]'`` and jsonargparse's ``--k+ a`` pass as they are."""
    lists, out, values, i = set(lists), [], {}, 0
    while i < len(argv):
        token = argv[i]
        flag, eq, value = token.partition("=")
        key = flag[2:] if flag.startswith("--") else None
        if key in lists:
            given, i = ([value], i + 1) if eq else _gather(argv, i + 1)
            if key not in values:
                out.append(key)  # a placeholder: the whole list goes here
            values.setdefault(key, []).append(given)
        elif token.startswith("-") and not _number(token):
            out.append(token)
            takes_value = not eq and flag not in NO_VALUE and i + 1 < len(argv)
            if takes_value and not argv[i + 1].startswith("--"):
                out.append(argv[i + 1])
                i += 1
            i += 1
        elif positional:
            if positional not in values:
                out.append(positional)
            values.setdefault(positional, []).append([token])
            i += 1
        else:
            out.append(token)
            i += 1
    return [a for item in out for a in ([f"--{item}", _as_list(values[item])] if item in values else [item])]


def _as_list(groups: list[list[str]]) -> str:
    """One list out of every occurrence's values; a value in the YAML form is a whole list."""
    if len(groups) == 1 and len(groups[0]) == 1 and groups[0][0].lstrip().startswith("["):
        return groups[0][0]
    items: list = []
    for value in (v for group in groups for v in group):
        items += yaml.safe_load(value) if value.lstrip().startswith("[") else [value]
    return json.dumps(items)


def _gather(argv: list[str], i: int) -> tuple[list[str], int]:
    values = []
    while i < len(argv) and not argv[i].startswith("--"):
        values.append(argv[i])
        i += 1
    return values, i


def _number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


# -------------------------------------------------------------------------------------------- parsing
def parse(parser: ArgumentParser, argv: list[str], prog: str, lists: Iterable[str] = (),
          positional: Optional[str] = None, keys: Optional[Callable[[], Iterable[str]]] = None,
          allowed: Optional[dict[str, tuple]] = None) -> Namespace:
    """``parser.parse_args`` in the dialect above; a mistake raises a one-line ``UsageError``.
    ``keys`` gives the valid keys for the nearest-key hint (default: ``parser``'s own); ``allowed`` the
    values of choice keys."""
    try:
        return parser.parse_args(expand_lists(list(argv), lists, positional))
    except argparse.ArgumentError as err:
        message = explain(str(err), argv, prog, keys or (lambda: valid_keys(parser)), allowed or {})
        raise UsageError(message) from None


def call(target: Callable, argv: list[str], prog: str, positional: Optional[str] = None) -> Any:
    """Parse ``argv`` into ``target``'s parameters and call it (a class: returns the instance)."""
    parser = parser_for(target, prog)
    cfg = parse(parser, argv, prog, list_keys(target), positional, allowed=choices(target))
    init = parser.instantiate_classes(cfg)
    names = [f.name for f in fields(target)] if is_dataclass(target) else inspect.signature(target).parameters
    return target(**{name: init[name] for name in names if name in init})


def run(target: Callable[..., int], argv: list[str], prog: str, positional: Optional[str] = None) -> int:
    """A verb: ``target``'s exit code (0 when it returns None)."""
    code = call(target, argv, prog, positional)
    return 0 if code is None else int(code)


# -------------------------------------------------------------------------------------------- messages
def valid_keys(parser: ArgumentParser) -> list[str]:
    """Every key ``parser`` takes, as ``--key`` (nested ones dotted)."""
    return ["--config", "--print_config", *(f"--{k}" for k in parser.get_defaults().keys())]


def class_keys(class_path: str, prefix: str) -> list[str]:
    """Keys of a class named in a nested message (``--data.init_args.seq_len``), or none if it won't load."""
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    try:
        parser = Parser()
        parser.add_class_arguments(cls)
        names = list(parser.get_defaults().keys())
    except Exception:  # a TypedDict, or a class jsonargparse reads only as a whole: its annotated keys
        names = list(typing.get_type_hints(cls)) if isinstance(cls, type) else []
    return [prefix + k for k in names]


def nearest(flag: str, candidates: Iterable[str]) -> Optional[str]:
    """The valid key closest to a misspelt one: a sibling (same parent) of a similar name, else a key of
    the same name under another parent (``--trainer.lr`` -> ``--model.lr``)."""
    candidates = sorted(set(candidates))
    parent, _, leaf = flag.rpartition(".")
    siblings = {c.rpartition(".")[2]: c for c in candidates if c.rpartition(".")[0] == parent}
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if close:
        return siblings[close[0]]
    others = {}
    for c in candidates:
        others.setdefault(c.rpartition(".")[2].lstrip("-"), c)
    close = difflib.get_close_matches(leaf.lstrip("-"), list(others), n=1, cutoff=0.85)
    return others[close[0]] if close else None


def _user_flag(nested: str, outer: Optional[str], argv: list[str], subclass: bool) -> tuple[str, str]:
    """The flag as the user spelled it (``--data.nca.x`` or ``--data.init_args.nca.x``) and its prefix; a key
    from a config file is spelled the long way."""
    for token in argv:
        flag = token.partition("=")[0]
        if outer and flag.startswith(f"--{outer}.") and flag.endswith(f".{nested}"):
            return flag, flag[: -len(nested)]
    prefix = f"--{outer}.init_args." if subclass else f"--{outer}."
    return prefix + nested, prefix


def _unknown_key(message: str) -> Optional[str]:
    """The misspelt key of an 'unknown key' message, as ``--key`` (relative to a nested class), or None."""
    if m := re.search(r"Unrecognized arguments: (.*)", message):
        return next((t.partition("=")[0] for t in m.group(1).split() if t.startswith("-")), None)
    if m := re.search(r"Group '([^']+)' does not accept nested key '([^']+)'", message):
        return f"--{m.group(1)}.{m.group(2)}"
    if m := re.search(r"Subcommand '[^']+' does not accept nested key '([^']+)'", message):
        return f"--{m.group(1)}"
    if m := (re.search(r"Key '([^']+)' is not expected", message) or re.search(r"Unexpected keys: \{'([^']+)'", message)):
        return f"--{m.group(1)}"
    return None


def explain(message: str, argv: list[str], prog: str, keys: Callable[[], Iterable[str]],
            allowed: Optional[dict[str, tuple]] = None) -> str:
    """One line out of jsonargparse's message (which runs to 40 lines for a nested class)."""
    lines = [line.strip().lstrip("- ") for line in message.splitlines() if line.strip()]
    parser_keys = [m.group(1) for line in lines if (m := re.match(r'Parser key "([^"]+)"', line))]
    outer = parser_keys[0] if parser_keys else None
    subclass = next((m.group(1) for line in lines if (m := re.search(r"given class_path '([^']+)'", line))), None)
    subtypes = next((re.findall(r"<class '([^']+)'>", line) for line in lines if line.startswith("Subtypes:")), [])
    classes = [c for c in subtypes if c != "NoneType" and "." in c]
    nested_class = subclass or (classes[0] if len(classes) == 1 else None)
    unknown = _unknown_key(message)
    if unknown is not None:
        if nested_class and outer:
            flag, prefix = _user_flag(unknown[2:], outer, argv, subclass is not None)
            candidates = class_keys(nested_class, prefix)
        else:
            flag, candidates = unknown, list(keys())
        near = nearest(flag, candidates)
        hint = f"; did you mean {near}?" if near else f" (`{prog} --help` lists the keys)"
        return f"unknown key {flag}{hint}"
    if m := re.search(r'Key "([^"]+)" is required', message):
        return f"--{m.group(1)} is required (`{prog} --help` lists the options)"
    reasons = [line for line in lines if not line.startswith(NOISE) and not line.startswith("Parser key ")
               and "given class_path" not in line]
    key = None
    if parser_keys:
        key = parser_keys[0] + (f".init_args.{parser_keys[-1]}" if subclass and len(parser_keys) > 1 else "")
    reason = reasons[-1] if reasons else lines[-1] if lines else message
    if "Union of no types" in reason:  # jsonargparse's message for a value outside a Literal
        options = (allowed or {}).get(key or "")
        reason = f"choose one of {', '.join(map(str, options))}" if options else "not one of the allowed values"
    return f"--{key}: {reason}" if key else reason
