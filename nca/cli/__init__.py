"""``nca VERB ...`` (the same as ``python -m nca VERB ...``): the application on top of the library.

Each verb is a function ``argv -> exit code`` in its own module, imported only when it is called, so
``nca --help`` answers at once and one verb's dependencies never slow another. Training verbs are
LightningCLI (``nca fit --help`` lists every key); every other verb is a typed function or dataclass parsed
by jsonargparse through nca.cli.parsing: one dialect (``--config``, ``--print_config``, help from docstrings,
one-line errors naming the nearest valid key).
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

# verb -> ("module:function", one line of help). The one list of verbs: `nca --help` prints it.
VERBS: dict[str, tuple[str, str]] = {
    "fit": ("nca.cli.train:fit", "train a model from YAML configs (LightningCLI)"),
    "configs": ("nca.cli.configs:main", "list the shipped YAML configs with what each is for"),
    "validate": ("nca.cli.train:validate", "validation loss/perplexity of a checkpoint"),
    "test": ("nca.cli.train:test", "test-split loss/perplexity of a checkpoint"),
    "generate": ("nca.cli.data:generate", "write an NCA token corpus (memmap shards + manifest)"),
    "preview": ("nca.cli.data:preview", "PNG strips and GIFs of rules in each complexity band"),
    "complexity": ("nca.cli.data:complexity", "gzip-ratio distribution of random rules; band of a text file"),
    "curves": ("nca.cli.curves:main", "TensorBoard curves of runs, final values and convergence speed-ups"),
    "token-stats": ("nca.cli.token_stats:main", "entropy, distinct ids and gzip ratio of token corpora"),
    "induction": ("nca.cli.induction:main", "induction-head scores (prefix matching, copying) and ICL curves of checkpoints"),
    "export": ("nca.cli.export:main", "a checkpoint as a litgpt or Hugging Face (Llama) model directory"),
    "sample": ("nca.cli.sample:main", "completions of a text model; an NCA model's predicted frames beside the true ones"),
    "band-transfer": ("nca.cli.band_transfer:main", "final-perplexity change and speed-up vs scratch per complexity band and domain"),
    "evaluate": ("nca.cli.evaluate:main", "stage-3 benchmarks of a checkpoint (gsm8k, humaneval, bbl, perplexity): pass@k, resumable"),
    "replicate": ("nca.cli.replicate:main", "the paper's arm comparison over seeds: runs, 95% intervals, report"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: nca VERB [ARGS ...]   (or python -m nca VERB ...; nca VERB --help for a verb's arguments)",
             "", "verbs:"]
    lines += [f"  {verb:<{width}}  {text}" for verb, (_, text) in VERBS.items()]
    return "\n".join(lines)


def load(verb: str) -> Callable[[list[str]], int]:
    module, _, function = VERBS[verb][0].partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    """Run one verb; returns its exit code (argument errors exit through the verb's parser)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"nca: unknown verb {verb!r}; `nca --help` lists the verbs", file=sys.stderr)
        return 2
    from nca.cli.configs import resolve_config_args
    from nca.cli.errors import UsageError

    try:
        return load(verb)(resolve_config_args(rest))
    except UsageError as err:
        print(f"nca {verb}: error: {err}", file=sys.stderr)
        return 2


def entry() -> None:
    """The console script ``nca``."""
    sys.exit(main())
