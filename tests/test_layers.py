"""Layers: Embedding, LayerNorm, Dropout, activations and softmax (values, odd shapes, errors).

Gradients are checked by the registered cases (tests/test_gradcheck_registry.py); here we check
forward values against simple references, dtype preservation, and the errors at the door.
"""
import math

import numpy as np
import pytest
import scipy.special

from minitransformer import backend
from minitransformer.nn import GELU, Dropout, Embedding, LayerNorm, ReLU, Softmax
from minitransformer.nn.functional import embedding as emb_f
from minitransformer.nn.functional.activations import gelu_forward, gelu_tanh_forward, normal_cdf_pdf
from minitransformer.nn.functional.dropout import dropout_backward, dropout_forward
from minitransformer.nn.functional.layernorm import layernorm_backward, layernorm_forward
from minitransformer.nn.functional.softmax import (log_softmax_backward, log_softmax_forward,
                                                   softmax_backward, softmax_forward)


def dev(a, device, dtype=None):
    return backend.to_device(np.asarray(a), device, dtype)


def host(a):
    return backend.to_numpy(a)


# -- Embedding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (3, 1)])
def test_embedding_lookup_and_scatter(device, shape):
    rng = np.random.default_rng(0)
    layer = Embedding(11, 4, rng=rng).to(device)
    idx_np = rng.integers(0, 11, shape)
    y = layer(dev(idx_np, device))
    assert y.shape == (*shape, 4) and y.dtype == np.float32
    np.testing.assert_array_equal(host(y), host(layer.weight.data)[idx_np])
    dy = rng.standard_normal((*shape, 4)).astype(np.float32)
    layer.backward(dev(dy, device))
    ref = np.zeros((11, 4), np.float32)
    np.add.at(ref, idx_np.reshape(-1), dy.reshape(-1, 4))
    np.testing.assert_allclose(host(layer.weight.grad), ref, rtol=1e-6, atol=1e-6)


def test_embedding_both_scatter_paths_agree(device):
    rng = np.random.default_rng(1)
    for V in (emb_f.ONEHOT_MAX_VOCAB, emb_f.ONEHOT_MAX_VOCAB + 1):
        idx = rng.integers(0, V, (4, 33))
        w = rng.standard_normal((V, 8))
        dy = rng.standard_normal((4, 33, 8))
        _, cache = emb_f.embedding_forward(dev(idx, device), dev(w, device))
        _, dw = emb_f.embedding_backward(dev(dy, device), cache)
        ref = np.zeros((V, 8))
        np.add.at(ref, idx.reshape(-1), dy.reshape(-1, 8))
        np.testing.assert_allclose(host(dw), ref, rtol=1e-12, atol=1e-12)


def test_embedding_rejects_bad_ids(device):
    layer = Embedding(5, 3).to(device)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        layer(dev([[0, 5]], device))
    with pytest.raises(ValueError, match="token ids"):
        layer(dev([[-1, 2]], device))
    with pytest.raises(TypeError, match="integer token ids"):
        layer(dev([[0.0, 1.0]], device))
    with pytest.raises(ValueError, match="dimensions"):
        layer(dev([0, 1], device))


def test_embedding_float64(device):
    layer = Embedding(5, 3).to(device, "float64")
    assert layer(dev([[1, 2]], device)).dtype == np.float64


# -- LayerNorm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1, 8), (2, 3, 5), (7, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_normalises(device, shape, dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    layer = LayerNorm(shape[-1]).to(device, dtype)
    y = layer(dev(x, device))
    assert y.dtype == dtype and y.shape == shape
    yh = host(y)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(yh.mean(-1), 0, atol=tol)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(yh, ref, rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(yh.var(-1), x.var(-1) / (x.var(-1) + 1e-5), rtol=tol * 10)


def test_layernorm_affine_and_constant_rows(device):
    x = np.full((2, 4), 3.0)                            # var = 0: eps keeps it finite
    gamma, beta = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 0.0, -1.0, 2.0])
    y, cache = layernorm_forward(dev(x, device), dev(gamma, device), dev(beta, device))
    np.testing.assert_allclose(host(y), np.broadcast_to(beta, (2, 4)))
    dx, _, _ = layernorm_backward(dev(np.ones((2, 4)), device), cache)
    assert np.all(np.isfinite(host(dx)))


def test_layernorm_backward_is_pure(device):
    rng = np.random.default_rng(3)
    x, dy = dev(rng.standard_normal((3, 6)), device), dev(rng.standard_normal((3, 6)), device)
    g, b = dev(np.ones(6), device), dev(np.zeros(6), device)
    x0, dy0 = host(x).copy(), host(dy).copy()
    _, cache = layernorm_forward(x, g, b)
    xhat0 = host(cache.xhat).copy()
    layernorm_backward(dy, cache)
    np.testing.assert_array_equal(host(x), x0)
    np.testing.assert_array_equal(host(dy), dy0)
    np.testing.assert_array_equal(host(cache.xhat), xhat0)


def test_layernorm_errors(device):
    layer = LayerNorm(4).to(device)
    with pytest.raises(ValueError, match="last dimension 4"):
        layer(dev(np.zeros((2, 5), np.float32), device))
    with pytest.raises(TypeError, match="dtype float32"):
        layer(dev(np.zeros((2, 4)), device))
    with pytest.raises(ValueError):
        LayerNorm(0)


# -- Dropout ------------------------------------------------------------------------------------
def test_dropout_scaling_and_rate(device):
    x = dev(np.ones((200, 500), np.float32), device)
    layer = Dropout(0.25, seed=0)
    y = host(layer(x))
    assert y.dtype == np.float32
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.01
    assert abs(y.mean() - 1.0) < 0.02                  # inverted dropout keeps the expectation
    dx = host(layer.backward(dev(np.ones((200, 500), np.float32), device)))
    np.testing.assert_array_equal(dx, y)               # same mask, same scale


def test_dropout_eval_and_p0_are_identity(device):
    x = dev(np.arange(12, dtype=np.float32).reshape(3, 4), device)
    layer = Dropout(0.5, seed=1).eval()
    assert layer(x) is x
    dy = dev(np.ones((3, 4), np.float32), device)
    assert layer.backward(dy) is dy
    assert Dropout(0.0)(x) is x


def test_dropout_seeded_and_moves(device):
    x = dev(np.ones((4, 64)), device)
    a, b = Dropout(0.5, seed=7), Dropout(0.5, seed=7)
    np.testing.assert_array_equal(host(a(x)), host(b(x)))
    a.to(device)                                       # re-creates the generator on the device
    assert host(a(x)).dtype == np.float64


def test_dropout_functional_fixed_mask(device):
    x = dev(np.array([[1.0, 2.0, 3.0, 4.0]]), device)
    mask = dev(np.array([[True, False, True, False]]), device)
    y, cache = dropout_forward(x, mask, 0.5)
    np.testing.assert_allclose(host(y), [[2.0, 0.0, 6.0, 0.0]])
    dx, _, _ = dropout_backward(dev(np.ones((1, 4)), device), cache)
    np.testing.assert_allclose(host(dx), [[2.0, 0.0, 2.0, 0.0]])


def test_dropout_errors():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="0 <= p < 1"):
            Dropout(p)
    with pytest.raises(TypeError, match="floating-point"):
        Dropout(0.1)(np.ones((2, 2), np.int64))


# -- activations --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_matches_erf_formula(device, dtype):
    x = np.linspace(-6, 6, 97).astype(dtype).reshape(1, 97)
    ref = 0.5 * x.astype(np.float64) * (1 + scipy.special.erf(x.astype(np.float64) / math.sqrt(2)))
    y = GELU()(dev(x, device))
    assert y.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(host(y), ref, rtol=tol, atol=tol)
    yt = GELU(approximate="tanh")(dev(x, device))
    assert yt.dtype == dtype
    np.testing.assert_allclose(host(yt), ref, atol=1e-3)    # the approximation is that close
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    np.testing.assert_allclose(host(yt), 0.5 * x * (1 + np.tanh(u)), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_cdf_accuracy(device, dtype):
    x = np.concatenate([np.linspace(-9, 9, 2001), [0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0]]).astype(dtype)
    ref = 0.5 * scipy.special.erfc(-x.astype(np.float64) / math.sqrt(2))
    cdf = host(normal_cdf_pdf(dev(x, device))[0])
    assert cdf.dtype == dtype and np.all(np.isfinite(cdf))
    np.testing.assert_allclose(cdf, ref, rtol=0, atol=3.5e-7 if dtype == np.float32 else 1e-15)   # a few float32 ulps
    assert np.all((cdf >= 0) & (cdf <= 1))


def test_gelu_known_values(device):
    y = host(gelu_forward(dev(np.array([0.0, 1.0, -1.0]), device))[0])
    np.testing.assert_allclose(y, [0.0, 0.8413447460685429, -0.15865525393145707], rtol=1e-12)
    yt = host(gelu_tanh_forward(dev(np.array([0.0, 1.0]), device))[0])
    np.testing.assert_allclose(yt, [0.0, 0.8411919906082768], rtol=1e-12)


def test_gelu_errors():
    with pytest.raises(ValueError, match="approximate"):
        GELU(approximate="sigmoid")
    with pytest.raises(TypeError, match="floating-point"):
        GELU()(np.ones(3, np.int32))


def test_relu(device):
    x = np.array([[-2.0, -0.5, 0.5, 3.0]], np.float32)
    layer = ReLU()
    y = layer(dev(x, device))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(host(y), [[0, 0, 0.5, 3.0]])
    dx = layer.backward(dev(np.full((1, 4), 2.0, np.float32), device))
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(host(dx), [[0, 0, 2.0, 2.0]])


def test_modules_keep_no_cache_under_no_grad(device):
    x = dev(np.ones((2, 3), np.float32), device)
    for layer in (ReLU(), GELU(), Softmax(), LayerNorm(3).to(device)):
        with layer.no_grad():
            layer(x)
        assert layer.cache is None


# -- softmax ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (2, 3, 7), (5, 1, 2)])
def test_softmax_values(device, shape):
    x = np.random.default_rng(4).standard_normal(shape) * 4
    ref = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    y, _ = softmax_forward(dev(x, device))
    np.testing.assert_allclose(host(y), ref, rtol=1e-12)
    logp, _ = log_softmax_forward(dev(x, device))
    np.testing.assert_allclose(host(logp), np.log(ref), rtol=1e-10, atol=1e-12)


def test_softmax_stress(device):
    x = np.array([[1000.0, -1000.0, 999.0], [-np.inf, -np.inf, -np.inf], [-np.inf, 0.0, 0.0]],
                 np.float32)
    y, cache = softmax_forward(dev(x, device))
    yh = host(y)
    assert yh.dtype == np.float32 and np.all(np.isfinite(yh))
    np.testing.assert_allclose(yh[0], [1 / (1 + math.exp(-1)), 0, math.exp(-1) / (1 + math.exp(-1))],
                               rtol=1e-6)
    np.testing.assert_array_equal(yh[1], 0)               # fully masked row: zeros, not NaN
    np.testing.assert_allclose(yh[2], [0, 0.5, 0.5])
    dx = host(softmax_backward(dev(np.ones((3, 3), np.float32), device), cache))
    assert np.all(np.isfinite(dx))
    logp, lcache = log_softmax_forward(dev(x[:1], device))
    assert np.all(np.isfinite(host(logp)))
    assert np.all(np.isfinite(host(log_softmax_backward(dev(np.ones((1, 3), np.float32), device), lcache))))


def test_log_softmax_of_shifted_rows_is_accurate_in_float32(device):
    """Rows near +300: log-softmax is computed as (x - m) - log sum exp(x - m), so the result (around
    -2 to -8) keeps its float32 digits. Forming logsumexp(x) ~ 300 first rounds it to 1.5e-5, which was
    measured at 40-110 ulps of the result."""
    x = (np.random.default_rng(0).standard_normal((8, 64)) + 300).astype(np.float32)
    ref = scipy.special.log_softmax(x.astype(np.float64), axis=-1)       # the same inputs, in float64
    logp, _ = log_softmax_forward(dev(x, device))
    assert host(logp).dtype == np.float32
    ulp = np.spacing(np.abs(ref).astype(np.float32))                      # float32 ulp of each result
    err = np.abs(host(logp) - ref)
    assert np.all(err <= 4 * ulp), f"worst error {(err / ulp).max():.1f} ulps, expected <= 4"
    # masked entries are -inf, a fully masked row is all -inf: never NaN
    masked = np.array([[300.0, -np.inf, 301.0], [-np.inf, -np.inf, -np.inf]], np.float32)
    out = host(log_softmax_forward(dev(masked, device))[0])
    np.testing.assert_allclose(out[0, [0, 2]], [-math.log1p(math.e), -math.log1p(1 / math.e)], rtol=1e-6)
    assert out[0, 1] == -np.inf and np.all(out[1] == -np.inf)


# -- against PyTorch (float32, forward and backward) ----------------------------------------------
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_and_layernorm_match_torch(device, approximate):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 4, 10)) * 2).astype(np.float32)
    dy = rng.standard_normal((3, 4, 10)).astype(np.float32)
    # GELU
    act = GELU(approximate=approximate)
    y = act(dev(x, device))
    dx = act.backward(dev(dy, device))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.gelu(tx, approximate=approximate)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(dx), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    # LayerNorm with a non-trivial affine part
    ln = LayerNorm(10).to(device)
    g, b = rng.standard_normal(10).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    ln.weight.data[...], ln.bias.data[...] = dev(g, device), dev(b, device)
    y = ln(dev(x, device))
    dx = ln.backward(dev(dy, device))
    tln = torch.nn.LayerNorm(10)
    with torch.no_grad():
        tln.weight.copy_(torch.tensor(g))
        tln.bias.copy_(torch.tensor(b))
    tx = torch.tensor(x, requires_grad=True)
    ty = tln(tx)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(host(dx), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(host(ln.weight.grad), tln.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(host(ln.bias.grad), tln.bias.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_parameter_grads_accumulate(device):
    layer = LayerNorm(4).to(device)
    x = dev(np.random.default_rng(6).standard_normal((2, 4)).astype(np.float32), device)
    dy = dev(np.ones((2, 4), np.float32), device)
    layer(x)
    layer.backward(dy)
    once = host(layer.bias.grad).copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(host(layer.bias.grad), 2 * once)     # += until zero_grad()
    layer.zero_grad()
    np.testing.assert_array_equal(host(layer.bias.grad), 0)


def test_dropout_backward_without_mask_raises(device):
    layer = Dropout(0.5, seed=0)
    x = dev(np.ones((2, 3), np.float32), device)
    with layer.no_grad():
        layer(x)
    with pytest.raises(RuntimeError, match="no mask"):
        layer.backward(x)
