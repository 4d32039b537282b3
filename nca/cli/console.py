"""A quiet console for the training verbs: Lightning's and torch's advice that does not apply to these runs
is dropped, everything about the run itself stays."""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch import Trainer

from nca.lit_modules.progress import use_quiet_console

# (message regex, why it does not apply)
IGNORED_WARNINGS = (
    (r".*LeafSpec.*", "torch's pytree deprecation, raised inside litgpt/Lightning"),
    (r".*IterableDataset.*__len__.*", "streams report their number of batches on purpose"),
    (r".*does not have many workers.*", "num_workers is a config value; 0 is the CPU default"),
    (r".*Checkpoint directory .* exists and is not empty.*", "checked by nca fit itself (--ckpt_path last)"),
)
IGNORED_INFO = ("litlogger", "was configured so 100% of the batches")  # an advert; the config restated


class _DropInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in IGNORED_INFO)


def quiet_warnings() -> None:
    for pattern, _ in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropInfo) for f in logger.filters):
            logger.addFilter(_DropInfo())


def quiet_trainer(trainer: Trainer) -> Trainer:
    return use_quiet_console(trainer)
