"""Batched, deterministic sampling from litgpt's ``GPT``: n samples of many prompts decoded together.

How the work is shared: each prompt is run through the model once (its n samples copy its KV-cache prefix),
samples then decode together in one batch of ``batch_size`` rows with their own positions (litgpt's KV cache
with a per-row ``input_pos``), and a row that finishes (stop id, stop string, ``max_new_tokens`` or the end
of the context) hands its slot to the next pending sample at once, or the batch shrinks when none is left.

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
from litgpt.model import GPT, KVCache

from nca.automaton.rng import Domain, hash_keys, to_uniform

PREFILL_LOGITS = 1 << 26  # most logits one prefill call may hold (prompts are prefilled in chunks under it)


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens. Filters apply as in litgpt: top-k, then temperature, then top-p.

    ``max_new_tokens`` is cut where prompt + completion would pass the model's context (finish "context").
    ``temperature`` 0 is greedy (argmax). ``top_p`` keeps the smallest set of most likely tokens whose mass
    is >= top_p; ``top_k`` keeps the tokens whose logit is >= the k-th largest (ties at the k-th are kept).
    A ``stop_ids`` token ends its row and is left out of ``tokens``; a ``stop_strings`` match ends it after the
    token that completes the string (``tokens`` keeps that token, ``text`` is cut before the string).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    stop_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 0:
            problems.append(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"top_k must be >= 1 or None, got {self.top_k}")
        if any(not s for s in self.stop_strings):
            problems.append("stop_strings must not contain the empty string")
        if problems:
            raise ValueError("invalid SamplingConfig: " + "; ".join(problems))
        object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))


@dataclass
class Completion:
    tokens: list[int]  # new tokens only, cut at the stop
    text: str | None  # decode(tokens), cut before a stop string; None without decode
    finish: str  # "stop" | "length" | "context"


# --------------------------------------------------------------------------------------------- choosing
def filtered_probs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """[rows, V] logits -> float32 probabilities after top-k, temperature and top-p (rows sum to 1)."""
    x = logits.float()
    if cfg.top_k is not None and cfg.top_k < x.size(-1):
        kth = torch.topk(x, cfg.top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x / cfg.temperature, dim=-1)
    if cfg.top_p < 1:
        ordered, order = probs.sort(dim=-1, descending=True)
        mass_before = ordered.cumsum(-1) - ordered  # a token is kept while the mass above it is < top_p
        drop = (mass_before >= cfg.top_p).scatter(-1, order, mass_before >= cfg.top_p)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor, block: int = 256) -> torch.Tensor:
    """Per row, the first index whose cumulative weight exceeds ``uniform * total`` (never a zero weight).

    Two levels (sums of blocks of ``block`` ids, then a cumulative sum inside the chosen block only): a full
    cumulative sum over 50k ids is slow on CPU and sums its rounding over the whole vocabulary.
    """
    rows, vocab = weights.shape
    blocks = -(-vocab // block)
    w = torch.nn.functional.pad(weights, (0, blocks * block - vocab)).view(rows, blocks, block)
    sums = w.sum(-1)
    cum = sums.cumsum(-1)
    target = uniforms.to(cum.dtype) * cum[:, -1]
    last = (cum < cum[:, -1:]).sum(-1, keepdim=True)  # the last block with weight: rounding cannot pass it
    b = torch.searchsorted(cum, target.unsqueeze(-1), right=True).clamp_(max=last)
    rest = (target.unsqueeze(-1) - (cum.gather(-1, b) - sums.gather(-1, b))).clamp_(min=0)
    inner = w[torch.arange(rows, device=w.device), b.squeeze(-1)].cumsum(-1)
    last = (inner < inner[:, -1:]).sum(-1, keepdim=True)
    i = torch.searchsorted(inner, rest, right=True).clamp_(max=last)
    return (b * block + i).squeeze(-1)


def choose_tokens(logits: torch.Tensor, cfg: SamplingConfig, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row: argmax when greedy, else the inverse CDF (in vocabulary order) at ``uniforms``.

    Vocabulary order, not probability order, keeps a tiny change of the logits a tiny move of the CDF.
    """
    if cfg.temperature == 0:
        return logits.argmax(-1)
    return inverse_cdf(filtered_probs(logits, cfg), uniforms)


