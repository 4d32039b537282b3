"""Known user errors: one short message (what, where, how to fix) and a non-zero exit, never a traceback."""

from __future__ import annotations

import linecache
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

PACKAGE = Path(__file__).resolve().parents[1]  # the nca package, in a checkout or in site-packages
# Raised on purpose by the project's own checks (``raise ValueError("... set X ...")``).
KNOWN = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


class UsageError(Exception):
    """Raised by a verb for bad input; ``nca`` prints ``nca VERB: error: MESSAGE`` and exits 2."""


@contextmanager
def usage_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Inside a verb: the library's ``ValueError``/``FileNotFoundError``/``KeyError`` (bad input it found)
    become one-line ``UsageError``s."""
    try:
        yield
    except (kinds or (FileNotFoundError, KeyError, ValueError)) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise UsageError(" ".join(str(text).split())) from err


def refuse_existing(paths: Iterable[Path]) -> None:
    """Outputs are never overwritten: fail before any work if one exists."""
    taken = [str(x) for x in paths if Path(x).exists()]
    if taken:
        raise UsageError(f"{', '.join(taken)} already exist(s); choose another --out")


def raised_on_purpose(err: BaseException) -> bool:
    """Whether ``err`` comes from a ``raise`` statement in the project's own code (not a library, not an
    implicit error such as a failed unpacking, which is a bug that needs its traceback)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = Path(tb.tb_frame.f_code.co_filename).resolve()
    if PACKAGE not in filename.parents:
        return False
    return linecache.getline(str(filename), tb.tb_lineno).strip().startswith("raise ")


def _chain(err: BaseException) -> Iterable[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def user_error(err: BaseException, recorded: Iterable[BaseException] = ()) -> Optional[str]:
    """The message of a known user error behind ``err`` (or behind an error a constructor raised while
    jsonargparse built the objects, ``recorded``), or None when ``err`` is a bug."""
    from nca.lit_modules.guards import TrainingDiverged

    for candidate in [*recorded, *_chain(err)]:
        if isinstance(candidate, TrainingDiverged) or (isinstance(candidate, KNOWN) and raised_on_purpose(candidate)):
            return " ".join(str(candidate).split()) or type(candidate).__name__
    return None
