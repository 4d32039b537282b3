import json
import pickle

import pytest
import torch
from litgpt.model import GPT

from nca.datamodules.tokenizers import _byte_decoder, load_tokenizer
from nca.lit_modules.sampling import SamplingConfig, filtered_probs, inverse_cdf, sample
from tests.helpers.models import tiny_gpt

VOCAB = 50


def peaky_gpt(block_size: int = 48, seed: int = 0) -> GPT:
    """fp32, grouped-query attention, a padded vocabulary (64 rows for 50 ids)."""
    model = tiny_gpt(VOCAB, seed=seed, block_size=block_size, n_query_groups=2, intermediate_size=64,
                     padded_vocab_size=64)
    with torch.no_grad():
        model.lm_head.weight.mul_(4)  # peakier distributions than the flat ones of a fresh init
    return model


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [3] * 20, [7, 7]]


def argmax_loop(model: GPT, prompt: list[int], new: int) -> list[int]:
    """Greedy decoding the slow way: the whole sequence through the model, no KV cache."""
    seq, out = list(prompt), []
    with torch.inference_mode():
        while len(out) < new and len(seq) < model.config.block_size:
            token = int(model(torch.tensor([seq], device=model.lm_head.weight.device))[0, -1, :VOCAB].argmax())
            out.append(token)
            seq.append(token)
    return out


def tokens(result):
    return [[c.tokens for c in per_prompt] for per_prompt in result]


class RowCounter:
    """Counts the rows the model runs: prefill calls (1-D input_pos) and decode rows (per-row positions)."""

    def __init__(self, model: GPT):
        self.prefill_rows = self.decode_rows = self.prefill_calls = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        idx, input_pos = args[0], args[1] if len(args) > 1 else kwargs.get("input_pos")
        if input_pos is not None and input_pos.dim() == 1:
            self.prefill_rows += idx.size(0)
            self.prefill_calls += 1
        elif input_pos is not None:
            self.decode_rows += idx.size(0)


def test_greedy_equals_the_argmax_loop_with_refills_and_compaction():
    model = peaky_gpt()
    cfg = SamplingConfig(max_new_tokens=30, temperature=0.0)
    result = sample(model, PROMPTS, 3, cfg, batch_size=4)
    for prompt, per_prompt in zip(PROMPTS, result):
        expected = argmax_loop(model, prompt, 30)
        assert [c.tokens for c in per_prompt] == [expected] * 3
    assert model.transformer.h[0].attn.kv_cache is None and model.mask_cache is None  # the model is left clean


@pytest.mark.parametrize("top_p, top_k", [(1.0, None), (0.9, 10)])
def test_a_sample_depends_only_on_seed_prompt_id_and_index(top_p, top_k):
    model = peaky_gpt()
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=top_p, top_k=top_k)
    whole = sample(model, PROMPTS, 3, cfg, seed=7, batch_size=64)
    assert tokens(sample(model, PROMPTS, 3, cfg, seed=7, batch_size=1)) == tokens(whole)
    assert tokens(sample(model, PROMPTS, 3, cfg, seed=7, batch_size=4)) == tokens(whole)
    regrouped = sample(model, [PROMPTS[3], PROMPTS[1]], 3, cfg, seed=7, prompt_ids=[3, 1], batch_size=5)
    assert tokens(regrouped) == [tokens(whole)[3], tokens(whole)[1]]
    fewer = sample(model, PROMPTS, 2, cfg, seed=7, batch_size=2)  # sample j does not depend on n
    assert tokens(fewer) == [per_prompt[:2] for per_prompt in tokens(whole)]
    assert tokens(sample(model, PROMPTS, 3, cfg, seed=8)) != tokens(whole)
    assert len({tuple(t) for t in tokens(whole)[0]}) > 1  # the samples of one prompt differ


def test_prompts_prefilled_alone_or_together_give_the_same_samples(monkeypatch):
    import nca.lit_modules.sampling as sampling

    model = peaky_gpt()
    counter = RowCounter(model)
    cfg = SamplingConfig(max_new_tokens=8, temperature=0.8)
    together = sample(model, PROMPTS, 2, cfg, seed=1)
    assert counter.prefill_calls == 1 and counter.prefill_rows == len(PROMPTS)
    monkeypatch.setattr(sampling, "PREFILL_LOGITS", 1)  # every prompt in a prefill call of its own
    assert tokens(sample(model, PROMPTS, 2, cfg, seed=1)) == tokens(together)
    assert counter.prefill_calls == 1 + len(PROMPTS)


