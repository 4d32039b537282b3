"""Export a trained checkpoint as a litgpt checkpoint directory or a Hugging Face Llama directory.

Both formats carry the text tokenizer the model was trained with, so the directory is usable as it is:
``litgpt generate|chat|evaluate DIR`` or ``transformers.AutoModelForCausalLM.from_pretrained(DIR)``. GPT-2 BPE
files (``encoder.json`` + ``vocab.bpe``) become a ``tokenizer.json`` (Hugging Face ``tokenizers``, byte-level
BPE) offline; it encodes text exactly as the training tokenizer does, except that a literal ``<|endoftext|>``
inside a text becomes the one end-of-text id (Hugging Face's GPT-2 convention) where training read it as
characters. litgpt directories also get the Hugging Face ``config.json`` that ``litgpt evaluate`` needs.
Everything is built and checked in memory first and written to a hidden sibling directory that is renamed
into place last, so a failed export never leaves a half-written ``--out``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from nca.lit_modules.checkpoint import LoadedModel, load_model, read_meta

FORMATS = ("litgpt", "hf")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAMPLE_TEXT = "Hello world! The cell's 12 neighbours, naïvely counted:\n\tx = 3.5 * y"
# Files of a tokenizer directory that both litgpt and transformers read.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json",
                   "special_tokens_map.json")
# Settings under which litgpt's GPT computes exactly what transformers' LlamaForCausalLM computes.
LLAMA_EQUIVALENT = dict(
    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", bias=False, attn_bias=False, lm_head_bias=False,
    parallel_residual=False, shared_attention_norm=False, rotary_percentage=1.0, rope_condense_ratio=1,
    rope_adjustments=None, rope_interleave=False, norm_qk=False, post_attention_norm=False, post_mlp_norm=False,
    scale_embeddings=False, attention_scores_scalar=None, sliding_window_size=None,
    attention_logit_softcapping=None, final_logit_softcapping=None, norm_1=True, norm_2=True, latent_attention=None,
)


@dataclass
class TokenizerFiles:
    """The tokenizer files to write (name -> text or source path), its ids, and why there may be none."""

    files: dict[str, str | dict | Path] = field(default_factory=dict)  # text, JSON, or a file to copy
    eos_id: int | None = None
    bos_id: int | None = None
    vocab_size: int | None = None
    warning: str | None = None


@dataclass
class ExportResult:
    out: Path
    format: str
    files: list[str]
    source_format: str
    warnings: list[str]


# --------------------------------------------------------------------------------------------- tokenizer
def _bpe_pair(directory: Path) -> tuple[Path, Path] | None:
    from nca.datamodules.tokenizers import BPE_FILE_PAIRS

    for vocab, merges in BPE_FILE_PAIRS:
        if (directory / vocab).is_file() and (directory / merges).is_file():
            return directory / vocab, directory / merges
    return None


def bpe_tokenizer_json(vocab_json: Path, merges: Path) -> str:
    """A Hugging Face ``tokenizer.json`` for GPT-2-style byte-level BPE files, with ``<|endoftext|>`` special."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    from nca.datamodules.tokenizers import END_OF_TEXT

    tok = Tokenizer(models.BPE.from_file(str(vocab_json), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(END_OF_TEXT, special=True, normalized=False)])
    return tok.to_str(pretty=True)


