"""The NCA DataModule: on-the-fly trajectories (or a corpus from `python -m nca generate`).

Batches are numbered (see ``nca.datamodules.streaming``): global batch ``q`` holds sequences
``[q * batch_size, (q + 1) * batch_size)`` of the stream, so tokens do not depend on the worker count
and a resumed run continues where it stopped.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info

from nca.datamodules.base import TokenDataModule
from nca.datamodules.shards import TokenShards, row_to_sample
from nca.datamodules.streaming import BatchSource, ShardRows
from nca.automaton.complexity import PAPER_BAND, Band
from nca.automaton.config import NCAConfig
from nca.automaton.pool import RulePool
from nca.automaton.stream import NCAStream
from nca.automaton.tokenize import PatchTokenizer


class StreamSource(BatchSource):
    def __init__(self, stream: NCAStream, batch_size: int, mask_first: int):
        self.stream, self.batch_size, self.mask_first = stream, batch_size, mask_first

    def batches(self, q: list[int]) -> list[dict[str, torch.Tensor]]:
        b = self.batch_size
        index = torch.cat([torch.arange(i * b, (i + 1) * b) for i in q])
        rows = self.stream.rows(index).cpu()  # generate several batches at once: fewer, larger ops
        return [row_to_sample(chunk, self.mask_first) for chunk in rows.split(b)]


class NCADataModule(TokenDataModule):
    """NCA token batches ``{"input_ids", "labels"}``: labels already shifted, first frame masked (-100).

    Args:
        nca: the automaton (``NCAConfig``; defaults: the paper). In YAML ``data.init_args.nca.temperature``.
        seq_len: tokens per sequence (paper: 1024 = 26 whole frames and a partial 27th).
        batch_size: sequences per batch and device.
        band: gzip-ratio band of the rules, e.g. [0.5, 1.0], "30-40", "50+"; null keeps every rule.
        train_rules: None draws a fresh band-filtered rule for every sequence; an int draws that many rules
            once (the reference's 16,000) and samples fresh trajectories of them each epoch.
        val_rules, test_rules: sizes of the held-out rule pools (None: a fresh held-out rule per sequence).
            Train, validation and test rule ids are disjoint by construction (even, 1 mod 4, 3 mod 4).
        val_sequences, test_sequences: sequences in the validation / test sets.
        seed: the stream's seed (a sequence is a pure function of seed, split and index).
        num_workers: DataLoader worker processes generating the stream.
        corpus: a directory written by ``nca generate`` to read training rows from instead of generating.
        generate_group: sequences one worker generates together.
        device: where rollouts run; "cuda" generates in the training process (needs num_workers 0).
    """

    def __init__(
        self,
        nca: NCAConfig = NCAConfig(),
        seq_len: int = 1024,
        batch_size: int = 32,
        band: list[float] | str | None = PAPER_BAND,
        train_rules: int | None = None,
        val_rules: int | None = 2000,
        test_rules: int | None = 2000,
        val_sequences: int = 256,
        test_sequences: int = 256,
        seed: int = 0,
        num_workers: int = 0,
        corpus: str | None = None,
        generate_group: int = 512,
        device: str = "cpu",
    ):
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters(ignore=["nca"])
        self.hparams["nca"] = nca.to_dict()  # plain data: checkpoints stay loadable with weights_only
        self.cfg = nca
        if isinstance(band, (list, tuple)) and len(band) != 2:
            raise ValueError(f"data band must be two gzip ratios [low, high] (high may be null) or a name such as "
                             f"'30-40' or '50+', got {list(band)}")
        self.band = Band.parse(band)
        self.tokenizer = PatchTokenizer.from_config(self.cfg)
        if seq_len < self.tokenizer.frame_len:
            raise ValueError(f"data seq_len ({seq_len}) must hold at least one frame ({self.tokenizer.frame_len} tokens)")
        self.seq_len, self.seed = seq_len, seed
        self.pool_sizes = {"train": train_rules, "val": val_rules, "test": test_rules}
        self.eval_sequences = {"val": val_sequences, "test": test_sequences}
        if torch.device(device).type != "cpu" and num_workers > 0:
            raise ValueError(
                f"device={device!r} generates on the accelerator in the training process, which DataLoader worker "
                "processes cannot share: set num_workers: 0 (or device: cpu to generate in workers)"
            )
        self.device, self.corpus = device, corpus
        self.generate_group = max(1, generate_group // batch_size)
        self._sources: dict[str, BatchSource] = {}
        if corpus is not None:  # fail before any long work if the corpus does not fit this config
            m = TokenShards(corpus).manifest
            if m.row_len != seq_len + 1 or m.vocab_size != self.vocab_size:
                raise ValueError(
                    f"corpus {corpus} has rows of {m.row_len} ids over {m.vocab_size} tokens, but this config needs "
                    f"{seq_len + 1} over {self.vocab_size}: regenerate it with the same seq_len/n_states/patch"
                )

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def stream(self, split: str) -> NCAStream:
        pool = None
        if self.pool_sizes[split]:
            pool = RulePool(self.pool_sizes[split], self.cfg, self.band, seed=self.seed, split=split, device=self.device)
            rank_zero_info(f"NCA {split} rule pool: " + ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in pool.stats().items()))
        return NCAStream(self.cfg, self.seq_len, self.band, seed=self.seed, split=split, pool=pool, device=self.device)

    def source(self, split: str) -> BatchSource:
        if split not in self._sources:  # pools are drawn once per split, when first needed
            if split == "train" and self.corpus is not None:
                self._sources[split] = ShardRows(self.corpus, self.batch_size, self.seed)
            else:
                self._sources[split] = StreamSource(self.stream(split), self.batch_size, self.tokenizer.mask_first)
        return self._sources[split]

    def eval_batches(self, split: str, world_size: int) -> int:
        return max(1, self.eval_sequences[split] // (self.batch_size * world_size))