def test_bfloat16_model_samples_in_bfloat16():
    model = peaky_gpt().to(torch.bfloat16)
    seen = []
    model.transformer.h[0].attn.register_forward_hook(lambda m, args, out: seen.append(m.kv_cache.k.dtype))
    out = sample(model, PROMPTS[:2], 2, SamplingConfig(max_new_tokens=6, top_k=8))
    assert all(len(c.tokens) == 6 and max(c.tokens) < VOCAB for pp in out for c in pp)
    assert set(seen) == {torch.bfloat16}


def test_first_tokens_follow_the_filtered_distribution():
    model = peaky_gpt()
    prompt = [1, 2, 3]
    with torch.inference_mode():
        logits = model(torch.tensor([prompt]))[0, -1, :VOCAB]
    for cfg in (SamplingConfig(max_new_tokens=1, temperature=0.7), SamplingConfig(max_new_tokens=1, top_k=4)):
        expected = filtered_probs(logits[None], cfg)[0]
        drawn = torch.tensor([c.tokens[0] for c in sample(model, [prompt], 4000, cfg, batch_size=4000)[0]])
        freq = torch.bincount(drawn, minlength=VOCAB).float() / len(drawn)
        assert (freq - expected).abs().sum() < 0.08  # total variation of 4000 draws
        assert bool((freq[expected == 0] == 0).all())


def test_top_p_keeps_the_smallest_set_with_enough_mass():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, VOCAB, generator=gen) * 3
    for p in (0.05, 0.5, 0.9, 0.99):
        cfg = SamplingConfig(top_p=p)
        kept = filtered_probs(logits, cfg) > 0
        probs = torch.softmax(logits, -1)
        mass = (probs * kept).sum(-1)
        smallest = probs.masked_fill(~kept, 2.0).min(-1).values
        assert bool((mass >= p - 1e-6).all())
        assert bool((mass - smallest < p).all())  # without its least likely token the set falls short of p
        worst_kept = probs.masked_fill(~kept, 2.0).min(-1).values
        best_dropped = probs.masked_fill(kept, -1.0).max(-1).values
        assert bool((worst_kept >= best_dropped).all())  # the most likely tokens are the ones kept
    assert bool(((filtered_probs(logits, SamplingConfig(top_k=3)) > 0).sum(-1) == 3).all())


