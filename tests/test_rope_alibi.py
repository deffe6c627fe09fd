"""RoPE and ALiBi wired into attention and the GPT: against direct computations, through the KV
cache, gradients in float64, and the errors at the door."""
import itertools

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention.alibi import ALiBiAttention, alibi_bias, alibi_slopes
from minitransformer.attention.kv_cache import KVCache
from minitransformer.attention.multi_head import MultiHeadAttention
from minitransformer.generate import generate
from minitransformer.gradcheck import check_module
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.positional import RotaryEmbedding, rope_forward


def dev(a, device, dtype=None):
    return backend.to_device(np.asarray(a), device, dtype)


def host(a):
    return backend.to_numpy(a)


def softmax_attention_reference(q, k, v, bias):
    """O = softmax(q k^T / sqrt(D) + bias) v with plain NumPy; bias (H, T, S)."""
    s = np.einsum("bhtd,bhsd->bhts", q, k) / np.sqrt(q.shape[-1]) + bias
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhts,bhsd->bhtd", p, v)


# -- ALiBi ----------------------------------------------------------------------------------------
def test_alibi_slopes_known_values():
    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -k for k in range(1, 9)], rtol=0)
    np.testing.assert_allclose(alibi_slopes(4), [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8], rtol=0)
    # H = 6: the four slopes of H = 4, then every other slope of H = 8 (1/2, 1/8)
    np.testing.assert_allclose(alibi_slopes(6), [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3], rtol=0)
    assert alibi_slopes(1).tolist() == [2.0 ** -8]
    with pytest.raises(ValueError, match="n_head"):
        alibi_slopes(0)


@pytest.mark.parametrize("T,S,causal", [(4, 4, True), (1, 6, True), (3, 7, True), (5, 5, False)])
def test_alibi_bias_every_entry(device, T, S, causal):
    """Each entry against the definition, with queries at absolute positions S-T..S-1."""
    slopes = alibi_slopes(3)
    bias = host(alibi_bias(T, S, slopes, causal, np.float64, device))           # (S, 1, H, T)
    assert bias.shape == (S, 1, 3, T)
    for h in range(3):
        for i in range(T):
            for j in range(S):
                pos = i + S - T
                want = -np.inf if causal and j > pos else -slopes[h] * abs(pos - j)
                assert bias[j, 0, h, i] == want


def test_alibi_kernel_equals_direct_softmax(device):
    rng = np.random.default_rng(0)
    B, H, T, D = 2, 4, 5, 3
    q, k, v = (rng.standard_normal((B, H, T, D)) for _ in range(3))
    kernel = ALiBiAttention(H, D).to(device, "float64")
    out = host(kernel.forward(dev(q, device), dev(k, device), dev(v, device), causal=True))
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    bias = np.where(j <= i, -alibi_slopes(H)[:, None, None] * (i - j), -np.inf)   # (H, T, T)
    np.testing.assert_allclose(out, softmax_attention_reference(q, k, v, bias), rtol=1e-12, atol=1e-13)


def test_alibi_kernel_gradcheck(device):
    rng = np.random.default_rng(1)
    q, k, v = (dev(rng.standard_normal((1, 3, 4, 2)), device) for _ in range(3))
    result = check_module("alibi", ALiBiAttention(3, 2).to(device, "float64"), [q, k, v],
                          run=lambda m, *a: m.forward(*a, causal=True))
    assert result.passed, str(result)


def test_alibi_refuses_noncausal_keys_of_another_length(device):
    z = dev(np.zeros((1, 1, 2, 4)), device)
    with pytest.raises(ValueError, match="T=2, S=3"):
        ALiBiAttention(1, 4).to(device, "float64").forward(z, dev(np.zeros((1, 1, 3, 4)), device),
                                                            dev(np.zeros((1, 1, 3, 4)), device))


# -- RoPE inside multi-head attention ---------------------------------------------------------------
def test_rotary_attention_equals_rotating_by_hand(device):
    """MHA(rotary) = dense attention of the rotated q, k, computed from the layer's own weights."""
    rng = np.random.default_rng(2)
    C, H, T = 8, 2, 5
    mha = MultiHeadAttention(C, H, rotary=RotaryEmbedding(), rng=backend.host_rng(3)).to(device, "float64")
    x = rng.standard_normal((2, T, C))
    out = host(mha.forward(dev(x, device), causal=True))
    w, b = host(mha.qkv.weight.data), host(mha.qkv.bias.data)
    qkv = (x @ w + b).reshape(2, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)       # (3,B,H,T,D)
    q, k = (host(rope_forward(qkv[n])[0]) for n in (0, 1))
    bias = np.where(np.tril(np.ones((T, T))) > 0, 0.0, -np.inf)
    y = softmax_attention_reference(q, k, qkv[2], bias).transpose(0, 2, 1, 3).reshape(2, T, C)
    want = y @ host(mha.proj.weight.data) + host(mha.proj.bias.data)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)


