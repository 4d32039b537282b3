"""Stage-1 controls in the NCA's own format, so that a stage-2 benefit of NCA over them is the dynamics' doing
and not the format's or the token statistics' (docs/replication.md, "Control arms").

- ``ShuffledNCADataModule``: every row of the NCA stream (same rules, trajectories, seed and band) with its
  patch tokens permuted among the row's patch positions. Each row keeps its multiset of tokens; every spatial
  and temporal relation between them is gone. The delimiters stay where the NCA puts them (one ``<start>`` and
  one ``<end>`` per frame) and the first frame's targets stay masked, so the format and the number of
  supervised targets are exactly the NCA's.
- ``RandomTokensDataModule``: the same layout, every patch position iid uniform over the ``n ** (p * p)`` patch
  ids of the automaton's alphabet (no rules are drawn; ``band`` and the rule pools are ignored).

Both are pure functions of (seed, split, sequence index), like the NCA stream, so runs are deterministic by
seed and resume where they stopped. Compose after a stage-1 recipe: ``configs/baselines/shuffled_nca.yaml``,
``configs/baselines/random_tokens.yaml``.
"""

from __future__ import annotations

import torch

from nca.automaton.pool import split_code
from nca.automaton.rng import Domain, hash_keys
from nca.automaton.stream import NCAStream
from nca.automaton.tokenize import PatchTokenizer
from nca.datamodules.nca import NCADataModule

POSITIVE = 0x7FFFFFFFFFFFFFFF


def patch_positions(tokenizer: PatchTokenizer, length: int) -> torch.Tensor:
    """Positions of a row of ``length`` ids that hold patch tokens (not frame delimiters)."""
    offset = torch.arange(length) % tokenizer.frame_len
    return torch.nonzero((offset != 0) & (offset != tokenizer.frame_len - 1)).flatten()


def layout_rows(tokenizer: PatchTokenizer, count: int, length: int) -> torch.Tensor:
    """[count, length] rows holding only the delimiters (patch positions 0), as the NCA stream lays them out."""
    offset = torch.arange(length) % tokenizer.frame_len
    row = torch.zeros(length, dtype=torch.int64)
    row[offset == 0] = tokenizer.start_id
    row[offset == tokenizer.frame_len - 1] = tokenizer.end_id
    return row.expand(count, length).clone()


class ShuffledStream:
    """The NCA stream's rows with each row's patch tokens permuted (a permutation keyed by seed, split, index)."""

    def __init__(self, stream: NCAStream):
        self.stream, self.tokenizer = stream, stream.tokenizer
        self.positions = patch_positions(stream.tokenizer, stream.seq_len + 1)

    @property
    def vocab_size(self) -> int:
        return self.stream.vocab_size

    def rows(self, index) -> torch.Tensor:
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        rows = self.stream.rows(index).cpu()
        keys = hash_keys(self.stream.seed, Domain.SHUFFLE, split_code(self.stream.split), index[:, None],
                         self.positions[None, :])
        order = torch.argsort(keys, dim=1)
        rows[:, self.positions] = rows[:, self.positions].gather(1, order)
        return rows


class RandomTokenStream:
    """Rows in the NCA layout whose patch tokens are iid uniform over the patch ids."""

    def __init__(self, tokenizer: PatchTokenizer, seq_len: int, seed: int, split: str):
        self.tokenizer, self.seq_len, self.seed, self.split = tokenizer, int(seq_len), int(seed), split
        self.positions = patch_positions(tokenizer, self.seq_len + 1)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def rows(self, index) -> torch.Tensor:
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        rows = layout_rows(self.tokenizer, len(index), self.seq_len + 1)
        keys = hash_keys(self.seed, Domain.RANDOM_TOKENS, split_code(self.split), index[:, None], self.positions[None, :])
        rows[:, self.positions] = (keys & POSITIVE) % self.tokenizer.start_id
        return rows


class ShuffledNCADataModule(NCADataModule):
    """The NCA stream with each sequence's patch tokens permuted: the same tokens per sequence, no dynamics.

    Arguments as ``NCADataModule`` (the rows before shuffling are exactly its rows); ``corpus`` is not
    supported (the control is made on the fly)."""

    def source(self, split: str):
        if self.corpus is not None:
            raise ValueError("the shuffled-NCA control makes its rows on the fly: remove data.init_args.corpus")
        return super().source(split)

    def stream(self, split: str) -> ShuffledStream:
        return ShuffledStream(super().stream(split))


class RandomTokensDataModule(NCADataModule):
    """Rows in the NCA format (delimiters, first frame masked) whose patch tokens are iid uniform over the
    ``n ** (p * p)`` patch ids of ``nca`` (its alphabet and patch size; the rules are never used).

    Arguments as ``NCADataModule``; ``band``, ``train_rules``, ``val_rules`` and ``test_rules`` have no effect,
    ``corpus`` is not supported."""

    def source(self, split: str):
        if self.corpus is not None:
            raise ValueError("the random-tokens control makes its rows on the fly: remove data.init_args.corpus")
        return super().source(split)

    def stream(self, split: str) -> RandomTokenStream:
        return RandomTokenStream(self.tokenizer, self.seq_len, self.seed, split)
