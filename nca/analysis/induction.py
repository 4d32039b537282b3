"""Induction heads of a litgpt GPT: prefix-matching and copying scores of every (layer, head).

Definitions: ``docs/paper.md`` (analysis section). A[l,h] is the post-softmax attention of head h in
layer l (row i = query, column j <= i = key).

- Prefix matching (the headline score, Olsson et al. 2022): on a block of L random tokens repeated r times,
  PM[l,h] = mean over queries i in a repeat after the first of sum_{j in S_i} A[l,h][i,j], with
  S_i = {j < i : x_{j-1} = x_i} (the positions right after earlier copies of x_i).
- TransformerLens's detector (``detect_head``, pattern "induction_head", error measure "mul"):
  sum(A * P) / sum(A) per sequence, P the shifted duplicate-token mask; every row counts, so a sequence
  repeated twice tops out near 0.5. Reported beside PM for comparison with that tool.
- Copying (Elhage et al. 2021): eigenvalues of the OV circuit W_U W_O W_V W_E, computed through the
  d_head x d_head product W_V W_E W_U W_O (same nonzero spectrum); copy = sum(Re l) / sum(|l|) in [-1, 1].
  Norms and MLPs are ignored.

litgpt's SDPA call does not return attention probabilities, so :func:`capture_attention` replaces each
layer's ``scaled_dot_product_attention`` for the duration of a forward pass with the same math written
out: it receives q and k after RoPE, QK-norm and the GQA repeat, and the mask the model itself passes,
so the probabilities are exactly those the model uses (the logits do not change).
"""

from __future__ import annotations

import math
import types
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Reducer = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------- attention maps
def _attention_probs(attn, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Post-softmax attention [B, H, Tq, Tk] in float32, as litgpt's ``scaled_dot_product_attention`` computes it."""
    from litgpt.model import do_softcapping

    cfg = attn.config
    scale = getattr(attn, "mscale", 1.0) ** 2 / math.sqrt(cfg.attention_scores_scalar or cfg.head_size)
    scores = (q.float() @ k.float().mT) * scale
    if cfg.attention_logit_softcapping is not None:
        scores = do_softcapping(scores, cfg.attention_logit_softcapping)
    tq, tk = scores.shape[-2:]
    if mask is None:  # SDPA's is_causal (queries are the last tq of tk positions)
        allowed = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(diagonal=tk - tq)
        scores = scores.masked_fill(~allowed, float("-inf"))
    elif mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    else:
        scores = scores + mask.float()
    return F.softmax(scores, dim=-1)


@contextmanager
def capture_attention(model, reduce: Reducer | None = None) -> Iterator[list[list[torch.Tensor]]]:
    """Within the block, every forward of ``model`` appends ``reduce(A)`` per layer (``A``: [B, H, T, T]).

    Yields ``records`` with ``records[l]`` the list of layer l's results, one per forward pass. Keep
    ``reduce`` small (per-head scores) for long sequences: A itself is B*H*T*T floats per layer.
    """
    blocks = list(model.transformer.h)
    records: list[list[torch.Tensor]] = [[] for _ in blocks]

    def make(layer: int):
        def sdpa(self, q, k, v, mask=None):
            probs = _attention_probs(self, q, k, mask)
            records[layer].append(probs if reduce is None else reduce(probs))
            return (probs.to(v.dtype) @ v).transpose(1, 2)

        return sdpa

    for layer, block in enumerate(blocks):
        block.attn.scaled_dot_product_attention = types.MethodType(make(layer), block.attn)
    try:
        yield records
    finally:
        for block in blocks:
            del block.attn.scaled_dot_product_attention  # back to the class's method


# --------------------------------------------------------------------------------------- probe sequences
def candidate_ids(vocab_size: int, exclude: Sequence[int] = (), counts: np.ndarray | None = None,
                  trim: float = 0.05) -> torch.Tensor:
    """Token ids to draw random blocks from: all ids but ``exclude``, and with a frequency table
    (``counts[id]``) only ids seen at least once, minus the ``trim`` most and least frequent fraction."""
    keep = np.ones(vocab_size, dtype=bool)
    keep[[i for i in exclude if 0 <= i < vocab_size]] = False
    if counts is not None:
        counts = np.asarray(counts)[:vocab_size]
        seen = np.nonzero(keep[: len(counts)] & (counts > 0))[0]
        order = seen[np.argsort(counts[seen], kind="stable")]
        cut = int(len(order) * trim)
        keep[:] = False
        keep[order[cut: len(order) - cut]] = True
    ids = torch.from_numpy(np.nonzero(keep)[0]).to(torch.int64)
    if len(ids) == 0:
        raise ValueError("no token ids left to draw random blocks from: exclude fewer ids or give a larger frequency table")
    return ids


def repeated_random_tokens(candidates: torch.Tensor, block_len: int, repeats: int, batch: int,
                           seed: int = 0) -> torch.Tensor:
    """[batch, block_len * repeats]: each row a block of distinct random ids repeated ``repeats`` times."""
    if block_len < 2 or repeats < 2:
        raise ValueError(f"need block_len >= 2 and repeats >= 2 (got {block_len}, {repeats}): one repeat has no induction targets")
    if block_len > len(candidates):
        raise ValueError(f"block_len {block_len} exceeds the {len(candidates)} candidate ids; lower --block_len")
    g = torch.Generator().manual_seed(seed)
    blocks = torch.stack([candidates[torch.randperm(len(candidates), generator=g)[:block_len]] for _ in range(batch)])
    return blocks.repeat(1, repeats)


# -------------------------------------------------------------------------------- prefix-matching scores
def induction_targets(tokens: torch.Tensor) -> torch.Tensor:
    """S as a bool mask [B, T, T]: S[b, i, j] = j < i and x_{j-1} = x_i (j >= 1)."""
    t = tokens.shape[-1]
    previous = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], dim=1)  # previous[j] = x_{j-1}
    same = previous[:, None, :] == tokens[:, :, None]
    below = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril(diagonal=-1)
    return same & below & (tokens[:, :, None] >= 0)


