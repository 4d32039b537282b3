"""Known user errors: one short message (what, where, how to fix) and a non-zero exit, never a traceback."""


class UsageError(Exception):
    """Raised by a verb for bad input; ``nca`` prints ``nca VERB: error: MESSAGE`` and exits 2."""
