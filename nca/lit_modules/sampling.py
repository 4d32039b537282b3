"""Batched, deterministic sampling from litgpt's ``GPT``: n samples of many prompts decoded together.

How the work is shared: each prompt is run through the model once (its n samples copy its KV-cache prefix),
samples then decode together in one batch of ``batch_size`` rows with their own positions (litgpt's KV cache
with a per-row ``input_pos``), and a row that finishes (stop id, stop string, ``max_new_tokens`` or the end
of the context) hands its slot to the next pending sample at once, or the batch shrinks when none is left.
``decoding="fixed"`` keeps every slot in the batch and attends over the whole preallocated cache, so each step
has the same shapes; ``"compiled"`` runs that step under torch.compile, with CUDA graphs on a GPU
(``nca.lit_modules.decoding``). Attention spans are multiples of ``SPAN`` positions in every path, which makes the
three give bit-equal samples on CPU (on a GPU within the rounding limit below, which depends on its kernels).

What is random: the token of step t of sample j of prompt p is the inverse CDF of the (top-k / top-p
filtered, tempered) next-token distribution at one uniform that is a hash of (seed, prompt id, j, t), the
counter-based generator of ``nca.automaton.rng``. Nothing depends on the order rows run in, so a sample is
a pure function of (model, prompt, seed, prompt id, sample index), whatever ``batch_size`` or which prompts
share a batch. Guarantee and its limit: the uniforms are exactly equal; the logits of a row can differ in
the last bits between batch shapes (matrix kernels sum in shape-dependent order), so a token can change only
where its uniform falls within that rounding of a CDF boundary (or two greedy logits tie within it): rare in
float32 (the tests' float32 models show none), less rare in bfloat16. Equal settings and batch shapes on one
machine give bit-equal runs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from litgpt.model import GPT

from nca.lit_modules.decoding import (  # noqa: F401 (filtered_probs, inverse_cdf: the sampler's API here too)
    SamplingConfig,
    choose_tokens,
    compiled_step,
    filtered_probs,
    fixed_step,
    install_caches,
    inverse_cdf,
    step_uniforms,
)

PREFILL_LOGITS = 1 << 26  # most logits one prefill call may hold (prompts are prefilled in chunks under it)
DECODINGS = ("dynamic", "fixed", "compiled")
# Cache lengths and attention spans are multiples of this (or the model's context): attention over a multiple of
# 128 positions gives bit-equal results whatever masked positions follow (fused kernels add masked blocks as exact
# zeros), so the dynamic and fixed-shape paths agree exactly on CPU; fewer shapes to compile, too.
SPAN = 128


@dataclass
class Completion:
    tokens: list[int]  # new tokens only, cut at the stop
    text: str | None  # decode(tokens), cut before a stop string; None without decode
    finish: str  # "stop" | "length" | "context"


def _round(length: int) -> int:
    return -(-length // SPAN) * SPAN


# --------------------------------------------------------------------------------------------- rows
@dataclass
class _Row:
    prompt: int  # index into prompts
    sample: int  # j
    length: int  # prompt length
    budget: int  # most new tokens (max_new_tokens cut to the context)
    tokens: list[int]
    finish: str | None = None


class _Decoder:
    """The loop: fill free slots (prefill once per prompt), decode all live rows one token, retire finished."""

    def __init__(self, model, prompts, n, cfg, seed, prompt_ids, decode, batch_size, progress):
        self.model, self.prompts, self.n, self.cfg, self.seed = model, prompts, n, cfg, seed
        self.prompt_ids, self.decode, self.progress = prompt_ids, decode, progress
        self.vocab = model.config.vocab_size
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        block = model.config.block_size
        self.budgets = [min(cfg.max_new_tokens, block - len(p)) for p in prompts]
        self.results: list[list[Completion | None]] = [[None] * n for _ in prompts]
        self.queue: deque[tuple[int, int]] = deque()
        for i, budget in enumerate(self.budgets):
            for j in range(n):
                if budget > 0:
                    self.queue.append((i, j))
                else:  # nothing to generate: no model call
                    self._finish(_Row(i, j, len(prompts[i]), 0, [], "length" if cfg.max_new_tokens == 0 else "context"))
        self.slots = max(1, min(batch_size, len(self.queue)))
        longest = max([len(prompts[i]) + self.budgets[i] - 1 for i, _ in self.queue] or [1])
        self.length = min(block, _round(longest))
        self.stop_window = max([len(s.encode()) for s in cfg.stop_strings] or [0]) + 4
        self.rows: list[_Row] = []  # live rows; row r sits in cache slot r
        self.stored: dict[int, tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def _finish(self, row: _Row) -> None:
        text = None
        if self.decode is not None:
            text = self.decode(row.tokens)
            cuts = [at for at in (text.find(s) for s in self.cfg.stop_strings) if at >= 0]
            if cuts:
                text = text[: min(cuts)]
        self.results[row.prompt][row.sample] = Completion(row.tokens, text, row.finish)

    def _report(self, finished: int) -> None:
        if finished and self.progress is not None:
            self.progress(finished)

    def _push(self, row: _Row, token: int) -> None:
        """Add a sampled token to a row and mark it finished if it ends the row."""
        if token in self.cfg.stop_ids:
            row.finish = "stop"
            return
        row.tokens.append(token)
        if self.cfg.stop_strings and self.decode is not None:
            tail = self.decode(row.tokens[-self.stop_window:])
            if any(s in tail for s in self.cfg.stop_strings):
                row.finish = "stop"
                return
        if len(row.tokens) >= row.budget:
            row.finish = "length" if row.budget == self.cfg.max_new_tokens else "context"

    # -- filling slots ---------------------------------------------------------------------------
    def _take(self, free: int) -> list[tuple[int, list[int]]]:
        """The next ``free`` pending samples, grouped by prompt: [(prompt, [sample, ...]), ...]."""
        groups: list[tuple[int, list[int]]] = []
        for _ in range(min(free, len(self.queue))):
            i, j = self.queue.popleft()
            if groups and groups[-1][0] == i:
                groups[-1][1].append(j)
            else:
                groups.append((i, [j]))
        return groups

    def _prefill(self, prompts: list[int], first_slots: list[int]) -> list[torch.Tensor]:
        """Run prompts (right-padded) into the cache rows ``first_slots``; their last-position logits."""
        longest = max(len(self.prompts[i]) for i in prompts)
        x = torch.zeros(len(prompts), longest, dtype=torch.int64)
        for r, i in enumerate(prompts):
            x[r, : len(self.prompts[i])] = torch.as_tensor(self.prompts[i])
        slots = torch.tensor(first_slots, device=self.device)
        for cache in self.caches:
            cache.slots = slots
        try:
            pos = torch.arange(longest, device=self.device)
            logits = self.model(x.to(self.device), pos, input_pos_maxp1=longest)
        finally:
            for cache in self.caches:
                cache.slots = None
        # clones: a kept prompt must not hold the whole chunk's logits alive
        return [logits[r, len(self.prompts[i]) - 1, : self.vocab].clone() for r, i in enumerate(prompts)]

    def _copy_prefix(self, src: int | list[tuple[torch.Tensor, torch.Tensor]], dst: list[int], length: int) -> None:
        if not dst:
            return
        index = torch.tensor(dst, device=self.device)
        for layer, cache in enumerate(self.caches):
            if isinstance(src, int):  # a cache row: copied out first, since source and targets share the buffer
                k, v = cache.k[src, :, :length].clone(), cache.v[src, :, :length].clone()
            else:
                k, v = src[layer]
            cache.k[index, :, :length] = k
            cache.v[index, :, :length] = v

    def _free(self) -> list[int]:
        """Cache slots without a live row (here: after the live rows, which sit in slots 0..m-1)."""
        return list(range(len(self.rows), self.slots))

    def _live(self) -> list[_Row]:
        return self.rows

    def _fill(self) -> None:
        """Give free slots to pending samples until the batch is full or nothing is pending."""
        while self.queue and (free := self._free()):
            groups = self._take(len(free))
            slot_of, taken = {}, 0
            for i, samples in groups:
                slot_of[i] = free[taken: taken + len(samples)]
                taken += len(samples)
            logits: dict[int, torch.Tensor] = {}
            fresh = [i for i, _ in groups if i not in self.stored]
            for chunk in self._chunks(fresh):
                for i, row_logits in zip(chunk, self._prefill(chunk, [slot_of[i][0] for i in chunk])):
                    logits[i] = row_logits
            pending = {self.queue[0][0]} if self.queue else set()
            for i, samples in groups:
                length = len(self.prompts[i])
                if i in self.stored:
                    kv, logits[i] = self.stored[i] if i in pending else self.stored.pop(i)
                    self._copy_prefix(kv, slot_of[i], length)
                else:
                    self._copy_prefix(slot_of[i][0], slot_of[i][1:], length)
                    if i in pending:  # samples of this prompt wait for later slots: keep its prefix
                        src = slot_of[i][0]
                        kv = [(c.k[src, :, :length].clone(), c.v[src, :, :length].clone()) for c in self.caches]
                        self.stored[i] = (kv, logits[i])
            new = [_Row(i, j, len(self.prompts[i]), self.budgets[i], []) for i, samples in groups for j in samples]
            first = torch.stack([logits[row.prompt] for row in new])
            tokens = choose_tokens(first, self.cfg, self._uniforms(new).to(self.device)).tolist()
            for row, slot in zip(new, free):
                self._place(slot, row)
            for row, token in zip(new, tokens):
                self._push(row, token)
            self._retire()

    def _chunks(self, prompts: list[int]) -> list[list[int]]:
        chunks: list[list[int]] = []
        for i in prompts:
            longest = max([len(self.prompts[k]) for k in (chunks[-1] if chunks else [])] + [len(self.prompts[i])])
            if chunks and (len(chunks[-1]) + 1) * longest * self.model.config.padded_vocab_size <= PREFILL_LOGITS:
                chunks[-1].append(i)
            else:
                chunks.append([i])
        return chunks

    # -- decoding -------------------------------------------------------------------------------
    def _place(self, slot: int, row: _Row) -> None:
        self.rows.append(row)  # the free slots are taken in order, so ``slot`` is len(self.rows)

    def _uniforms(self, rows: list[_Row]) -> torch.Tensor:
        """Hashed on the CPU (exact integer arithmetic, so the same values as on a GPU, without ~50 tiny kernels)."""
        ids = torch.tensor([[self.prompt_ids[r.prompt], r.sample, len(r.tokens)] for r in rows])
        return step_uniforms(self.seed, ids[:, 0], ids[:, 1], ids[:, 2])

    def _retire(self) -> None:
        """Finish the done rows; move the last live rows into their slots so live rows stay 0..m-1."""
        done = [r for r, row in enumerate(self.rows) if row.finish is not None]
        if not done:
            return
        for r in done:
            self._finish(self.rows[r])
        self._report(len(done))
        keep = len(self.rows) - len(done)
        holes = [r for r in done if r < keep]
        movers = [r for r in range(keep, len(self.rows)) if self.rows[r].finish is None]
        if holes:
            src, dst = torch.tensor(movers, device=self.device), torch.tensor(holes, device=self.device)
            width = max(self.rows[r].length + len(self.rows[r].tokens) for r in movers)
            for cache in self.caches:
                cache.k[dst, :, :width] = cache.k[src, :, :width]
                cache.v[dst, :, :width] = cache.v[src, :, :width]
            for h, m in zip(holes, movers):
                self.rows[h] = self.rows[m]
        del self.rows[keep:]

    def _step(self) -> None:
        rows = self.rows
        last = torch.tensor([[r.tokens[-1]] for r in rows], device=self.device)
        pos = [r.length + len(r.tokens) - 1 for r in rows]  # where the last token sits
        input_pos = torch.tensor(pos, device=self.device).unsqueeze(1)
        span = min(self.length, _round(max(pos) + 1))  # attention stops at the longest row (rounded)
        logits = self.model(last, input_pos, input_pos_maxp1=span)[:, 0, : self.vocab]
        for row, token in zip(rows, choose_tokens(logits, self.cfg, self._uniforms(rows).to(self.device)).tolist()):
            self._push(row, token)
        self._retire()

    def run(self) -> list[list[Completion]]:
        self._report(sum(c is not None for per_prompt in self.results for c in per_prompt))
        if self.queue:
            self.caches = install_caches(self.model, self.slots, self.length, self.device, self.dtype)
            try:
                while self.queue or self._live():
                    self._fill()
                    if self._live():
                        self._step()
            finally:
                self.model.clear_kv_cache()
        return self.results  # type: ignore[return-value]


class _FixedDecoder(_Decoder):
    """The same loop with fixed shapes: ``slots`` rows decode every step (a free slot decodes a dummy token that
    nothing reads), a row keeps its slot until it finishes (no moving of cache rows), and attention covers the
    whole cache. One step is then one call of ``step`` on tensors of unchanging shapes (``fixed_step`` or its
    compiled form). Same tokens as ``_Decoder`` (bit-equal on CPU): each row computes alone, over whole
    ``SPAN`` blocks, with its own uniforms."""

    def __init__(self, *args, step=fixed_step):
        super().__init__(*args)
        self.step = step
        self.rows: list[_Row | None] = [None] * self.slots  # type: ignore[assignment]

    def _free(self) -> list[int]:
        return [s for s, row in enumerate(self.rows) if row is None]

    def _live(self) -> list[_Row]:
        return [row for row in self.rows if row is not None]

    def _place(self, slot: int, row: _Row) -> None:
        self.rows[slot] = row

    def _retire(self) -> None:
        done = [s for s, row in enumerate(self.rows) if row is not None and row.finish is not None]
        for s in done:
            self._finish(self.rows[s])
            self.rows[s] = None
        self._report(len(done))

    def _step(self) -> None:
        live = [(s, row) for s, row in enumerate(self.rows) if row is not None]
        last, pos = [0] * self.slots, [0] * self.slots
        for s, row in live:
            last[s], pos[s] = row.tokens[-1], row.length + len(row.tokens) - 1
        uniforms = torch.full((self.slots,), 0.5)
        uniforms[[s for s, _ in live]] = self._uniforms([row for _, row in live])
        tokens = self.step(self.model, torch.tensor(last, device=self.device).unsqueeze(1),
                           torch.tensor(pos, device=self.device).unsqueeze(1), uniforms.to(self.device),
                           self.cfg, self.vocab).tolist()
        for s, row in live:
            self._push(row, tokens[s])
        self._retire()


def sample(model: GPT, prompts: Sequence[Sequence[int]], n: int, cfg: SamplingConfig, *, seed: int = 0,
           prompt_ids: Sequence[int] | None = None, decode: Callable[[list[int]], str] | None = None,
           batch_size: int = 64, progress: Callable[[int], None] | None = None,
           decoding: str = "dynamic") -> list[list[Completion]]:
    """``n`` completions of each prompt: ``sample(...)[i][j]`` is sample j of prompt i (see the module doc).

    ``prompt_ids`` (default 0, 1, ...) key the randomness, so a prompt keeps its samples when the list it
    comes in changes. ``progress(k)`` is told each time k more samples have finished (a tqdm ``update``).
    ``decoding``: ``dynamic`` (the batch shrinks as rows finish and attention stops at the longest row: least
    work, per-step shapes change), ``fixed`` (fixed shapes, eager) or ``compiled`` (fixed shapes under
    torch.compile; the first call compiles, which takes seconds to minutes, so it pays off on long runs).
    The model runs without autograd in its own dtype and device; its KV cache is cleared afterwards.
    """
    prompts = [list(map(int, p)) for p in prompts]
    prompt_ids = list(range(len(prompts))) if prompt_ids is None else [int(i) for i in prompt_ids]
    _check(model, prompts, n, cfg, prompt_ids, decode, batch_size)
    if decoding not in DECODINGS:
        raise ValueError(f"unknown decoding {decoding!r}: choose one of {', '.join(DECODINGS)}")
    args = (model, prompts, n, cfg, int(seed), prompt_ids, decode, batch_size, progress)
    if decoding == "dynamic":
        with torch.inference_mode():
            return _Decoder(*args).run()
    device = next(model.parameters()).device
    step = compiled_step(device) if decoding == "compiled" else fixed_step
    with torch.no_grad():  # not inference mode: CUDA graphs and compiled graphs take plain tensors
        return _FixedDecoder(*args, step=step).run()


def _check(model, prompts, n, cfg, prompt_ids, decode, batch_size) -> None:
    """Every input problem, before any model call."""
    vocab, block = model.config.vocab_size, model.config.block_size
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    if len(prompt_ids) != len(prompts):
        raise ValueError(f"{len(prompt_ids)} prompt_ids for {len(prompts)} prompts: give one id per prompt")
    if cfg.stop_strings and decode is None:
        raise ValueError("stop_strings need decode= (a function from token ids to text), e.g. tokenizer.decode")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty: give at least one token (e.g. the end-of-text id)")
        if len(p) > block:
            raise ValueError(f"prompt {i} has {len(p)} tokens, more than the model's context of {block}: shorten it")
        if min(p) < 0 or max(p) >= vocab:
            raise ValueError(f"prompt {i} has token ids outside [0, {vocab}): was it made with the model's tokenizer?")