def prefix_matching(probs: torch.Tensor, tokens: torch.Tensor, first_query: int) -> torch.Tensor:
    """PM per head [H]: mean over queries i >= first_query with non-empty S_i of the attention on S_i."""
    targets = induction_targets(tokens)
    queries = targets.any(-1)
    queries[:, :first_query] = False
    if not queries.any():
        raise ValueError("no query has an earlier copy of its token: feed a repeated sequence")
    mass = (probs * targets[:, None].to(probs.dtype)).sum(-1)  # [B, H, T]
    return (mass * queries[:, None]).sum((0, 2)) / queries.sum()


def transformerlens_induction(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """TransformerLens's "induction_head" detector with error measure "mul", per head [H], mean over sequences.

    Its pattern P[i, j] = 1 for 1 <= j <= i with x_{j-1} = x_i and j - 1 != i (this adds j = i when
    x_{i-1} = x_i to S_i); score = sum(A * P) / sum(A) over all rows of a sequence.
    """
    targets = induction_targets(tokens)
    diagonal = torch.eye(tokens.shape[-1], dtype=torch.bool, device=tokens.device)
    repeat_of_previous = torch.zeros_like(tokens, dtype=torch.bool)
    repeat_of_previous[:, 1:] = tokens[:, 1:] == tokens[:, :-1]
    pattern = targets | (diagonal & repeat_of_previous[:, :, None])
    per_sequence = (probs * pattern[:, None].to(probs.dtype)).sum((-1, -2)) / probs.sum((-1, -2))  # [B, H]
    return per_sequence.mean(0)


@torch.no_grad()
def attention_scores(model, tokens: torch.Tensor, block_len: int) -> dict[str, torch.Tensor]:
    """{"prefix_matching", "transformerlens_mul"}: [layers, heads] on repeated random ``tokens``."""
    tokens = tokens.to(next(model.parameters()).device)

    def reduce(probs: torch.Tensor) -> torch.Tensor:
        return torch.stack([prefix_matching(probs, tokens, block_len), transformerlens_induction(probs, tokens)])

    with capture_attention(model, reduce) as records:
        model(tokens)
    both = torch.stack([layer[-1] for layer in records]).cpu()  # [layers, 2, heads]
    return {"prefix_matching": both[:, 0], "transformerlens_mul": both[:, 1]}


# ------------------------------------------------------------------------------------------- copying
def ov_circuits(model) -> torch.Tensor:
    """[layers, heads, d_head, d_head]: W_V W_E W_U W_O of each head (float64), with W_E = wte rows, W_U = lm_head.

    litgpt's fused ``qkv.weight`` holds all query heads, then the n_query_groups key heads, then the value
    heads (legacy interleaved checkpoints are re-assembled into this layout when loaded); query head h reads
    value group h // (n_head / n_query_groups). Padded vocabulary rows are left out.
    """
    cfg = model.config
    hs, nh, ng, vocab = cfg.head_size, cfg.n_head, cfg.n_query_groups, cfg.vocab_size
    embed = model.transformer.wte.weight[:vocab].detach().double()  # [V, d]
    unembed = model.lm_head.weight[:vocab].detach().double()  # [V, d]
    through_vocab = embed.T @ unembed  # [d, d] = W_E W_U in the column convention
    value_start = (nh + ng) * hs
    out = []
    for block in model.transformer.h:
        qkv = block.attn.qkv.weight.detach().double()
        proj = block.attn.proj.weight.detach().double()  # [d, nh * hs]
        heads = []
        for h in range(nh):
            g = h // (nh // ng)
            w_v = qkv[value_start + g * hs: value_start + (g + 1) * hs]  # [hs, d]
            w_o = proj[:, h * hs: (h + 1) * hs]  # [d, hs]
            heads.append(w_v @ through_vocab @ w_o)
        out.append(torch.stack(heads))
    return torch.stack(out)


def copying_scores(model) -> torch.Tensor:
    """[layers, heads] float32: sum(Re l) / sum(|l|) over the eigenvalues of each head's OV circuit."""
    eig = torch.linalg.eigvals(ov_circuits(model))
    return (eig.real.sum(-1) / eig.abs().sum(-1).clamp(min=1e-30)).float()


def induction_report(model, tokens: torch.Tensor, block_len: int, threshold: float = 0.4) -> dict:
    """Every per-head score as nested lists plus the summary numbers (top PM head, count of induction heads)."""
    scores = attention_scores(model, tokens, block_len)
    copy = copying_scores(model)
    pm = scores["prefix_matching"]
    top = int(pm.argmax())
    layer, head = divmod(top, pm.shape[1])
    heads = (pm > threshold) & (copy > 0)
    return {
        "headline": "prefix_matching",
        "block_len": block_len, "repeats": tokens.shape[1] // block_len, "sequences": tokens.shape[0],
        "prefix_matching": pm.tolist(), "transformerlens_mul": scores["transformerlens_mul"].tolist(),
        "copying": copy.tolist(),
        "top_prefix_matching": {"layer": layer, "head": head, "score": float(pm[layer, head]),
                                "copying": float(copy[layer, head])},
        "induction_heads": [[int(l), int(h)] for l, h in heads.nonzero().tolist()],
        "induction_threshold": threshold,
    }


def heads_figure(prefix: Sequence[Sequence[float]], copy: Sequence[Sequence[float]], title: str = ""):
    """A matplotlib Figure (Agg) with two layer x head heatmaps: prefix matching [0, 1] and copying [-1, 1]."""
    from matplotlib.figure import Figure

    prefix, copy = np.asarray(prefix), np.asarray(copy)
    layers, heads = prefix.shape
    fig = Figure(figsize=(2.0 + 1.2 * heads, 1.2 + 0.5 * layers), layout="constrained")
    for ax, values, name, cmap, limits in zip(
        fig.subplots(1, 2), (prefix, copy), ("prefix matching", "copying (OV eigenvalues)"),
        ("viridis", "RdBu"), ((0.0, 1.0), (-1.0, 1.0))
    ):
        image = ax.imshow(values, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
        ax.set(title=name, xlabel="head", ylabel="layer", xticks=range(heads), yticks=range(layers))
        if layers * heads <= 256:
            for (i, j), v in np.ndenumerate(values):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="black" if cmap == "RdBu" or v > 0.5 else "white")
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig
