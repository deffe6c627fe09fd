"""Masks, scaled dot-product attention and the dense kernel, against a naive float64 reference."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention import (DenseAttention, attention_backward, attention_forward,
                                       attention_mask, attention_weights, causal_mask, make_kernel,
                                       mask_to_bias, padding_mask)


def naive_attention(q, k, v, mask=None):
    """softmax(Q K^T / sqrt(D) + mask) V, one (b, h) at a time, with its gradient by the textbook
    formulas; fully masked rows -> 0."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, H, T, D = q.shape
    S = k.shape[2]
    mask = np.ones((B, H, T, S), bool) if mask is None else np.broadcast_to(mask, (B, H, T, S))
    P = np.zeros((B, H, T, S))
    for b in range(B):
        for h in range(H):
            s = q[b, h] @ k[b, h].T / np.sqrt(D)
            for i in range(T):
                row = s[i][mask[b, h, i]]
                if row.size:
                    e = np.exp(row - row.max())
                    P[b, h, i, mask[b, h, i]] = e / e.sum()
    out = P @ v

    def grad(dout):
        dv = P.swapaxes(-1, -2) @ dout
        dP = dout @ v.swapaxes(-1, -2)
        dS = P * (dP - (dP * P).sum(-1, keepdims=True))
        return dS @ k / np.sqrt(D), dS.swapaxes(-1, -2) @ q / np.sqrt(D), dv

    return out, P, grad


