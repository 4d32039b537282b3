"""``nca sample``: completions of a text model, or frames an NCA model predicts beside the true ones.

A text model (stage 2/3) continues ``--prompt`` n times and prints the completions (``--out`` also writes them
as JSON lines). A stage-1 model (trained on ``nca.datamodules.nca.NCADataModule``) is given the first
``--context_frames`` frames of a held-out trajectory (the validation split's rules, never seen in training),
continues for ``--frames`` frames, and the true and predicted frames are drawn side by side in a PNG, with
each frame's token accuracy printed. Sampling is ``nca.lit_modules.sampling.sample`` (deterministic by seed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import torch

from nca.cli import parsing
from nca.cli.errors import UsageError


def main(argv: list[str]) -> int:
    return parsing.run(sample_checkpoint, argv, "nca sample")


def sample_checkpoint(ckpt: str, prompt: Optional[str] = None, n: int = 1, temperature: Optional[float] = None,
                      top_p: float = 1.0, top_k: Optional[int] = None, max_new_tokens: int = 256, seed: int = 0,
                      out: Optional[str] = None, tokenizer: Optional[str] = None, stop: list[str] = [],
                      stop_at_eot: bool = True, context_frames: int = 4, frames: int = 4, index: int = 0,
                      device: str = "cpu", dtype: Literal["auto", "float32", "bfloat16"] = "auto",
                      batch_size: int = 64, decoding: Literal["dynamic", "fixed", "compiled"] = "dynamic") -> int:
    """Sample from a checkpoint (any format nca.lit_modules.checkpoint reads).

    Args:
        ckpt: a Lightning .ckpt, sharded FSDP directory or litgpt checkpoint.
        prompt: the text to continue (text models; stage-1 NCA models take a held-out trajectory instead).
        n: samples (of the prompt, or continuations of the trajectory).
        temperature: 0 is greedy; default 1.0 for text models, 0 (greedy) for NCA models.
        top_p: keep the smallest set of most likely tokens with at least this mass.
        top_k: keep the k most likely tokens.
        max_new_tokens: most new tokens per text sample (cut at the model's context).
        seed: sample j of a run is a pure function of (seed, j).
        out: text: a new .jsonl of the completions; NCA: the PNG (default <ckpt stem>-sample<index>.png).
            An existing file is never overwritten.
        tokenizer: a tokenizer directory or tiktoken name, instead of the one the checkpoint records.
        stop: stop strings (text models): a completion ends at the first and its text is cut before it.
        stop_at_eot: end a text completion at the tokenizer's end-of-text id.
        context_frames: NCA: frames of the true trajectory given to the model.
        frames: NCA: frames the model predicts.
        index: NCA: which held-out trajectory (sequence index of the validation stream).
        device: cpu or cuda.
        dtype: auto (bfloat16 on cuda, float32 on cpu), float32 or bfloat16.
        batch_size: rows decoded together.
        decoding: dynamic (rows leave the batch as they finish: least work), fixed (fixed shapes) or compiled
            (fixed shapes under torch.compile, CUDA graphs on a GPU; the first call compiles). The same samples.
    """
    from nca.lit_modules.checkpoint import load_model
    from nca.lit_modules.sampling import SamplingConfig

    if not Path(ckpt).expanduser().exists():
        raise UsageError(f"--ckpt {ckpt} does not exist")
    if out is not None and Path(out).exists():
        raise UsageError(f"{out} already exists; choose another --out")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        dtype, torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    loaded = load_model(ckpt, device=device, dtype=torch_dtype)
    is_nca = loaded.provenance.is_nca
    settings = dict(temperature=(0.0 if is_nca else 1.0) if temperature is None else temperature,
                    top_p=top_p, top_k=top_k)
    try:
        SamplingConfig(**settings)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if is_nca:
        path = Path(out) if out is not None else Path(f"{Path(ckpt).stem}-sample{index}.png")
        if path.exists():
            raise UsageError(f"{path} already exists; choose another --out")
        return continue_trajectory(loaded, SamplingConfig(**settings), n, seed, context_frames, frames, index,
                                   path, batch_size, decoding)
    if prompt is None:
        raise UsageError("--prompt is needed for a text model (only stage-1 NCA checkpoints sample without one)")
    text_tokenizer = _tokenizer(loaded, tokenizer)
    stop_ids = (text_tokenizer.eot_id,) if stop_at_eot else ()
    cfg = SamplingConfig(max_new_tokens=max_new_tokens, stop_ids=stop_ids, stop_strings=tuple(stop), **settings)
    return complete_text(loaded.model, text_tokenizer, prompt, cfg, n, seed, out, batch_size, decoding)


def _tokenizer(loaded, override: Optional[str]):
    from nca.datamodules.tokenizers import load_tokenizer

    spec = override or loaded.tokenizer_spec
    if spec is None:
        raise UsageError(f"{loaded.source} records no text tokenizer; pass --tokenizer DIR "
                         "(the one it was trained with)")
    try:
        tok = load_tokenizer(spec)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise UsageError(f"tokenizer {spec!r}: {err}") from err
    if tok.vocab_size > loaded.config.padded_vocab_size:
        raise UsageError(f"tokenizer {spec!r} has {tok.vocab_size} ids but the model only "
                         f"{loaded.config.padded_vocab_size}: pass the tokenizer the model was trained with")
    return tok


def complete_text(model, tokenizer, prompt: str, cfg, n: int, seed: int, out: Optional[str], batch_size: int,
                  decoding: str = "dynamic") -> int:
    from nca.lit_modules.sampling import sample

    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]  # an empty prompt starts a document
    if len(ids) > model.config.block_size:
        raise UsageError(f"the prompt has {len(ids)} tokens, more than the model's context of "
                         f"{model.config.block_size}: shorten it")
    completions = sample(model, [ids], n, cfg, seed=seed, decode=tokenizer.decode, batch_size=batch_size,
                         decoding=decoding)[0]
    for j, c in enumerate(completions):
        print(f"--- sample {j} ({len(c.tokens)} tokens, {c.finish}) ---")
        print(prompt + c.text)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "x", encoding="utf-8") as f:  # "x": never overwrite
            for j, c in enumerate(completions):
                f.write(json.dumps({"prompt": prompt, "sample": j, "seed": seed, "text": c.text, "tokens": c.tokens,
                                    "finish": c.finish}) + "\n")
        print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------------- NCA models

def decode_frames(tokens: torch.Tensor, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """[F * frame_len] ids -> ([F, H, W] states, [F, H, W] bool invalid); a patch whose token is not a patch
    id (a misplaced delimiter, say) is marked invalid instead of failing the strict decode."""
    frames = tokens.view(-1, tokenizer.frame_len).clone()
    patches = frames[:, 1:-1]
    invalid = (patches < 0) | (patches >= tokenizer.start_id)
    patches[invalid] = 0
    frames[:, 0], frames[:, -1] = tokenizer.start_id, tokenizer.end_id
    grids = tokenizer.decode(frames.flatten())
    side, p = tokenizer.side, tokenizer.patch
    cells = invalid.view(-1, side, side).repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)
    return grids, cells


def continue_trajectory(loaded, cfg, n: int, seed: int, context_frames: int, frames: int, index: int, out: Path,
                        batch_size: int, decoding: str = "dynamic") -> int:
    from nca.lit_modules.sampling import SamplingConfig, sample
    from nca.automaton.render import labelled_strip
    from nca.automaton.stream import NCAStream
    from nca.automaton.tokenize import PatchTokenizer

    settings = loaded.provenance.nca()
    nca, band, data_seed = settings.cfg, settings.band, settings.seed
    tok = PatchTokenizer.from_config(nca)
    total = (context_frames + frames) * tok.frame_len
    if context_frames < 1 or frames < 1:
        raise UsageError("--context_frames and --frames must be >= 1")
    if total > loaded.config.block_size:
        raise UsageError(f"{context_frames} + {frames} frames are {total} tokens, more than the model's context of "
                         f"{loaded.config.block_size}: ask for fewer frames")
    if index < 0:
        raise UsageError("--index must be >= 0")
    row = NCAStream(nca, total - 1, band, seed=data_seed, split="val").rows([index])[0]
    prompt, truth = row[: context_frames * tok.frame_len], row[context_frames * tok.frame_len :]
    cfg = SamplingConfig(max_new_tokens=len(truth), temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    completions = sample(loaded.model, [prompt.tolist()], n, cfg, seed=seed, batch_size=batch_size,
                         decoding=decoding)[0]

    true_grids, _ = decode_frames(truth, tok)
    grids, bad, accuracy = [true_grids], [torch.zeros_like(true_grids, dtype=torch.bool)], []
    for c in completions:
        predicted = torch.tensor(c.tokens, dtype=torch.int64)
        grid, invalid = decode_frames(predicted, tok)
        grids.append(grid)
        bad.append(invalid)
        same = (predicted == truth).view(frames, tok.frame_len)[:, 1:-1]
        accuracy.append(same.float().mean(1))
    picture = torch.stack(grids)
    invalid = torch.stack(bad)
    states = nca.n_states + int(invalid.any())  # one more colour marks patches that are no patch id
    picture[invalid] = nca.n_states
    labels = ["true"] + [f"sample {j}" for j in range(n)]
    title = f"val #{index}, {context_frames} given, T={cfg.temperature:g}"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    labelled_strip(picture, states, title, labels, first_frame=context_frames).save(out)
    _print_accuracy(accuracy, context_frames, tok.patches_per_frame)
    if invalid.any():
        print(f"{int(invalid.sum())} cells lie under tokens that are not patch ids (drawn in the extra colour)")
    print(f"wrote {out}")
    return 0


def _print_accuracy(accuracy: list[torch.Tensor], first_frame: int, patches: int) -> None:
    table = torch.stack(accuracy)  # [samples, frames]
    print(f"token accuracy over the {patches} patch tokens of each predicted frame")
    print("frame  " + "  ".join(f"s{j:<5}" for j in range(len(accuracy))) + "  mean")
    for f in range(table.size(1)):
        cells = "  ".join(f"{v:6.3f}" for v in table[:, f].tolist())
        print(f"t={first_frame + f:<4} {cells}  {table[:, f].mean():.3f}")
    print("all    " + "  ".join(f"{v:6.3f}" for v in table.mean(1).tolist()) + f"  {table.mean():.3f}")