def test_inverse_cdf_picks_the_first_index_past_the_target_and_never_a_zero_weight():
    gen = torch.Generator().manual_seed(1)
    weights = torch.rand(64, 300, generator=gen) * (torch.rand(64, 300, generator=gen) < 0.2)
    weights[:, 7] += 1e-3
    uniforms = torch.rand(64, generator=gen).clamp(1e-7, 1 - 1e-7)
    cdf = weights.double().cumsum(-1)
    expected = torch.searchsorted(cdf, (uniforms.double() * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    assert torch.equal(inverse_cdf(weights, uniforms, block=16), expected)
    edge = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert inverse_cdf(edge, torch.tensor([1 - 1e-7]), block=2).item() == 1
    assert inverse_cdf(edge, torch.tensor([1e-9]), block=2).item() == 0


def test_stop_ids_end_rows_early_and_finished_rows_stop_costing_compute():
    model = peaky_gpt()
    greedy = argmax_loop(model, PROMPTS[1], 30)
    stop = greedy[6]
    counter = RowCounter(model)
    cfg = SamplingConfig(max_new_tokens=30, temperature=1.0, stop_ids=(stop,))
    result = sample(model, PROMPTS, 5, cfg, seed=3, batch_size=4)  # 25 samples through 4 slots
    sampled = 0
    for prompt, per_prompt in zip(PROMPTS, result):
        for c in per_prompt:
            assert stop not in c.tokens
            assert c.finish == "stop" or len(c.tokens) == min(30, model.config.block_size - len(prompt))
            sampled += len(c.tokens) + (c.finish == "stop")
    assert any(c.finish == "stop" for pp in result for c in pp)
    assert counter.decode_rows == sampled - 25  # each sample's first token comes from its prompt's prefill
    assert counter.prefill_rows == len(PROMPTS)  # one prefill per prompt, though its samples span refills
    greedy_cfg = SamplingConfig(max_new_tokens=30, temperature=0.0, stop_ids=(stop,))
    first = sample(model, [PROMPTS[1]], 1, greedy_cfg)[0][0]
    assert first.tokens == greedy[: greedy.index(stop)] and first.finish == "stop"


def letters(ids: list[int]) -> str:
    return "".join(chr(ord("a") + i % 26) for i in ids)


def test_stop_strings_cut_the_text_and_end_the_row():
    model = peaky_gpt()
    greedy = argmax_loop(model, PROMPTS[0], 30)
    text = letters(greedy)
    stop = text[8:10]
    at = text.index(stop)
    cfg = SamplingConfig(max_new_tokens=30, temperature=0.0, stop_strings=(stop, "never-there"))
    c = sample(model, [PROMPTS[0]], 2, cfg, decode=letters)[0][1]
    assert c.finish == "stop" and c.text == text[:at] and c.tokens == greedy[: at + len(stop)]
    plain = sample(model, [PROMPTS[0]], 1, SamplingConfig(max_new_tokens=5, temperature=0.0), decode=letters)[0][0]
    assert plain.text == letters(greedy[:5]) and plain.finish == "length"
    assert sample(model, [PROMPTS[0]], 1, SamplingConfig(max_new_tokens=5))[0][0].text is None


def test_max_new_tokens_never_passes_the_context():
    model = peaky_gpt(block_size=24)
    cfg = SamplingConfig(max_new_tokens=10, temperature=1.0)
    near_end, full, short = [5] * 21, [5] * 24, [5] * 14
    result = sample(model, [near_end, full, short], 2, cfg, batch_size=3)
    assert [len(c.tokens) for c in result[0]] == [3, 3] and {c.finish for c in result[0]} == {"context"}
    assert [len(c.tokens) for c in result[1]] == [0, 0] and {c.finish for c in result[1]} == {"context"}
    assert [len(c.tokens) for c in result[2]] == [10, 10] and {c.finish for c in result[2]} == {"length"}
    none = sample(model, [short], 2, SamplingConfig(max_new_tokens=0))[0]
    assert [(c.tokens, c.finish) for c in none] == [([], "length")] * 2


def test_padded_vocabulary_rows_are_never_sampled():
    model = peaky_gpt()
    with torch.no_grad():
        model.lm_head.weight[VOCAB:] = 50.0  # rows past the vocabulary would win every argmax
    for temperature in (0.0, 1.0):
        out = sample(model, PROMPTS, 2, SamplingConfig(max_new_tokens=10, temperature=temperature))
        assert max(t for pp in tokens(out) for ts in pp for t in ts) < VOCAB


def test_progress_counts_every_finished_sample():
    model = peaky_gpt(block_size=24)
    seen = []
    sample(model, [[1, 2], [5] * 24], 3, SamplingConfig(max_new_tokens=4), batch_size=2, progress=seen.append)
    assert sum(seen) == 6 and all(k > 0 for k in seen)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[[1], []]), "prompt 1 is empty"),
    (dict(prompts=[[1] * 49]), "more than the model's context"),
    (dict(prompts=[[1, VOCAB]]), "outside"),
    (dict(prompts=[[1]], n=0), "n and batch_size"),
    (dict(prompts=[[1]], prompt_ids=[0, 1]), "prompt_ids"),
    (dict(prompts=[[1]], cfg=SamplingConfig(stop_strings=("x",))), "need decode"),
    (dict(prompts=[[1]], decoding="static"), "unknown decoding 'static': choose one of dynamic, fixed, compiled"),
])
def test_bad_input_fails_before_any_model_call(kwargs, message):
    model = peaky_gpt()
    counter = RowCounter(model)
    args = dict(n=1, cfg=SamplingConfig()) | kwargs
    with pytest.raises(ValueError, match=message):
        sample(model, args.pop("prompts"), args.pop("n"), args.pop("cfg"), **args)
    assert counter.prefill_rows == counter.decode_rows == 0


@pytest.mark.parametrize("field, value", [("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("top_k", 0),
                                          ("max_new_tokens", -1), ("stop_strings", ("",))])
def test_bad_settings_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value})


def test_text_tokenizer_decodes_what_it_encodes(tmp_path):
    """A tiny GPT-2-format BPE (as in tests/test_tokenizers.py): decode inverts encode, pickled too."""
    encoder = {c: i for i, c in enumerate(_byte_decoder())}
    merges = [("h", "e"), ("l", "l"), ("he", "ll")]
    for a, b in merges:
        encoder[a + b] = len(encoder)
    encoder["<|endoftext|>"] = len(encoder)
    (tmp_path / "encoder.json").write_text(json.dumps(encoder))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tok = load_tokenizer(tmp_path)
    ids = tok.encode("hello wörld")
    assert tok.decode(ids) == "hello wörld"
    assert pickle.loads(pickle.dumps(tok)).decode(ids + [tok.eot_id]) == "hello wörld<|endoftext|>"


def stopping_config(model: GPT) -> SamplingConfig:
    """Temperature 1 with a stop id that ends some rows early (seed 3, n 5): refills, compaction, free slots."""
    stop = argmax_loop(model, PROMPTS[1], 30)[6]
    return SamplingConfig(max_new_tokens=30, temperature=1.0, top_p=0.95, stop_ids=(stop,))