def _special_files(eos: str, eos_id: int) -> dict[str, dict]:
    """tokenizer_config.json / generation_config.json as litgpt and transformers read them (no BOS added)."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": eos, "eos_token": eos, "unk_token": eos,
              "add_bos_token": False, "add_eos_token": False}
    return {"tokenizer_config.json": config, "generation_config.json": {"bos_token_id": eos_id, "eos_token_id": eos_id}}


def tokenizer_files(spec: str | None, explicit: bool = False) -> TokenizerFiles:
    """Resolve a tokenizer spec (a directory, a tiktoken name or None) to the files an export writes.

    A spec given by the user (``explicit``) must be usable; one recorded in the checkpoint that is not (a
    tiktoken name whose files are not local, a directory that moved) yields a warning and no files.
    """
    from litgpt.tokenizer import Tokenizer

    from nca.datamodules.tokenizers import END_OF_TEXT

    fix = "pass --tokenizer DIR (encoder.json + vocab.bpe, or tokenizer.json + tokenizer_config.json)"
    if spec is None:
        return TokenizerFiles(warning="the checkpoint records no text tokenizer (NCA/Dyck data or a bare litgpt "
                              f"file): wrote weights + config only; {fix} to include one")
    directory = Path(spec).expanduser()
    if not directory.is_dir():
        problem = (f"tokenizer {spec!r} is a tiktoken name whose BPE files are not local" if os.sep not in spec
                   else f"tokenizer directory {spec} does not exist")
        if explicit:
            raise FileNotFoundError(f"{problem}; {fix}")
        return TokenizerFiles(warning=f"{problem}: wrote weights + config only; {fix}")
    pair = _bpe_pair(directory)
    if pair is not None:
        vocab = json.loads(pair[0].read_text(encoding="utf-8"))
        if END_OF_TEXT not in vocab:
            raise ValueError(f"{pair[0]} has no {END_OF_TEXT} entry; a GPT-2 BPE export needs it as end-of-text")
        text = bpe_tokenizer_json(*pair)
        files: dict[str, str | dict | Path] = {"tokenizer.json": text, **_special_files(END_OF_TEXT, vocab[END_OF_TEXT])}
        return TokenizerFiles(files, vocab[END_OF_TEXT], vocab[END_OF_TEXT], len(vocab))
    present = {name: directory / name for name in TOKENIZER_FILES if (directory / name).is_file()}
    if "tokenizer.json" not in present and "tokenizer.model" not in present:
        raise FileNotFoundError(f"no tokenizer files in {directory}; {fix}")
    if "tokenizer_config.json" not in present:
        raise FileNotFoundError(f"{directory} has no tokenizer_config.json (litgpt needs it beside tokenizer.json)")
    tok = Tokenizer(directory)
    return TokenizerFiles(present, tok.eos_id, tok.bos_id, tok.vocab_size)


def _check_encodes_alike(spec: str, written: Path) -> str | None:
    """A warning when the written tokenizer does not encode a sample text like the training tokenizer."""
    from litgpt.tokenizer import Tokenizer

    from nca.datamodules.tokenizers import load_tokenizer

    ours = load_tokenizer(spec).encode(SAMPLE_TEXT)
    theirs = Tokenizer(written).encode(SAMPLE_TEXT, bos=False).tolist()
    if ours != theirs:
        return f"the exported tokenizer encodes a sample text differently from {spec!r}: {theirs[:8]} vs {ours[:8]}"
    return None


# ------------------------------------------------------------------------------------------------ weights
def litgpt_state_dict(loaded: LoadedModel, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The GPT's parameters as litgpt's ``lit_model.pth`` holds them (a plain state dict, no buffers)."""
    return {name: p.detach().to(dtype=dtype, device="cpu") for name, p in loaded.model.named_parameters()}


def check_llama_equivalent(config) -> None:
    """Refuse configs that transformers' Llama cannot express, before any work."""
    differ = {k: getattr(config, k) for k, v in LLAMA_EQUIVALENT.items() if getattr(config, k) != v}
    if config.n_expert:
        differ["n_expert"] = config.n_expert
    if differ:
        raise ValueError(f"the model is not a plain Llama ({differ}); export it with --format litgpt instead")


