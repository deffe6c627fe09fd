"""Positional encodings: sinusoidal values, learned table with offsets, RoPE's properties."""
import math

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from minitransformer.positional import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
                                        rope_backward, rope_forward, sinusoidal_encoding)


def dev(a, device, dtype=None):
    return backend.to_device(np.asarray(a), device, dtype)


def host(a):
    return backend.to_numpy(a)


# -- sinusoidal ---------------------------------------------------------------------------------
def test_sinusoidal_known_values(device):
    pe = host(sinusoidal_encoding(50, 8, dtype=np.float64, device=device))
    assert pe.shape == (50, 8)
    np.testing.assert_array_equal(pe[0], [0, 1, 0, 1, 0, 1, 0, 1])          # sin 0, cos 0
    np.testing.assert_allclose(pe[1, :2], [math.sin(1), math.cos(1)], rtol=1e-15)
    # feature pair i = 1 at position 10: angle 10 / 10000^(2/8) = 10 / 10 = 1
    np.testing.assert_allclose(pe[10, 2:4], [math.sin(1.0), math.cos(1.0)], rtol=1e-14)
    # pair i = 3 at position 49: angle 49 / 10000^(6/8) = 49 / 1000
    np.testing.assert_allclose(pe[49, 6:8], [math.sin(0.049), math.cos(0.049)], rtol=1e-14)
    assert np.all(np.abs(pe) <= 1)


def test_sinusoidal_odd_width(device):
    pe = host(sinusoidal_encoding(6, 5, dtype=np.float64, device=device))
    assert pe.shape == (6, 5)
    t = np.arange(6)
    np.testing.assert_allclose(pe[:, 4], np.sin(t / 10000 ** (4 / 5)), rtol=1e-14)   # a lone sin
    np.testing.assert_allclose(pe[:, 3], np.cos(t / 10000 ** (2 / 5)), rtol=1e-14)
    assert sinusoidal_encoding(3, 1).shape == (3, 1)


def test_sinusoidal_module_adds_with_offset(device):
    layer = SinusoidalPositionalEncoding(16, 6).to(device)
    x = dev(np.ones((2, 3, 6), np.float32), device)
    y = layer(x, offset=4)
    assert y.dtype == np.float32
    np.testing.assert_allclose(host(y), np.broadcast_to(1 + host(sinusoidal_encoding(16, 6))[4:7], (2, 3, 6)), rtol=1e-6)
    dy = dev(np.full((2, 3, 6), 2.0, np.float32), device)
    np.testing.assert_array_equal(host(layer.backward(dy)), host(dy))
    assert layer.num_parameters() == 0
    layer64 = SinusoidalPositionalEncoding(4, 6).to(device, "float64")
    assert layer64(dev(np.zeros((1, 4, 6)), device)).dtype == np.float64


def _sinusoid_reference(T, C):
    """The table straight from the definition, in float64: PE[t, 2i] = sin(t / 10000^(2i/C)), ..."""
    t = np.arange(T, dtype=np.float64)[:, None]
    i = np.arange(0, C, 2, dtype=np.float64)                     # 2i
    angle = t / 10000.0 ** (i / C)
    pe = np.empty((T, C))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : C // 2])
    return pe


def test_sinusoidal_float64_models_get_the_exact_table(device):
    """.to(dtype=float64) rebuilds the table in float64 instead of casting the float32 one (whose
    rounding error, up to 3e-8, a float64 model would otherwise keep); float32 stays correctly rounded."""
    T, C = 128, 48
    ref = _sinusoid_reference(T, C)
    layer = SinusoidalPositionalEncoding(T, C)
    assert layer.pe.dtype == np.float32
    assert np.abs(host(layer.pe) - ref).max() <= 2.0 ** -24       # half a float32 ulp of 1
    layer.to(device, "float64")
    assert layer.pe.dtype == np.float64 and backend.device_of(layer.pe) == device
    assert np.abs(host(layer.pe) - ref).max() <= 1e-12
    layer.to(dtype="float32").to(dtype="float64")                # a round trip through float32
    assert np.abs(host(layer.pe) - ref).max() <= 1e-12
    # the models that use it, cast as a whole
    gpt = GPT(GPTConfig(vocab_size=11, block_size=T, n_layer=1, n_head=2, d_model=C,
                        positional="sinusoidal")).to(device, "float64")
    s2s = Seq2SeqTransformer(Seq2SeqConfig(max_src_len=T, max_tgt_len=16, n_layer=1, n_dec_layer=1,
                                           n_head=2, d_model=C)).to(device, "float64")
    for table, rows in ((gpt.wpe.pe, T), (s2s.src_pos.pe, T), (s2s.tgt_pos.pe, 16)):
        assert table.dtype == np.float64
        assert np.abs(host(table) - ref[:rows]).max() <= 1e-12


