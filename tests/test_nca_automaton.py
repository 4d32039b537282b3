"""Rules, rollouts and the counter-based RNG."""

import math

import pytest
import torch
import torch.nn.functional as F

from nca.automaton.config import NCAConfig
from nca.automaton.rng import hash_keys, stream, to_uniform
from nca.automaton.rules import sample_rules
from nca.automaton.simulate import Simulator, _sample, initial_states, rollout

SMALL = NCAConfig(n_states=4, grid=6, patch=2)


def test_uniforms_are_in_the_open_unit_interval_and_keyed():
    u = to_uniform(stream(hash_keys(7, torch.arange(64))[:, None], torch.arange(1000)))
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01
    assert torch.equal(u, to_uniform(stream(hash_keys(7, torch.arange(64))[:, None], torch.arange(1000))))
    assert not torch.equal(u, to_uniform(stream(hash_keys(8, torch.arange(64))[:, None], torch.arange(1000))))


def test_rule_weights_are_truncated_lecun_normal_per_rule():
    cfg = NCAConfig()
    rules = sample_rules(torch.arange(512), cfg, seed=0)
    assert rules.w1.shape == (512, 9 * 10, 4) and rules.w2.shape == (512, 4, 16) and rules.w3.shape == (512, 16, 10)
    for w, fan_in in ((rules.w1, 90), (rules.w2, 4), (rules.w3, 16)):
        std = math.sqrt(1 / fan_in)
        assert w.abs().max() <= 2 * std / 0.87962566103423978 + 1e-6  # truncated at 2 (pre-correction) std
        assert abs(w.std().item() / std - 1) < 0.05  # the correction restores variance 1/fan_in
    again = sample_rules(torch.tensor([3, 1]), cfg, seed=0)
    assert torch.equal(again.w1[0], rules.w1[3]) and torch.equal(again.w3[1], rules.w3[1])
    assert not torch.equal(sample_rules(torch.arange(2), cfg, seed=1).w1, rules.w1[:2])


def test_logits_equal_a_periodic_conv_net_on_one_hot_states():
    """The gather formulation must be the spec's net: 3x3 wrap conv -> 1x1 -> ReLU -> 1x1."""
    cfg = NCAConfig(n_states=5, grid=7, patch=1, hidden=(4, 16), temperature=1.0)
    rules = sample_rules(torch.arange(3), cfg, seed=0)
    state = torch.randint(0, 5, (3, 49), generator=torch.Generator().manual_seed(0))
    got = Simulator(rules, cfg).logits(state)  # [R, n, cells]
    for r in range(3):
        x = F.one_hot(state[r].view(7, 7), 5).permute(2, 0, 1).float()[None]
        x = F.pad(x, (1, 1, 1, 1), mode="circular")  # wrap the grid, never the channels
        k1 = rules.w1[r].view(3, 3, 5, 4).permute(3, 2, 0, 1)  # [out, in, dy, dx]
        h = F.conv2d(x, k1)
        h = torch.relu(torch.einsum("bchw,cd->bdhw", h, rules.w2[r]))
        ref = torch.einsum("bchw,cd->bdhw", h, rules.w3[r]).reshape(5, 49)
        torch.testing.assert_close(got[r], ref, rtol=1e-5, atol=1e-5)


def test_lazy_step_equals_the_full_inverse_cdf_draw():
    cfg = NCAConfig()
    ids = torch.arange(64)
    sim = Simulator(sample_rules(ids, cfg, 0), cfg)
    state = initial_states(hash_keys(0, ids), cfg)
    for t in range(5):
        keys = hash_keys(9, ids, t)
        u = to_uniform(stream(keys[:, None], torch.arange(144)))
        full = _sample(sim.logits(state), u)
        state_next = sim.step(state, keys)
        assert torch.equal(state_next, full)
        state = state_next


@pytest.mark.parametrize("temperature", [1e-4, 1.0, 1e3])
def test_rollout_is_independent_of_batch_composition(temperature):
    cfg = NCAConfig(n_states=4, grid=6, patch=2, temperature=temperature)
    ids = torch.arange(10)
    keys = hash_keys(1, ids)
    together = rollout(sample_rules(ids, cfg, 0), keys, 6, cfg)
    assert together.shape == (10, 6, 6, 6) and together.dtype == torch.uint8
    assert int(together.max()) < 4
    for i in (0, 7):
        alone = rollout(sample_rules(ids[i : i + 1], cfg, 0), keys[i : i + 1], 6, cfg)
        assert torch.equal(alone[0], together[i])


def test_high_temperature_is_near_uniform_and_identity_bias_freezes():
    hot = NCAConfig(n_states=4, grid=12, patch=2, temperature=1e4)
    frames = rollout(sample_rules(torch.arange(8), hot, 0), hash_keys(0, torch.arange(8)), 4, hot)
    counts = torch.bincount(frames.flatten().long(), minlength=4).float()
    assert (counts / counts.sum() - 0.25).abs().max() < 0.02
    frozen = NCAConfig(n_states=4, grid=6, patch=2, identity_bias=1e3, temperature=1e-4)
    frames = rollout(sample_rules(torch.arange(4), frozen, 0), hash_keys(0, torch.arange(4)), 5, frozen)
    assert torch.equal(frames[:, 0], frames[:, -1])


def test_initial_state_shares_one_softmax_per_trajectory():
    cfg = NCAConfig(n_states=3, grid=60, patch=2)
    state = initial_states(hash_keys(0, torch.arange(2)), cfg)
    freqs = torch.stack([torch.bincount(s, minlength=3).float() / s.numel() for s in state])
    assert (freqs.sum(1) - 1).abs().max() < 1e-6
    assert (freqs[0] - freqs[1]).abs().max() > 0.01  # each trajectory its own logits
    again = initial_states(hash_keys(0, torch.arange(2)), cfg)
    assert torch.equal(state, again)


def test_burn_in_discards_the_first_states():
    cfg = NCAConfig(n_states=4, grid=6, patch=2, burn_in=3)
    no_burn = NCAConfig(n_states=4, grid=6, patch=2, burn_in=0)
    ids, keys = torch.arange(3), hash_keys(0, torch.arange(3))
    late = rollout(sample_rules(ids, cfg, 0), keys, 2, cfg)
    early = rollout(sample_rules(ids, no_burn, 0), keys, 5, no_burn)
    assert torch.equal(late, early[:, 3:])


def test_invalid_config_is_rejected_with_the_reason():
    with pytest.raises(ValueError, match="multiple of patch"):
        NCAConfig(grid=12, patch=5)
    with pytest.raises(ValueError, match="temperature"):
        NCAConfig(temperature=0)
    with pytest.raises(ValueError, match="n_states"):
        NCAConfig(n_states=1)


@pytest.mark.cuda
def test_cuda_rollout_matches_cpu_shapes_and_is_deterministic():
    cfg = NCAConfig()
    ids = torch.arange(32, device="cuda")
    a = rollout(sample_rules(ids, cfg, 0), hash_keys(0, ids), 12, cfg)
    b = rollout(sample_rules(ids, cfg, 0), hash_keys(0, ids), 12, cfg)
    assert a.is_cuda and torch.equal(a, b)
    cpu = rollout(sample_rules(ids.cpu(), cfg, 0), hash_keys(0, ids.cpu()), 12, cfg)
    assert (a.cpu() == cpu).float().mean() > 0.95  # same keys; only float near-ties may differ
