"""In-context learning measures of a litgpt GPT: loss by position, the ICL score, NCA loss per frame.

Definitions: ``docs/paper.md`` (analysis section). loss_t = -log p(x_{t+1} | x_1..x_t), t = 1..T-1
(t counts the tokens of context). The ICL score (Olsson et al. 2022) is loss_500 - loss_50, averaged over
documents of >= 501 tokens: more negative = more in-context learning. On NCA rows the same curve per frame
(mean loss of the targets inside frame k) shows rule inference: it falls frame by frame when the model
infers the rule from the frames it has seen.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def token_losses(model, rows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """[N, T-1] float32: loss of predicting rows[:, t] from rows[:, :t] (column t-1 holds loss_t)."""
    device = next(model.parameters()).device
    out = []
    for chunk in rows.split(batch_size):
        chunk = chunk.to(device)
        logits = model(chunk[:, :-1]).float()
        out.append(F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="none")
                   .view(len(chunk), -1).cpu())
    return torch.cat(out)


@torch.no_grad()
def batch_losses(model, input_ids: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """[B, T] float32 losses of a training batch (labels already shifted), NaN where no target (``ignore_index``):
    column t holds loss_{t+1}, the same layout as :func:`token_losses`."""
    device = next(model.parameters()).device
    logits = model(input_ids.to(device)).float()
    labels = labels.to(device)
    losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten().clamp(min=0), reduction="none").view(labels.shape)
    return losses.masked_fill(labels == ignore_index, float("nan")).cpu()


def document_rows(documents: Iterable[list[int]], length: int, limit: int) -> torch.Tensor:
    """The first ``length`` ids of up to ``limit`` documents that have at least that many ([N, length])."""
    rows = []
    for ids in documents:
        if len(ids) >= length:
            rows.append(torch.tensor(ids[:length], dtype=torch.int64))
            if len(rows) == limit:
                break
    if not rows:
        raise ValueError(f"no document has >= {length} tokens: give a corpus with longer documents or lower --late")
    return torch.stack(rows)


def loss_slope(curve: Sequence[float], x: Sequence[float]) -> float:
    """Least-squares slope of ``curve`` against ``x`` (nan below two points)."""
    curve, x = np.asarray(curve, dtype=float), np.asarray(x, dtype=float)
    ok = np.isfinite(curve) & np.isfinite(x)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[ok], curve[ok], 1)[0])


def icl_summary(losses: torch.Tensor, early: int = 50, late: int = 500) -> dict:
    """Mean loss_t curve, its slope against ln t, and ICL = loss_late - loss_early (needs T-1 >= late)."""
    if losses.shape[1] < late:
        raise ValueError(f"rows give loss_t only up to t = {losses.shape[1]}, need t = {late}: feed rows of >= {late + 1} tokens")
    if not 1 <= early < late:
        raise ValueError(f"need 1 <= early < late, got early={early}, late={late}")
    curve = losses.nanmean(0)
    t = np.arange(1, len(curve) + 1)
    return {
        "icl_score": float(curve[late - 1] - curve[early - 1]),
        "icl_early": early, "icl_late": late, "documents": int(losses.shape[0]),
        "loss_by_position": curve.tolist(),
        "slope_vs_log_t": loss_slope(curve.numpy(), np.log(t)),
    }


def frame_losses(losses: torch.Tensor, frame_len: int) -> torch.Tensor:
    """[frames] mean loss of the targets inside each frame (NaN losses = no target are skipped); column c holds
    target position p = c + 1, which lies in frame p // frame_len."""
    frame = torch.arange(1, losses.shape[1] + 1) // frame_len
    present = ~losses.isnan()
    sums = torch.zeros(int(frame.max()) + 1).index_add_(0, frame, losses.nan_to_num().sum(0).float())
    counts = torch.zeros(len(sums)).index_add_(0, frame, present.sum(0).float())
    return sums / counts  # NaN for a frame without targets


def nca_summary(losses: torch.Tensor, frame_len: int) -> dict:
    """Per-frame mean loss, and its slope against the frame index over frames 1.. (frame 0 is the random
    initial state, which no rule predicts; a negative slope = the loss falls as frames of the rule are seen)."""
    per_frame = frame_losses(losses, frame_len)
    frames = np.arange(len(per_frame))
    return {
        "loss_by_frame": per_frame.tolist(), "frame_len": frame_len, "sequences": int(losses.shape[0]),
        "frame_slope": loss_slope(per_frame[1:].numpy(), frames[1:]),
        "loss_by_position": losses.nanmean(0).tolist(),
    }


def nca_rows(provenance, sequences: int, seq_len: int | None = None):
    """(rows [N, seq_len + 1], PatchTokenizer) of held-out rules (``split="val"``, a fresh rule per row), made
    with the automaton, band and seed the checkpoint recorded (``Provenance.nca()``); ``seq_len`` overrides the
    recorded length."""
    from nca.automaton.stream import NCAStream

    settings = provenance.nca()
    length = seq_len or settings.seq_len
    if length is None:
        raise ValueError("the checkpoint records no NCA seq_len: pass --seq_len (the training data.init_args.seq_len)")
    stream = NCAStream(seq_len=int(length), split="val", **settings.stream_kwargs())
    return stream.rows(torch.arange(sequences)), stream.tokenizer
