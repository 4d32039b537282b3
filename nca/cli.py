"""`python -m nca VERB ...`: the data verbs of this project, else LightningCLI's fit/validate/test."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from nca.verbs import VERBS

    if argv and argv[0] in VERBS:
        sys.exit(VERBS[argv[0]](argv[1:]))
    # TODO(training issue): LightningCLI for fit / validate / test.
    raise SystemExit(f"usage: python -m nca {{{','.join(VERBS)}}} ...")
