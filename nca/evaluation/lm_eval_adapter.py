"""The project's models in EleutherAI's lm-evaluation-harness: ``lm_eval --model nca``.

lm-eval only knows external models that were imported, so run it through this module::

    python -m nca.evaluation.lm_eval_adapter --model_args ckpt=PATH[,tokenizer=DIR,dtype=bfloat16,seed=0] \\
        --tasks hellaswag --device cpu --batch_size 8 [--include_path DIR_OF_LOCAL_TASK_YAMLS]

(every lm-eval flag works; ``--model nca`` is implied). In Python, ``import nca.evaluation.lm_eval_adapter``
registers the model for ``lm_eval.simple_evaluate(model="nca", model_args=...)``. ``ckpt`` is any checkpoint
``nca.lit_modules.checkpoint.load_model`` reads; the tokenizer defaults to the one the checkpoint was trained with.

Scores are log-probabilities over all embedding rows, exactly the softmax the training and validation loss
use, so ``loglikelihood_rolling`` of a text reproduces its ``nca validate`` loss. Generation goes through
``nca.lit_modules.sampling.sample`` (greedy unless a task asks for ``do_sample``), keyed by ``seed``.
"""

from __future__ import annotations

import sys
from itertools import groupby
from pathlib import Path
import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string

from nca.datamodules.tokenizers import load_tokenizer
from nca.lit_modules.checkpoint import load_model
from nca.lit_modules.export import recorded_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_GEN_TOKS = 256