def rand(device, seed, *shapes, scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [backend.to_device((rng.standard_normal(s) * scale).astype(dtype), device) for s in shapes]


def np_(a):
    return backend.to_numpy(a)


# -- masks ----------------------------------------------------------------------------------------
def test_causal_mask_bottom_right(device):
    m = np_(causal_mask(2, 4, device))
    assert m.dtype == bool and m.shape == (2, 4)
    np.testing.assert_array_equal(m, [[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(np_(causal_mask(3, device=device)), np.tril(np.ones((3, 3), bool)))
    with pytest.raises(ValueError, match="at least as many keys"):
        causal_mask(4, 2)


def test_padding_and_combined_masks(device):
    lengths = backend.to_device(np.array([2, 0, 3]), device)
    pad = padding_mask(lengths, 3)
    np.testing.assert_array_equal(np_(pad), [[0, 0, 1], [1, 1, 1], [0, 0, 0]])   # True on padding
    m = attention_mask(2, 3, causal=True, key_padding_mask=pad)
    assert m.shape == (3, 1, 2, 3)
    np.testing.assert_array_equal(np_(m)[0, 0], [[1, 1, 0], [1, 1, 0]])
    assert attention_mask(2, 3) is None
    assert attention_mask(2, 3, causal=True).shape == (1, 1, 2, 3)
    with pytest.raises(ValueError, match="lengths"):
        padding_mask(np.array([4]), 3)
    with pytest.raises(TypeError, match="boolean"):
        attention_mask(2, 3, key_padding_mask=np.ones((3, 3)))
    bias = np_(mask_to_bias(causal_mask(2, 2, device), np.float32))
    np.testing.assert_array_equal(bias, [[0, -np.inf], [0, 0]])


# -- the functional pair against the reference ------------------------------------------------------
CASES = [  # (B, H, T, S, D, mask kind)
    (2, 3, 5, 5, 4, None),
    (2, 3, 5, 5, 4, "causal"),
    (1, 2, 3, 7, 4, "causal"),      # T < S: bottom-right alignment
    (2, 1, 4, 6, 8, "pad"),
    (2, 2, 4, 4, 2, "causal+pad"),
    (1, 1, 1, 1, 3, "causal"),      # T = S = 1
    (1, 2, 1, 5, 3, None),          # one query (decoding)
]


def make_mask(kind, B, T, S, device):
    if kind is None:
        return None
    lengths = backend.to_device(np.array([max(1, S - b - 1) for b in range(B)]), device)
    pad = padding_mask(lengths, S) if "pad" in kind else None
    return attention_mask(T, S, causal="causal" in kind, key_padding_mask=pad, device=device)


@pytest.mark.parametrize("B,H,T,S,D,kind", CASES)
def test_matches_naive_reference(device, B, H, T, S, D, kind):
    q, k, v, dout = rand(device, 0, (B, H, T, D), (B, H, S, D), (B, H, S, D), (B, H, T, D))
    mask = make_mask(kind, B, T, S, device)
    out, cache = attention_forward(q, k, v, mask=mask)
    ref_out, ref_p, grad = naive_attention(np_(q), np_(k), np_(v), None if mask is None else np_(mask))
    np.testing.assert_allclose(np_(out), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np_(attention_weights(cache)), ref_p, rtol=1e-10, atol=1e-12)
    for got, want in zip(attention_backward(dout, cache), grad(np_(dout))):
        np.testing.assert_allclose(np_(got), want, rtol=1e-9, atol=1e-11)


def test_float32_close_to_float64(device):
    q, k, v = rand(device, 1, (2, 2, 6, 8), (2, 2, 6, 8), (2, 2, 6, 8))
    mask = attention_mask(6, 6, causal=True, device=device)
    out64, _ = attention_forward(q, k, v, mask=mask)
    out32, _ = attention_forward(*(a.astype(np.float32) for a in (q, k, v)), mask=mask)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(np_(out32), np_(out64), rtol=1e-4, atol=1e-5)


def test_fully_masked_rows_give_zeros_not_nan(device):
    q, k, v, dout = rand(device, 2, (2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 3, 4))
    mask = np.ones((2, 1, 3, 5), bool)
    mask[0, :, 1, :] = False            # one query of batch 0 sees nothing
    mask[1] = False                     # batch 1 sees nothing at all
    out, cache = attention_forward(q, k, v, mask=backend.to_device(mask, device))
    dq, dk, dv = (np_(g) for g in attention_backward(dout, cache))
    out = np_(out)
    for a in (out, dq, dk, dv):
        assert np.isfinite(a).all()
    assert (out[0, :, 1] == 0).all() and (out[1] == 0).all()
    assert (dq[0, :, 1] == 0).all() and (dq[1] == 0).all()
    assert (dk[1] == 0).all() and (dv[1] == 0).all()
    ref_out, _, grad = naive_attention(np_(q), np_(k), np_(v), mask)
    np.testing.assert_allclose(out, ref_out, atol=1e-12)
    np.testing.assert_allclose(dk, grad(np_(dout))[1], atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_are_stable(device, dtype):
    # scores of +-1000 and more: exp without max subtraction would overflow
    q, k, v, dout = rand(device, 3, (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), dtype=dtype)
    q = q * 1000.0
    mask = attention_mask(4, 4, causal=True, device=device)
    out, cache = attention_forward(q, k, v, mask=mask)
    grads = attention_backward(dout, cache)
    assert np.abs(np_(q @ k.swapaxes(-1, -2))).max() / np.sqrt(8) > 1000
    for a in (out, *grads):
        assert np.isfinite(np_(a)).all()
    ref_out, ref_p, grad = naive_attention(np_(q), np_(k), np_(v), np_(mask))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(np_(out), ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(np_(grads[2]), grad(np_(dout))[2], rtol=tol, atol=tol)


def test_inputs_and_dout_not_mutated(device):
    q, k, v, dout = rand(device, 4, (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4))
    before = [np_(a).copy() for a in (q, k, v, dout)]
    out, cache = attention_forward(q, k, v, mask=attention_mask(3, 3, causal=True, device=device))
    p = np_(cache.p).copy()
    attention_backward(dout, cache)
    for a, b in zip((q, k, v, dout), before):
        np.testing.assert_array_equal(np_(a), b)
    np.testing.assert_array_equal(np_(cache.p), p)


def test_bad_inputs_raise(device):
    q, k, v = rand(device, 5, (1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4))
    with pytest.raises(ValueError, match="dimensions"):
        attention_forward(q[0], k, v)
    with pytest.raises(ValueError, match="k must have shape"):
        attention_forward(q, k[..., :3], v)
    with pytest.raises(ValueError, match="v must have shape"):
        attention_forward(q, k, v[:, :, :4])
    with pytest.raises(ValueError, match="broadcast"):
        attention_forward(q, k, v, mask=backend.to_device(np.ones((3, 4), bool), device))


# -- the dense kernel -------------------------------------------------------------------------------
def test_dense_kernel_matches_functional_and_keeps_weights(device):
    q, k, v, dout = rand(device, 6, (2, 2, 4, 3), (2, 2, 6, 3), (2, 2, 6, 3), (2, 2, 4, 3))
    pad = padding_mask(backend.to_device(np.array([6, 3]), device), 6)
    kernel = make_kernel("dense", n_head=2, head_dim=3)
    assert isinstance(kernel, DenseAttention)
    out = kernel.forward(q, k, v, causal=True, key_padding_mask=pad)
    mask = attention_mask(4, 6, causal=True, key_padding_mask=pad)
    ref, ref_cache = attention_forward(q, k, v, mask=mask)
    np.testing.assert_allclose(np_(out), np_(ref), rtol=1e-12, atol=1e-14)
    w = np_(kernel.last_weights)
    assert w.shape == (2, 2, 4, 6)
    np.testing.assert_allclose(w.sum(-1), 1.0)
    assert (w[1, :, :, 3:] == 0).all()          # padding gets no weight
    for a, b in zip(kernel.backward(dout), attention_backward(dout, ref_cache)):
        np.testing.assert_allclose(np_(a), np_(b), rtol=1e-12, atol=1e-14)
    # the cached causal bias is reused, and a second shape gets its own
    kernel.forward(q, k, v, causal=True)
    kernel.forward(q[:, :, :2], k, v, causal=True)
    assert len(kernel._causal_bias) == 2


def test_dense_kernel_no_grad_and_errors(device):
    q, k, v = rand(device, 7, (1, 2, 4, 3), (1, 2, 4, 3), (1, 2, 4, 3))
    kernel = DenseAttention(2, 3)
    with kernel.no_grad():
        kernel.forward(q, k, v, causal=True)
    assert kernel.cache is None and kernel.last_weights is None
    with pytest.raises(RuntimeError, match="no forward pass"):
        kernel.backward(q)
    with pytest.raises(ValueError, match="at least as many keys as queries"):
        kernel.forward(q, k[:, :, :2], v[:, :, :2], causal=True)
    with pytest.raises(ValueError, match=r"shape \(B, S\)"):
        kernel.forward(q, k, v, key_padding_mask=backend.to_device(np.ones((1, 3), bool), device))
