"""Reading the project's checkpoints: the GPT tensors and the settings they were trained with.

Formats: a Lightning ``.ckpt``, a sharded FSDP directory (torch.distributed.checkpoint, plus Lightning's
``meta.pt``), a litgpt ``lit_model.pth`` or a litgpt checkpoint directory (``lit_model.pth`` +
``model_config.yaml``). Every later consumer (stage transition, sampling, export, evaluation, analysis)
reads through here, so a new format is added once.
"""

from __future__ import annotations

import pickle
import dataclasses
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# Wrapper segments that FSDP1, activation checkpointing and torch.compile insert into parameter names.
_WRAPPER_SEGMENT = re.compile(r"(^|\.)(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)(?=\.)")
LIGHTNING_META = "meta.pt"  # what Lightning's FSDP strategy saves beside a sharded checkpoint (rank 0)


def plain(value: Any) -> Any:
    """Dataclasses, tuples and paths as plain data, so a checkpoint loads with ``weights_only``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def clean_name(name: str) -> str:
    """Drop the segments that wrappers insert (``_fsdp_wrapped_module.``, ``_orig_mod.``...)."""
    return _WRAPPER_SEGMENT.sub("", name).lstrip(".")


def read_checkpoint(path: str | Path, names: Iterable[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The GPT tensors of a checkpoint keyed by logical name, and the format it was read as.

    Formats: a Lightning ``.ckpt`` (``state_dict`` keyed ``model.*``), a sharded FSDP directory
    (torch.distributed.checkpoint, read on CPU without a process group), a litgpt ``lit_model.pth``
    (plain state dict or ``{"model": ...}``), or a litgpt checkpoint directory holding one.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"init_from checkpoint not found: {path}. Point model.init_from at a stage-1 Lightning .ckpt, "
            "a sharded FSDP checkpoint directory or a litgpt lit_model.pth"
        )
    names = set(names)
    if path.is_dir():
        if (path / ".metadata").is_file():
            return _read_dcp(path, names), "sharded FSDP (torch.distributed.checkpoint)"
        if (path / "lit_model.pth").is_file():
            path = path / "lit_model.pth"
        else:
            raise ValueError(
                f"{path} is a directory but neither a sharded checkpoint (no .metadata) nor a litgpt "
                "checkpoint directory (no lit_model.pth); point init_from at the checkpoint itself"
            )
    raw = load_file(path)
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        state, fmt = raw["state_dict"], "Lightning checkpoint"
    elif isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
        state, fmt = raw["model"], "litgpt checkpoint"
    elif isinstance(raw, Mapping):
        state, fmt = raw, "state dict"
    else:
        raise ValueError(f"{path} holds a {type(raw).__name__}, not a state dict or checkpoint")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    prefix = _gpt_prefix(tensors, names, path)
    return {clean_name(k)[len(prefix):]: v for k, v in tensors.items() if clean_name(k).startswith(prefix)}, fmt


class CheckpointError(ValueError):
    """A file that should be a checkpoint but cannot be read (truncated, another kind of file)."""


def load_file(path: Path) -> Any:
    """``torch.load`` of one checkpoint file, with a readable error naming the file and the newest intact
    checkpoint beside it. The project's own files: Lightning checkpoints pickle hyper-parameter objects, so
    weights_only is off; mmap keeps optimizer states on disk (and reads a truncated file's end first)."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(unreadable_message(path, err)) from err


def unreadable_message(path: Path, err: BaseException) -> str:
    kind = "truncated or corrupt" if "zip archive" in str(err) or isinstance(err, EOFError) else "not a checkpoint"
    newest = newest_intact(path.parent, exclude=(path,))
    fix = f"the newest intact checkpoint there is {newest}" if newest else "no intact checkpoint is beside it"
    return f"{path} is {kind} ({str(err).splitlines()[0][:120]}); {fix}"


def is_intact(path: str | Path) -> bool:
    """Whether ``path`` reads as a checkpoint: a .ckpt/.pth whose zip directory is whole, or a sharded
    directory whose metadata and every file it names are present."""
    path = Path(path)
    try:
        if path.is_dir():
            if not (path / ".metadata").is_file():
                return False
            import torch.distributed.checkpoint as dcp

            metadata = dcp.FileSystemReader(str(path)).read_metadata()
            files = {item.relative_path for item in (metadata.storage_data or {}).values()}
            return all((path / f).is_file() for f in files)
        return isinstance(torch.load(path, map_location="cpu", mmap=True, weights_only=False), Mapping)
    except Exception:  # any failure to read means "not intact"; the caller names the file
        return False


def newest_intact(directory: str | Path, exclude: Iterable[Path] = ()) -> Path | None:
    """The most recently written intact checkpoint (``*.ckpt`` file or sharded directory) in ``directory``."""
    directory, skip = Path(directory), {Path(p).resolve() for p in exclude}
    if not directory.is_dir():
        return None
    candidates = [p for p in directory.glob("*.ckpt") if p.resolve() not in skip]
    for candidate in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        if is_intact(candidate):
            return candidate
    return None


def _gpt_prefix(keys: Iterable[str], names: set[str], path: Path) -> str:
    """The key prefix under which the GPT lives ('' for litgpt, 'model.' for our LightningModule)."""
    votes: Counter[str] = Counter()
    for key in map(clean_name, keys):
        for anchor in ("transformer.", "lm_head."):
            at = key.find(anchor)
            if at >= 0 and key[at:] in names:
                votes[key[:at]] += 1
                break
    if not votes:
        sample = ", ".join(list(keys)[:5])
        raise ValueError(
            f"no litgpt GPT weights found in {path}: expected keys like 'transformer.h.0.attn.qkv.weight' "
            f"(optionally prefixed, e.g. 'model.'); the first keys are: {sample or '(none)'}"
        )
    return votes.most_common(1)[0][0]


def _read_dcp(path: Path, names: set[str]) -> dict[str, torch.Tensor]:
    """Read only the model tensors of a torch.distributed.checkpoint directory into full CPU tensors."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(path))
    metadata = reader.read_metadata()
    entries = {k: v for k, v in metadata.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}
    prefix = _gpt_prefix(entries, names, path)
    wanted = {k: v for k, v in entries.items() if clean_name(k).startswith(prefix)}
    # Rebuild the nesting the checkpoint was saved with (Lightning: {"model": {"model.transformer...": t}}).
    nested: dict = {}
    flat: dict[str, torch.Tensor] = {}
    for key, meta in wanted.items():
        tensor = torch.empty(meta.size, dtype=meta.properties.dtype)
        route = (metadata.planner_data or {}).get(key, (key,))
        node = nested
        for step in route[:-1]:
            node = node.setdefault(step, {})
        node[route[-1]] = tensor
        flat[clean_name(key)[len(prefix):]] = tensor
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(nested, storage_reader=reader, no_dist=True)
    return flat


# --------------------------------------------------------------------------- whole models
@dataclass
class LoadedModel:
    """A GPT rebuilt from a checkpoint, with what is known of how it was trained."""

    model: Any  # litgpt.model.GPT, in eval mode
    source: str
    format: str
    hparams: dict[str, Any] = field(default_factory=dict)  # CausalLM's init arguments (empty for litgpt files)
    data: dict[str, Any] = field(default_factory=dict)  # {"class_path", "init_args"} of the training DataModule

    @property
    def config(self):
        return self.model.config

    @property
    def provenance(self):
        """How the model was trained (``nca.lit_modules.provenance``): the stage, NCA settings, tokenizer."""
        from nca.lit_modules.provenance import provenance

        return provenance(self.data, self.hparams)

    @property
    def tokenizer_spec(self) -> str | None:
        """The text tokenizer the model was trained with (None for NCA / Dyck / litgpt files)."""
        return self.provenance.tokenizer


def read_meta(path: str | Path) -> dict[str, Any]:
    """The non-tensor part of a checkpoint: hyper-parameters, the DataModule's settings, loop state."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / LIGHTNING_META).is_file():
            return torch.load(path / LIGHTNING_META, map_location="cpu", weights_only=False)
        return {}
    raw = load_file(path)
    return {k: v for k, v in raw.items() if k not in ("state_dict", "optimizer_states")} if isinstance(raw, Mapping) else {}


def _litgpt_config(path: Path):
    from litgpt.config import Config

    directory = path if path.is_dir() else path.parent
    if not (directory / "model_config.yaml").is_file():
        raise FileNotFoundError(
            f"{path} carries no model settings: a litgpt checkpoint needs model_config.yaml beside lit_model.pth"
        )
    return Config.from_file(directory / "model_config.yaml")


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LoadedModel:
    """Rebuild the trained GPT of any supported checkpoint (eval mode, on ``device``)."""
    from litgpt.model import GPT

    from nca.lit_modules.model import build_config

    path = Path(path).expanduser()
    meta = read_meta(path) if path.exists() else {}
    hparams = dict(meta.get("hyper_parameters") or {})
    if "config" in hparams or "vocab_size" in hparams:
        config = build_config(hparams.get("config"), hparams.get("vocab_size"))
    else:
        config = _litgpt_config(path)
    with torch.device("meta"):
        names = GPT(config).state_dict().keys()
    state, fmt = read_checkpoint(path, names)
    missing = [n for n in names if n not in state and not n.endswith(".attn.kv_cache")]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} tensors of its own model config, e.g. {missing[0]}")
    model = GPT(config)
    model.load_state_dict({n: state[n] for n in names if n in state}, strict=False)
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedModel(model, str(path), fmt, hparams, dict(meta.get("data") or {}))