def test_rotary_attention_gradcheck(device):
    mha = MultiHeadAttention(8, 2, rotary=RotaryEmbedding(), rng=backend.host_rng(4)).to(device, "float64")
    x = dev(np.random.default_rng(5).standard_normal((2, 4, 8)), device)
    result = check_module("mha rope", mha, [x], run=lambda m, a: m.forward(a, causal=True))
    assert result.passed, str(result)


def test_rotary_kv_cache_continues_positions(device):
    """Token by token through a KVCache = the whole sequence at once (positions 0..T-1 each time)."""
    C, H, T = 8, 2, 6
    mha = MultiHeadAttention(C, H, rotary=RotaryEmbedding(), rng=backend.host_rng(6)).to(device, "float64")
    x = dev(np.random.default_rng(7).standard_normal((1, T, C)), device)
    with mha.no_grad():
        full = host(mha.forward(x, causal=True))
        cache = KVCache(T)
        steps = [host(mha.forward(x[:, t:t + 1], causal=True, kv_cache=cache)) for t in range(T)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-12, atol=1e-13)


# -- the GPT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ffn", [True, False])
@pytest.mark.parametrize("positional", ["rope", "alibi"])
def test_gpt_cached_decoding_equals_recomputation(device, positional, ffn):
    cfg = GPTConfig(vocab_size=13, block_size=12, n_layer=2, n_head=2, d_model=8, positional=positional,
                    ffn=ffn)
    model = GPT(cfg, seed=8).to(device, "float64")
    assert model.wpe is None and model.supports_kv_cache
    idx = dev(np.random.default_rng(9).integers(0, 13, (2, 9)), device)
    with model.no_grad():
        full, _ = model.forward(idx)
        caches = model.make_kv_caches(2)
        prefill, _ = model.forward(idx[:, :4], kv_caches=caches)
        steps = [model.forward(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(4, 9)]
    got = np.concatenate([host(prefill)] + [host(s) for s in steps], axis=1)
    np.testing.assert_allclose(got, host(full), rtol=1e-11, atol=1e-12)
    prompt = idx[:, :3]
    np.testing.assert_array_equal(host(generate(model, prompt, 9, greedy=True, use_cache=True)),
                                  host(generate(model, prompt, 9, greedy=True, use_cache=False)))


@pytest.mark.parametrize("positional", ["rope", "alibi"])
def test_gpt_gradcheck(device, positional):
    cfg = GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, d_model=4, positional=positional)
    model = GPT(cfg, seed=10).to(device, "float64")
    rng = np.random.default_rng(11)
    idx, targets = dev(rng.integers(0, 7, (2, 4)), device), dev(rng.integers(0, 7, (2, 4)), device)
    result = check_module(positional, model, [idx, targets], run=lambda m, i, t: m.forward(i, t)[1],
                          backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5)
    assert result.passed, str(result)


def test_positions_matter_without_a_table():
    """RoPE and ALiBi see order although nothing is added to the input: swapping two tokens
    changes the last logits (a model with no positions at all would give the same)."""
    for positional, ffn in itertools.product(("rope", "alibi"), (True, False)):   # attention-only too
        model = GPT(GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8,
                              positional=positional, ffn=ffn), seed=12).to("cpu", "float64")
        a = np.array([[1, 2, 3, 4, 5]])
        b = np.array([[2, 1, 3, 4, 5]])
        assert np.abs(model.forward(a)[0][0, -1] - model.forward(b)[0][0, -1]).max() > 1e-6


def test_config_errors():
    with pytest.raises(ValueError, match="'rope', 'alibi'"):
        GPTConfig(positional="nope")
    with pytest.raises(ValueError, match="head size .* 3 must be even"):
        GPTConfig(d_model=6, n_head=2, positional="rope")
    with pytest.raises(ValueError, match="attention='sliding_window' cannot take it"):
        GPTConfig(positional="alibi", attention="sliding_window")
    with pytest.raises(ValueError, match="self-attention"):
        MultiHeadAttention(4, 2, cross=True, rotary=RotaryEmbedding())
    with pytest.raises(ValueError, match="base"):
        RotaryEmbedding(base=1.0)
