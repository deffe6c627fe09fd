"""MultiHeadAttention against a per-head loop, KV-cache decoding, and errors at the door."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention import KVCache, MultiHeadAttention


def np_(a):
    return backend.to_numpy(a)


def rand(device, seed, *shapes):
    rng = np.random.default_rng(seed)
    return [backend.to_device(rng.standard_normal(s), device) for s in shapes]


def softmax_attention(q, k, v, mask):
    s = q @ k.T / np.sqrt(q.shape[-1])
    s = np.where(mask, s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def naive_mha(mha, x, context=None, causal=False):
    """One head and one batch element at a time, straight from the weights."""
    x = np_(x)
    C, H, D = mha.d_model, mha.n_head, mha.head_dim
    b_or_0 = (lambda lin: 0 if lin.bias is None else np_(lin.bias.data))
    if mha.cross:
        ctx = np_(context)
        q = x @ np_(mha.q.weight.data) + b_or_0(mha.q)
        kv = ctx @ np_(mha.kv.weight.data) + b_or_0(mha.kv)
        k, v = kv[..., :C], kv[..., C:]
    else:
        qkv = x @ np_(mha.qkv.weight.data) + b_or_0(mha.qkv)
        q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    B, T, S = x.shape[0], x.shape[1], k.shape[1]
    mask = np.arange(S)[None, :] <= np.arange(T)[:, None] + S - T if causal else np.ones((T, S), bool)
    y = np.zeros((B, T, C))
    for b in range(B):
        for h in range(H):
            cols = slice(h * D, (h + 1) * D)
            y[b, :, cols] = softmax_attention(q[b, :, cols], k[b, :, cols], v[b, :, cols], mask)
    return y @ np_(mha.proj.weight.data) + b_or_0(mha.proj)


@pytest.mark.parametrize("n_head,causal", [(1, False), (4, True), (2, False)])
def test_self_attention_matches_per_head_loop(device, n_head, causal):
    mha = MultiHeadAttention(8, n_head, rng=backend.host_rng(0)).to(device, "float64")
    (x,) = rand(device, 1, (2, 5, 8))
    out = mha.forward(x, causal=causal)
    assert out.shape == (2, 5, 8)
    np.testing.assert_allclose(np_(out), naive_mha(mha, x, causal=causal), rtol=1e-10, atol=1e-12)
    assert mha.last_weights.shape == (2, n_head, 5, 5)


def test_cross_attention_matches_per_head_loop(device):
    mha = MultiHeadAttention(6, 3, cross=True, bias=False, rng=backend.host_rng(1)).to(device, "float64")
    x, ctx = rand(device, 2, (2, 3, 6), (2, 7, 6))
    out = mha.forward(x, ctx)
    np.testing.assert_allclose(np_(out), naive_mha(mha, x, ctx), rtol=1e-10, atol=1e-12)
    dx, dctx = mha.backward(backend.to_device(np.ones((2, 3, 6)), device))
    assert dx.shape == (2, 3, 6) and dctx.shape == (2, 7, 6)


def test_kv_cache_decoding_equals_full_recomputation(device):
    mha = MultiHeadAttention(8, 2, rng=backend.host_rng(3)).to(device, "float64")
    (x,) = rand(device, 4, (2, 9, 8))
    full = np_(mha.forward(x, causal=True))
    cache = KVCache(max_len=12)
    with mha.no_grad():
        steps = [np_(mha.forward(x[:, :4], causal=True, kv_cache=cache))]          # prefill 4 tokens
        steps += [np_(mha.forward(x[:, t:t + 1], causal=True, kv_cache=cache)) for t in range(4, 9)]
    assert cache.length == 9
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)
    # token by token from an empty cache, after reset
    cache.reset()
    with mha.no_grad():
        steps = [np_(mha.forward(x[:, t:t + 1], causal=True, kv_cache=cache)) for t in range(9)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)


def test_cross_attention_kv_cache_reuses_context(device):
    mha = MultiHeadAttention(4, 2, cross=True, rng=backend.host_rng(5)).to(device, "float64")
    x, ctx = rand(device, 6, (1, 3, 4), (1, 5, 4))
    full = np_(mha.forward(x, ctx))
    cache = KVCache(max_len=5)
    with mha.no_grad():
        first = np_(mha.forward(x[:, :1], ctx, kv_cache=cache))
        rest = np_(mha.forward(x[:, 1:], None, kv_cache=cache))   # context already cached
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), full, rtol=1e-10, atol=1e-12)


def test_kv_cache_preallocated_and_overflow(device):
    cache = KVCache(4, batch=1, n_head=2, head_dim=3, dtype="float64", device=device)
    assert cache.k.shape == (1, 2, 4, 3)
    k, v = rand(device, 7, (1, 2, 3, 3), (1, 2, 3, 3))
    k_all, v_all = cache.append(k, v)
    assert k_all.shape == (1, 2, 3, 3) and len(cache) == 3
    np.testing.assert_array_equal(np_(v_all), np_(v))
    with pytest.raises(ValueError, match="KVCache is full"):
        cache.append(k, v)
    with pytest.raises(ValueError, match=r"\(B, H, t, D\)"):
        cache.append(k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="max_len"):
        KVCache(0)


def test_backward_through_cache_or_no_grad_refused(device):
    mha = MultiHeadAttention(4, 2).to(device, "float64")
    (x,) = rand(device, 8, (1, 2, 4))
    mha.forward(x, kv_cache=KVCache(4))
    with pytest.raises(RuntimeError, match="no forward pass"):
        mha.backward(x)
    with mha.no_grad():
        mha.forward(x)
    with pytest.raises(RuntimeError, match="no forward pass"):
        mha.backward(x)


def test_errors_at_the_door(device):
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="unknown attention kernel"):
        MultiHeadAttention(8, 2, attention="nope")
    mha = MultiHeadAttention(8, 2).to(device)
    x = backend.to_device(np.zeros((2, 3, 6), np.float32), device)
    with pytest.raises(ValueError, match="last dimension 8"):
        mha.forward(x)
    x = backend.to_device(np.zeros((2, 3, 8), np.float32), device)
    with pytest.raises(ValueError, match="takes no context"):
        mha.forward(x, x)
    cross = MultiHeadAttention(8, 2, cross=True).to(device)
    with pytest.raises(ValueError, match="needs context"):
        cross.forward(x)
    with pytest.raises(ValueError, match="batch size"):
        cross.forward(x, x[:1])
    with pytest.raises(ValueError, match="last dimension 8"):
        cross.forward(x, x[..., :4])
    with pytest.raises(TypeError, match="dtype"):
        mha.forward(x.astype(np.float64))