def hf_state_dict(loaded: LoadedModel, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Llama tensor names via litgpt's own lit -> HF mapping (q, k and v split out of the fused ``attn.qkv``)."""
    from litgpt.scripts.convert_lit_checkpoint import copy_weights_llama

    state: dict[str, torch.Tensor] = {}
    copy_weights_llama(loaded.config, state, litgpt_state_dict(loaded, dtype))
    # q/k/v are views of one tensor; safetensors stores no shared memory.
    return {k: v.clone() if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")) else v.contiguous()
            for k, v in state.items()}


def llama_config(config, dtype: torch.dtype, tokens: TokenizerFiles):
    """transformers' LlamaConfig equal to the litgpt Config (padded vocabulary, untied head, head_dim, RoPE base)."""
    import transformers
    from transformers import LlamaConfig

    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return LlamaConfig(
        vocab_size=config.padded_vocab_size, hidden_size=config.n_embd, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
        num_key_value_heads=config.n_query_groups, head_dim=config.head_size,
        max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps, rope_theta=float(config.rope_base),
        hidden_act="silu", tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        bos_token_id=tokens.bos_id, eos_token_id=tokens.eos_id, architectures=["LlamaForCausalLM"],
        **{dtype_key: str(dtype).removeprefix("torch.")},
    )


# ------------------------------------------------------------------------------------------------- export
def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out (exports never overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    format: Literal["litgpt", "hf"] = "litgpt",
    tokenizer: str | None = None,
    dtype: str = "float32",
) -> ExportResult:
    """Write ``ckpt`` (any format ``load_model`` reads) to the new directory ``out`` as ``format``.

    ``tokenizer`` overrides the tokenizer recorded in the checkpoint (its training DataModule's setting).
    """
    out, ckpt = Path(out).expanduser(), Path(ckpt).expanduser()
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {FORMATS}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {tuple(DTYPES)}")
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}; pass a Lightning .ckpt, a sharded FSDP checkpoint "
                                "directory or a litgpt checkpoint")
    _prepare_out(out)
    spec = tokenizer if tokenizer is not None else recorded_tokenizer(ckpt)
    tokens = tokenizer_files(spec, explicit=tokenizer is not None)  # before the long part: loading the weights
    loaded = load_model(ckpt)
    config = loaded.config
    if format == "hf":
        check_llama_equivalent(config)
    if tokens.vocab_size is not None and tokens.vocab_size > config.padded_vocab_size:
        raise ValueError(f"the tokenizer has {tokens.vocab_size} ids but the model only {config.padded_vocab_size} "
                         "embedding rows: wrong --tokenizer for this checkpoint?")
    notes = [tokens.warning] if tokens.warning else []

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for name, content in tokens.files.items():
            if isinstance(content, Path):
                shutil.copyfile(content, staging / name)
            elif isinstance(content, dict):
                extra = {"model_max_length": config.block_size} if name == "tokenizer_config.json" else {}
                (staging / name).write_text(json.dumps({**content, **extra}, indent=2), encoding="utf-8")
            else:
                (staging / name).write_text(content, encoding="utf-8")
        if tokens.files and spec is not None:
            mismatch = _check_encodes_alike(spec, staging)
            notes += [mismatch] if mismatch else []
        if format == "litgpt":
            notes += _write_litgpt(loaded, staging, DTYPES[dtype], tokens)
        else:
            _write_hf(loaded, staging, DTYPES[dtype], tokens)
        if out.exists():
            out.rmdir()  # empty (checked above): the rename needs the name free
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return ExportResult(out, format, sorted(p.name for p in out.iterdir()), loaded.format, notes)


def recorded_tokenizer(ckpt: str | Path) -> str | None:
    """The tokenizer ``ckpt`` was trained with (its DataModule's setting), else tokenizer files beside a litgpt
    checkpoint (an earlier export); read without loading the weights."""
    ckpt = Path(ckpt).expanduser()
    from nca.lit_modules.provenance import provenance

    spec = provenance(read_meta(ckpt).get("data")).tokenizer
    if spec is not None:
        return spec
    directory = ckpt if ckpt.is_dir() else ckpt.parent
    if (directory / "model_config.yaml").is_file() and any((directory / n).is_file() for n in TOKENIZER_FILES[:2]):
        return str(directory)
    return None


def _write_litgpt(loaded: LoadedModel, directory: Path, dtype: torch.dtype, tokens: TokenizerFiles) -> list[str]:
    """lit_model.pth + model_config.yaml, and the Hugging Face config.json that ``litgpt evaluate`` converts with."""
    from litgpt.utils import save_config

    torch.save(litgpt_state_dict(loaded, dtype), directory / "lit_model.pth")
    save_config(loaded.config, directory)
    try:
        check_llama_equivalent(loaded.config)
        llama_config(loaded.config, dtype, tokens).save_pretrained(directory)
    except (ValueError, ImportError) as err:
        return [f"no config.json written, so `litgpt evaluate` cannot load this directory ({err})"]
    return []


def _write_hf(loaded: LoadedModel, directory: Path, dtype: torch.dtype, tokens: TokenizerFiles) -> None:
    from safetensors.torch import save_file

    llama_config(loaded.config, dtype, tokens).save_pretrained(directory)
    save_file(hf_state_dict(loaded, dtype), directory / "model.safetensors", metadata={"format": "pt"})
