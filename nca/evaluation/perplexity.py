"""Token-weighted loss and perplexity of a checkpoint on a text corpus, through ``TextDataModule``'s cache.

Without a source, the corpus is the validation split of the checkpoint's own training data: the
DataModule is rebuilt from the settings the checkpoint recorded, so its cache key matches and the training
corpus is not tokenised again. With a source, the whole source is the evaluation set (the DataModule's
``val_source``; only that split's cache is built).
Loss = summed cross-entropy over every target token / number of target tokens; perplexity = exp(loss).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from nca.datamodules.shards import IGNORE_INDEX


class PerplexityTask:
    """Token-weighted loss and perplexity of a text checkpoint on its validation split or on ``data``
    (``limit``: the first batches). Nothing is sampled: ``paper`` is None."""

    name = "perplexity"
    paper = None

    def __init__(self, data: Optional[str] = None, tokenizer: Optional[str] = None, cache_dir: Optional[str] = None,
                 limit: Optional[int] = None, batch_size: Optional[int] = None):
        self.data, self.tokenizer, self.cache_dir, self.limit, self.batch_size = data, tokenizer, cache_dir, limit, batch_size

    def settings(self) -> dict[str, Any]:
        return {"data": self.data, "tokenizer": self.tokenizer, "limit": self.limit, "cache_dir": self.cache_dir}

    def notes(self) -> list[str]:
        return []

    def measure(self, loaded, progress=None) -> dict[str, Any]:
        """Build the corpus's validation cache if needed and measure ``loaded`` (a LoadedModel) on it."""
        dm = text_datamodule(loaded.provenance, self.data, self.tokenizer, self.cache_dir, self.batch_size)
        if dm.vocab_size > loaded.config.padded_vocab_size:
            raise ValueError(f"the corpus tokenizer has {dm.vocab_size} ids but the model only "
                             f"{loaded.config.padded_vocab_size} rows: give the model's own --tokenizer")
        return perplexity(loaded.model, dm, self.limit, progress=progress)



def text_datamodule(provenance, source: str | None = None, tokenizer: str | None = None,
                    cache_dir: str | None = None, batch_size: int | None = None):
    """The checkpoint's TextDataModule (``provenance`` = LoadedModel.provenance), optionally on another source."""
    from nca.datamodules.text import TextDataModule

    accepted = inspect.signature(TextDataModule.__init__).parameters
    args = {k: v for k, v in provenance.init_args.items() if k in accepted}
    if provenance.kind != "text" and source is None:
        raise ValueError(
            f"The checkpoint was trained on {provenance.describe()}, not text: give a corpus "
            "with --data (and --tokenizer if the checkpoint records none)"
        )
    overrides = {"tokenizer": tokenizer, "cache_dir": cache_dir, "batch_size": batch_size}
    args.update({k: v for k, v in overrides.items() if v is not None})
    if source is not None:  # only the validation cache is built (prepare_splits(["val"]))
        args.update(source=source, val_source=source, max_val_tokens=None)
    args["num_workers"] = 0
    if "source" not in args:
        raise ValueError("No corpus known for this checkpoint: give one with --data")
    return TextDataModule(**args)


@torch.no_grad()
def perplexity(model, datamodule, limit: int | None = None, progress=None) -> dict[str, Any]:
    """Loss and perplexity over the validation rows (the first ``limit`` batches when given)."""
    datamodule.prepare_splits(["val"])  # the validation cache only: training text is never re-read
    datamodule.setup("validate")
    device = next(model.parameters()).device
    loss_sum, tokens, batches = 0.0, 0, 0
    for batch in datamodule.val_dataloader():
        if limit is not None and batches >= limit:
            break
        ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
        logits = model(ids).float()
        loss_sum += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                                          reduction="sum"))
        tokens += int((labels != IGNORE_INDEX).sum())
        batches += 1
        if progress is not None:
            progress(1)
    if tokens == 0:
        raise ValueError("The evaluation corpus gave no target tokens")
    loss = loss_sum / tokens
    return {"metrics": {"loss": loss, "ppl": math.exp(loss)}, "tokens": tokens, "batches": batches,
            "cache": str(datamodule.split_path("val")), "headline": "ppl"}