def step_uniforms(seed: int, prompt_ids: torch.Tensor, sample_ids: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    return to_uniform(hash_keys(seed, int(Domain.SAMPLING), prompt_ids, sample_ids, steps))


# --------------------------------------------------------------------------------------------- the cache
class RowKVCache(KVCache):
    """litgpt's KV cache with a position per row (``input_pos`` [rows, 1], written by one scatter instead of
    litgpt's loop over rows), and a prefill mode: with ``slots`` set, a prompt chunk starting at position 0 is
    written into those cache rows and attends only to itself."""

    slots: torch.Tensor | None = None

    def forward(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)
        if self.slots is not None:
            t = k.size(2)
            self.k[self.slots, :, :t] = k
            self.v[self.slots, :, :t] = v
            return k, v
        if input_pos.dim() == 1:
            return super().forward(input_pos, k, v)
        rows = k.size(0)
        index = input_pos.view(rows, 1, -1, 1).expand(-1, k.size(1), -1, k.size(3))
        k_rows, v_rows = self.k[:rows], self.v[:rows]
        k_rows.scatter_(2, index, k)
        v_rows.scatter_(2, index, v)
        return k_rows, v_rows


def _install_caches(model: GPT, rows: int, length: int, device: torch.device, dtype: torch.dtype) -> list[RowKVCache]:
    if any(block.attn.apply_sliding_window_attention for block in model.transformer.h):
        raise ValueError("nca.lit_modules.sampling does not handle sliding-window attention models")
    model.set_kv_cache(1, length, device=device, dtype=dtype)  # litgpt's mask cache for `length` positions
    caches = []
    for block in model.transformer.h:
        shape = block.attn.build_kv_cache(rows, length, model.rope_cache_length(), torch.device("meta"))
        cache = RowKVCache(tuple(shape.k.shape), tuple(shape.v.shape), device=device, dtype=dtype)
        block.attn.kv_cache = cache
        caches.append(cache)
    return caches


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
        self.length = max([len(prompts[i]) + self.budgets[i] - 1 for i, _ in self.queue] or [1])
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

    def _fill(self) -> None:
        """Give free slots to pending samples until the batch is full or nothing is pending."""
        while self.queue and len(self.rows) < self.slots:
            base = len(self.rows)
            groups = self._take(self.slots - base)
            slot_of, slot = {}, base
            for i, samples in groups:
                slot_of[i] = list(range(slot, slot + len(samples)))
                slot += len(samples)
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
            tokens = choose_tokens(first, self.cfg, self._uniforms(new)).tolist()
            self.rows.extend(new)
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
    def _uniforms(self, rows: list[_Row]) -> torch.Tensor:
        """Hashed on the CPU (exact integer arithmetic, so the same values as on a GPU, without ~50 tiny kernels)."""
        ids = torch.tensor([[self.prompt_ids[r.prompt], r.sample, len(r.tokens)] for r in rows])
        return step_uniforms(self.seed, ids[:, 0], ids[:, 1], ids[:, 2]).to(self.device)

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
        logits = self.model(last, input_pos, input_pos_maxp1=max(pos) + 1)[:, 0, : self.vocab]
        for row, token in zip(rows, choose_tokens(logits, self.cfg, self._uniforms(rows)).tolist()):
            self._push(row, token)
        self._retire()

    def run(self) -> list[list[Completion]]:
        self._report(sum(c is not None for per_prompt in self.results for c in per_prompt))
        if self.queue:
            self.caches = _install_caches(self.model, self.slots, self.length, self.device, self.dtype)
            try:
                while self.queue or self.rows:
                    self._fill()
                    if self.rows:
                        self._step()
            finally:
                self.model.clear_kv_cache()
        return self.results  # type: ignore[return-value]


def sample(model: GPT, prompts: Sequence[Sequence[int]], n: int, cfg: SamplingConfig, *, seed: int = 0,
           prompt_ids: Sequence[int] | None = None, decode: Callable[[list[int]], str] | None = None,
           batch_size: int = 64, progress: Callable[[int], None] | None = None) -> list[list[Completion]]:
    """``n`` completions of each prompt: ``sample(...)[i][j]`` is sample j of prompt i (see the module doc).

    ``prompt_ids`` (default 0, 1, ...) key the randomness, so a prompt keeps its samples when the list it
    comes in changes. ``progress(k)`` is told each time k more samples have finished (a tqdm ``update``).
    The model runs in inference mode in its own dtype and device; its KV cache is cleared afterwards.
    """
    prompts = [list(map(int, p)) for p in prompts]
    prompt_ids = list(range(len(prompts))) if prompt_ids is None else [int(i) for i in prompt_ids]
    _check(model, prompts, n, cfg, prompt_ids, decode, batch_size)
    with torch.inference_mode():
        return _Decoder(model, prompts, n, cfg, int(seed), prompt_ids, decode, batch_size, progress).run()


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