class NCALM(LM):
    """lm-eval's three request kinds on our litgpt GPT, with our text tokenizer (no BOS; end-of-text as prefix)."""

    def __init__(self, ckpt: str, tokenizer: str | None = None, device: str | None = None, batch_size: int | str = 8,
                 dtype: str = "float32", max_length: int | None = None, seed: int = 0,
                 max_batch_size: int | None = None) -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not one of {tuple(DTYPES)}")
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = _batch_size(batch_size)
        if not Path(ckpt).expanduser().exists():
            raise FileNotFoundError(f"ckpt={ckpt} does not exist: give a Lightning .ckpt, a sharded FSDP checkpoint "
                                    "directory or a litgpt checkpoint")
        spec = tokenizer or recorded_tokenizer(ckpt)
        if spec is None:
            raise ValueError(f"{ckpt} records no text tokenizer (NCA/Dyck data or a bare litgpt file): "
                             "add tokenizer=DIR to --model_args")
        self.tokenizer = load_tokenizer(spec)  # before the weights: a bad tokenizer fails at once
        self.model = load_model(ckpt, device=self.device, dtype=DTYPES[dtype]).model
        if self.tokenizer.vocab_size > self.model.config.padded_vocab_size:
            raise ValueError(f"tokenizer {spec!r} has {self.tokenizer.vocab_size} ids, the model only "
                             f"{self.model.config.padded_vocab_size} rows: pass the tokenizer it was trained with")
        self.max_length = min(int(max_length or self.model.config.block_size), self.model.config.block_size)
        self.seed = int(seed)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "NCALM":
        """``--model_args`` win over lm-eval's own flags (its ``--batch_size`` defaults to 1 and is always passed).

        ``max_batch_size`` is accepted and unused (no automatic batch sizing here)."""
        args = dict(arg_dict)
        for key, value in (additional_config or {}).items():
            if value is not None:
                args.setdefault(key, value)
        return cls(**args)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "NCALM":
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eot_id

    def tok_encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    # -------------------------------------------------------------------------------------------- scoring
    def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Ids of context and continuation, tokenised together (trailing context spaces move to the continuation,
        so " word" keeps its usual single token)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tok_encode(context + continuation)
        context_ids = self.tok_encode(context)
        if whole[: len(context_ids)] != context_ids:  # a merge across the boundary: score them apart
            return context_ids or [self.eot_token_id], self.tok_encode(continuation)
        return context_ids or [self.eot_token_id], whole[len(context_ids):]

    @torch.inference_mode()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Sum of log p(continuation | context) and whether greedy decoding gives the continuation, per pair."""
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            rows = [(pairs[i][0] + pairs[i][1])[-(self.max_length + 1):][:-1] for i in chunk]
            x = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
            for r, row in enumerate(rows):
                x[r, : len(row)] = torch.tensor(row)  # right padding: causal attention never sees it
            logits = self.model(x.to(self.device))
            for r, i in enumerate(chunk):
                target = torch.tensor(pairs[i][1][-len(rows[r]):], device=self.device)
                at = F.log_softmax(logits[r, len(rows[r]) - len(target): len(rows[r])].float(), dim=-1)
                score = at.gather(-1, target.unsqueeze(-1)).sum().item()
                results[i] = (score, bool((at.argmax(-1) == target).all()))
        return results  # type: ignore[return-value]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self._score([self._split(*req.args) for req in requests])

    def loglikelihood_rolling(self, requests) -> list[float]:
        """Each text scored in disjoint windows of the context length, each token predicted exactly once."""
        windows, owner = [], []
        for n, req in enumerate(requests):
            ids = self.tok_encode(req.args[0])
            for window in get_rolling_token_windows(ids, self.eot_token_id, self.max_length, context_len=1):
                windows.append(make_disjoint_window(window))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (score, _) in zip(owner, self._score(windows)):
            totals[n] += score
        return totals

    # ------------------------------------------------------------------------------------------ generation
    def generate_until(self, requests) -> list[str]:
        """Completions cut before the first ``until`` string; requests with equal settings sample together."""
        from nca.lit_modules.sampling import sample

        jobs = [(n, req.args[0], _sampling_config(req.args[1], self.eot_token_id)) for n, req in enumerate(requests)]
        out: list[str] = [""] * len(requests)
        jobs.sort(key=lambda job: repr(job[2]))
        for _, group in groupby(jobs, key=lambda job: job[2]):
            group = list(group)
            cfg = group[0][2]
            room = max(1, self.max_length - min(cfg.max_new_tokens, self.max_length - 1))
            prompts = [(self.tok_encode(context) or [self.eot_token_id])[-room:] for _, context, _ in group]
            completions = sample(self.model, prompts, 1, cfg, seed=self.seed, prompt_ids=[n for n, _, _ in group],
                                 decode=self.tokenizer.decode, batch_size=self.batch_size)
            for (n, _, _), (completion,) in zip(group, completions):
                out[n] = completion.text
        return out


def _sampling_config(gen_kwargs: dict, eot_id: int):
    """lm-eval's ``gen_kwargs`` (until, max_gen_toks, do_sample, temperature, top_p, top_k) as a SamplingConfig."""
    from nca.lit_modules.sampling import SamplingConfig

    kwargs = dict(gen_kwargs or {})
    until = kwargs.pop("until", None) or []
    until = [until] if isinstance(until, str) else list(until)
    greedy = not kwargs.pop("do_sample", False) or float(kwargs.get("temperature", 1.0)) == 0.0
    return SamplingConfig(
        max_new_tokens=int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS)),
        temperature=0.0 if greedy else float(kwargs.pop("temperature", 1.0)),
        top_p=float(kwargs.pop("top_p", 1.0) or 1.0),
        top_k=int(kwargs["top_k"]) if kwargs.get("top_k") else None,
        stop_ids=(eot_id,),
        stop_strings=tuple(s for s in until if s),
    )


def _batch_size(value: int | str) -> int:
    """lm-eval passes ``--batch_size`` as text; "auto" (no memory probing here) means the default 8."""
    text = str(value)
    if text.startswith("auto"):
        return 8
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"batch_size={value!r}: give a positive integer")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    """lm-eval's own command line with ``--model nca`` registered and implied."""
    from lm_eval.__main__ import cli_evaluate

    args = sys.argv[1:] if argv is None else list(argv)
    command, rest = (args[0], args[1:]) if args[:1] in (["run"], ["ls"], ["validate"]) else ("run", args)
    if command == "run" and not any(a == "--model" or a.startswith("--model=") for a in rest):
        rest = ["--model", "nca", *rest]
    sys.argv = ["lm-eval", command, *rest]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    # Run as a script, this file is `__main__`; the model is registered once, by the importable module.
    from nca.evaluation.lm_eval_adapter import main as _main

    sys.exit(_main())
else:
    register_model("nca")(NCALM)