def test_sinusoidal_errors(device):
    layer = SinusoidalPositionalEncoding(4, 6).to(device)
    with pytest.raises(ValueError, match="exceed max_len=4"):
        layer(dev(np.zeros((1, 5, 6), np.float32), device))
    with pytest.raises(ValueError, match="exceed max_len=4"):
        layer(dev(np.zeros((1, 2, 6), np.float32), device), offset=3)
    with pytest.raises(ValueError, match="last dimension 6"):
        layer(dev(np.zeros((1, 2, 5), np.float32), device))
    with pytest.raises(TypeError, match="dtype float32"):
        layer(dev(np.zeros((1, 2, 6)), device))


# -- learned ------------------------------------------------------------------------------------
@pytest.mark.parametrize("T,offset", [(1, 0), (1, 7), (3, 2), (8, 0)])
def test_learned_offset_and_grad(device, T, offset):
    rng = np.random.default_rng(0)
    layer = LearnedPositionalEmbedding(8, 4, rng=rng).to(device)
    x = rng.standard_normal((2, T, 4)).astype(np.float32)
    y = layer(dev(x, device), offset=offset)
    W = host(layer.weight.data)
    np.testing.assert_allclose(host(y), x + W[offset:offset + T], rtol=1e-6)
    dy = rng.standard_normal((2, T, 4)).astype(np.float32)
    dx = layer.backward(dev(dy, device))
    np.testing.assert_array_equal(host(dx), dy)
    ref = np.zeros((8, 4), np.float32)
    ref[offset:offset + T] = dy.sum(0)
    np.testing.assert_allclose(host(layer.weight.grad), ref, rtol=1e-6)


def test_learned_errors(device):
    layer = LearnedPositionalEmbedding(4, 3).to(device)
    with pytest.raises(ValueError, match=r"positions 2\.\.4 .* exceed max_len=4"):
        layer(dev(np.zeros((1, 3, 3), np.float32), device), offset=2)
    with pytest.raises(ValueError, match="offset"):
        layer(dev(np.zeros((1, 1, 3), np.float32), device), offset=-1)


# -- RoPE ---------------------------------------------------------------------------------------
def test_rope_rotation_properties(device):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 8))
    y, cache = rope_forward(dev(x, device))
    yh = host(y)
    np.testing.assert_allclose(yh[:, :, 0], x[:, :, 0], rtol=1e-15)                # position 0: identity
    np.testing.assert_allclose(np.linalg.norm(yh, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    # pair (0, 4) at position 1 turns by 1 radian
    c, s = math.cos(1), math.sin(1)
    np.testing.assert_allclose(yh[..., 1, 0], x[..., 1, 0] * c - x[..., 1, 4] * s, rtol=1e-12)
    np.testing.assert_allclose(yh[..., 1, 4], x[..., 1, 4] * c + x[..., 1, 0] * s, rtol=1e-12)
    # backward is the inverse rotation
    np.testing.assert_allclose(host(rope_backward(y, cache)), x, rtol=1e-12, atol=1e-12)


def test_rope_scores_depend_on_relative_position(device):
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((1, 1, 1, 6)), rng.standard_normal((1, 1, 1, 6))
    def score(s, t):
        qs = host(rope_forward(dev(q, device), offset=s)[0])
        kt = host(rope_forward(dev(k, device), offset=t)[0])
        return float((qs * kt).sum())
    np.testing.assert_allclose(score(3, 1), score(12, 10), rtol=1e-12)
    np.testing.assert_allclose(score(0, 0), float((q * k).sum()), rtol=1e-12)


def test_rope_offset_matches_slice(device):
    x = np.random.default_rng(3).standard_normal((1, 2, 9, 4)).astype(np.float32)
    full = host(rope_forward(dev(x, device))[0])
    tail = rope_forward(dev(x[:, :, 6:7], device), offset=6)[0]                   # T = 1, a KV-cache step
    assert tail.dtype == np.float32
    np.testing.assert_allclose(host(tail), full[:, :, 6:7], rtol=1e-6, atol=1e-6)


def test_rope_errors(device):
    with pytest.raises(ValueError, match="D even"):
        rope_forward(dev(np.zeros((1, 1, 2, 5)), device))
    with pytest.raises(ValueError, match=r"\(B, H, T, D\)"):
        rope_forward(dev(np.zeros((2, 4)), device))
