"""How a checkpoint was trained, read in one place: what data it saw (the stage), the automaton of an NCA
run, the text tokenizer, the vocabulary. Every verb that must know (sample, evaluate, export, induction,
the ICL curves, replicate) asks ``Provenance``, so a recorded setting is interpreted once and the same way.

A Lightning checkpoint records its DataModule as ``{"class_path", "init_args"}`` (``CausalLM`` saves it) and
the model's ``hyper_parameters``; litgpt files record neither (``kind == "unknown"``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Optional

from nca.automaton.config import NCAConfig

# DataModule class name -> the kind of data (matched on the name, so checkpoints written before the package
# moved under ``nca.`` -- ``datamodules.nca.NCADataModule`` -- read the same).
KINDS = {"NCADataModule": "nca", "ShuffledNCADataModule": "shuffled_nca", "RandomTokensDataModule": "random_tokens",
         "DyckDataModule": "dyck", "TextDataModule": "text", "GSM8KDataModule": "gsm8k", "BBLDataModule": "bbl"}
Kind = Literal["nca", "shuffled_nca", "random_tokens", "dyck", "text", "gsm8k", "bbl", "other", "unknown"]
NCA_LAYOUT = ("nca", "shuffled_nca", "random_tokens")  # patch tokens and frame delimiters of an NCAConfig
STAGE1_KINDS = (*NCA_LAYOUT, "dyck")
TEXT_KINDS = ("text", "gsm8k", "bbl")
DESCRIPTIONS = {"nca": "NCA data (stage 1)", "shuffled_nca": "shuffled NCA tokens (a stage-1 control)",
                "random_tokens": "random tokens (a stage-1 control)", "dyck": "Dyck data (stage 1)",
                "unknown": "unrecorded data"}


@dataclass(frozen=True)
class NCASettings:
    """The NCA stream a stage-1 model was trained on (``nca.automaton.stream.NCAStream`` keywords)."""

    cfg: NCAConfig
    band: Any  # as recorded: [low, high], "50+", or None for every rule
    seed: int
    seq_len: Optional[int]  # None when the checkpoint does not record it

    def stream_kwargs(self) -> dict:
        return {"cfg": self.cfg, "band": self.band, "seed": self.seed}


@dataclass(frozen=True)
class Provenance:
    data_class: Optional[str]  # the DataModule's class path as recorded; None when nothing is recorded
    init_args: dict = field(default_factory=dict)
    hparams: dict = field(default_factory=dict)  # CausalLM's init arguments

    @property
    def kind(self) -> Kind:
        if not self.data_class:
            return "unknown"
        return KINDS.get(str(self.data_class).rsplit(".", 1)[-1], "other")

    @property
    def is_nca(self) -> bool:
        """Trained on tokens in the NCA layout (the automaton, or one of its controls): ``nca()`` reads it."""
        return self.kind in NCA_LAYOUT

    @property
    def is_stage1(self) -> bool:
        """Trained on a stage-1 source (no text tokenizer): text tasks cannot read it."""
        return self.kind in STAGE1_KINDS

    @property
    def tokenizer(self) -> Optional[str]:
        """The text tokenizer the model was trained with (None for NCA, Dyck and unrecorded runs)."""
        value = self.init_args.get("tokenizer")
        return None if value is None else str(value)

    @property
    def is_text(self) -> bool:
        return self.kind in TEXT_KINDS or self.tokenizer is not None

    @property
    def vocab_size(self) -> Optional[int]:
        value = self.hparams.get("vocab_size")
        return None if value is None else int(value)

    def describe(self) -> str:
        """A few words for messages: 'NCA data (stage 1)', 'text (tokenizer gpt2)', 'unrecorded data'."""
        if self.kind in DESCRIPTIONS:
            return DESCRIPTIONS[self.kind]
        if self.is_text:
            return f"{self.kind} (tokenizer {self.tokenizer or 'unrecorded'})"
        return str(self.data_class)

    def nca(self) -> NCASettings:
        """The NCA settings (of the automaton, or of the one a control's layout follows), from the nested ``nca``
        argument or the older flat keys (n_states, grid, ...); what is not recorded takes ``NCADataModule``'s own
        defaults."""
        if not self.is_nca:
            raise ValueError(f"the checkpoint was trained on {self.describe()}, not NCA: give --data a text corpus")
        args = self.init_args
        nested = args.get("nca")
        if isinstance(nested, NCAConfig):
            cfg = nested
        else:
            source = nested if isinstance(nested, Mapping) else args
            names = [f.name for f in fields(NCAConfig)]
            cfg = NCAConfig(**{k: (tuple(source[k]) if k == "hidden" else source[k]) for k in names if k in source})
        defaults = _nca_defaults()
        band = args["band"] if "band" in args else defaults["band"]
        seq_len = args.get("seq_len")
        return NCASettings(cfg, band, int(args.get("seed", defaults["seed"])), None if seq_len is None else int(seq_len))


def _nca_defaults() -> dict:
    from nca.datamodules.nca import NCADataModule

    params = inspect.signature(NCADataModule.__init__).parameters
    return {name: params[name].default for name in ("band", "seed")}


def provenance(data: Optional[Mapping], hparams: Optional[Mapping] = None) -> Provenance:
    """Read a checkpoint's recorded DataModule (``{"class_path", "init_args"}``) and hyper-parameters."""
    data = dict(data or {})
    init_args = {k: v for k, v in dict(data.get("init_args") or {}).items() if not str(k).startswith("_")}
    return Provenance(data.get("class_path"), init_args, dict(hparams or {}))