def finishes(result):
    return [[c.finish for c in per_prompt] for per_prompt in result]


@pytest.mark.parametrize("case", ["greedy", "stops", "context", "top_k"])
def test_fixed_shape_decoding_gives_the_same_samples_as_dynamic(case):
    model = peaky_gpt(block_size=24 if case == "context" else 48)
    cfg, n, batch_size = {
        "greedy": (SamplingConfig(max_new_tokens=30, temperature=0.0), 3, 4),
        "stops": (stopping_config(model), 5, 4),
        "context": (SamplingConfig(max_new_tokens=10, temperature=0.8), 2, 3),  # budgets cut at the context
        "top_k": (SamplingConfig(max_new_tokens=12, temperature=0.7, top_k=5), 3, 64),
    }[case]
    prompts = [p for p in PROMPTS if len(p) < model.config.block_size] + ([[5] * 21] if case == "context" else [])
    dynamic = sample(model, prompts, n, cfg, seed=3, batch_size=batch_size)
    fixed = sample(model, prompts, n, cfg, seed=3, batch_size=batch_size, decoding="fixed")
    assert tokens(fixed) == tokens(dynamic) and finishes(fixed) == finishes(dynamic)
    if case == "stops":
        assert "stop" in {f for per_prompt in finishes(fixed) for f in per_prompt}
    assert model.transformer.h[0].attn.kv_cache is None and model.mask_cache is None


def test_attention_over_whole_spans_is_bit_equal_whatever_masked_positions_follow():
    """What makes the dynamic and fixed paths agree exactly: both attend over multiples of SPAN positions."""
    from nca.lit_modules.decoding import install_caches
    from nca.lit_modules.sampling import SPAN

    model = tiny_gpt(64, block_size=3 * SPAN)
    x = torch.randint(0, 64, (4, 71), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        install_caches(model, 4, 3 * SPAN, torch.device("cpu"), torch.float32)
        model(x[:, :70], torch.arange(70))
        pos = torch.full((4, 1), 70)
        spans = [model(x[:, 70:], pos, input_pos_maxp1=span) for span in (SPAN, 2 * SPAN, None)]
        model.clear_kv_cache()
    assert torch.equal(spans[0], spans[1]) and torch.equal(spans[0], spans[2])


def test_compiled_decoding_is_one_whole_graph_with_the_same_samples(monkeypatch):
    """torch.compile(fullgraph=True) of the fixed step (``aot_eager``: dynamo + AOTAutograd, no code generation):
    no graph break, one graph for every step and for other weights of the same shapes, the same samples."""
    from nca.lit_modules import decoding, sampling

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    monkeypatch.setattr(decoding, "_COMPILED", {})
    monkeypatch.setattr(sampling, "compiled_step", lambda device: decoding.compiled_step(device, "aot_eager"))
    model = peaky_gpt()
    cfg = stopping_config(model)
    try:
        compiled = sample(model, PROMPTS, 5, cfg, seed=3, batch_size=4, decoding="compiled")
        assert tokens(compiled) == tokens(sample(model, PROMPTS, 5, cfg, seed=3, batch_size=4))
        other = peaky_gpt(seed=1)
        again = sample(other, PROMPTS, 5, cfg, seed=3, batch_size=4, decoding="compiled")
        assert tokens(again) == tokens(sample(other, PROMPTS, 5, cfg, seed=3, batch_size=4))
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    finally:
        torch._dynamo.reset()


@pytest.mark.cuda
def test_cuda_compiled_decoding_with_cuda_graphs_matches_dynamic():
    model = peaky_gpt().cuda()
    cfg = stopping_config(model)
    dynamic = sample(model, PROMPTS, 5, cfg, seed=3, batch_size=4)
    for _ in range(2):  # the second call replays the captured graphs
        assert tokens(sample(model, PROMPTS, 5, cfg, seed=3, batch_size=4, decoding="compiled")) == tokens(dynamic)


@pytest.mark.cuda
def test_cuda_greedy_matches_and_bf16_runs():
    model = peaky_gpt().cuda()
    cfg = SamplingConfig(max_new_tokens=20, temperature=0.0)
    result = sample(model, PROMPTS, 2, cfg, batch_size=3)
    assert tokens(result)[1][0] == argmax_loop(model, PROMPTS[1], 20)
    half = sample(model.to(torch.bfloat16), PROMPTS, 3, SamplingConfig(max_new_tokens=20, top_p=0.9), batch_size=4)
    assert all(len(c.tokens) == 20 and max(c.tokens) < VOCAB for pp in half for c in pp)
