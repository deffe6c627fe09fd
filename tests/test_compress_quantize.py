"""Post-training quantization: error at most half a step, integer matmul, inference-only layer."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.compress.quantize import (QuantizedLinear, dequantize, int8_matmul, quantize_model,
                                               quantize_rows, quantize_weight)
from minitransformer.nn import Linear
from test_compress_lowrank import Toy


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_error_at_most_half_a_step(device, bits):
    w = np.random.default_rng(0).standard_normal((17, 9)).astype(np.float32) * 3
    w[:, 4] = 0.0                                    # an all-zero channel: scale clamped, no NaN
    w[:, 5] = 1e-30                                  # a nearly-zero channel
    q, s = quantize_weight(backend.to_device(w, device), bits)
    q, s = backend.to_numpy(q), backend.to_numpy(s)
    assert q.dtype == np.int8 and s.shape == (9,) and np.all(s > 0)
    assert np.abs(q).max() <= 2 ** (bits - 1) - 1
    err = np.abs(w - q.astype(np.float64) * s)
    assert np.all(err <= s / 2 * (1 + 1e-6) + 1e-38)
    assert np.all(q[:, 4] == 0)
    np.testing.assert_allclose(backend.to_numpy(dequantize(backend.to_device(q, device), backend.to_device(s, device))),
                               q * s, rtol=1e-6)


def test_rows_and_integer_matmul(device):
    rng = np.random.default_rng(1)
    x = backend.to_device(rng.standard_normal((6, 16)).astype(np.float32), device)
    w = backend.to_device(rng.standard_normal((16, 5)).astype(np.float32), device)
    qx, sx = quantize_rows(x)
    assert qx.dtype == np.int8 and sx.shape == (6, 1)
    assert np.all(np.abs(backend.to_numpy(x) - backend.to_numpy(qx) * backend.to_numpy(sx)) <= backend.to_numpy(sx) / 2 * (1 + 1e-6))
    q, s = quantize_weight(w)
    y_int = backend.to_numpy(int8_matmul(x, q, s))
    y_deq = backend.to_numpy(x @ dequantize(q, s))
    y_ref = backend.to_numpy(x @ w)
    # integer result = exact matmul of the two quantized operands (the scales applied after)
    exact = (backend.to_numpy(qx).astype(np.int64) @ backend.to_numpy(q).astype(np.int64)) * backend.to_numpy(sx) * backend.to_numpy(s)
    np.testing.assert_allclose(y_int, exact, rtol=1e-5)
    assert np.abs(y_int - y_ref).max() < 0.05 * np.abs(y_ref).max()
    assert np.abs(y_deq - y_ref).max() < 0.05 * np.abs(y_ref).max()


@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "fp16"])
def test_quantized_linear(device, mode):
    lin = Linear(12, 7, rng=backend.host_rng(2)).to(device)
    lin.bias.data += 0.3
    x = backend.to_device(np.random.default_rng(3).standard_normal((2, 1, 12)).astype(np.float32), device)
    q = QuantizedLinear(lin, mode)
    y, ref = backend.to_numpy(q(x)), backend.to_numpy(lin(x))
    assert y.shape == ref.shape == (2, 1, 7) and y.dtype == np.float32
    assert np.abs(y - ref).max() < (1e-3 if mode == "fp16" else 0.05) * np.abs(ref).max()
    with pytest.raises(RuntimeError, match="inference-only"):
        q.backward(y)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown mode"):
        QuantizedLinear(Linear(3, 2), "int3")
    with pytest.raises(ValueError, match="unknown mode"):
        quantize_model(Toy(), "bf8")
    with pytest.raises(ValueError, match="bits"):
        quantize_weight(np.ones((3, 2), np.float32), bits=9)
    with pytest.raises(TypeError, match="expected a Linear"):
        QuantizedLinear("weights")


def test_quantize_model_swaps_and_sizes_shrink():
    model = Toy()
    names = quantize_model(model, "int8")
    assert len(names) == 8 and isinstance(model.blocks[0].ffn.fc1, QuantizedLinear)
    assert isinstance(model.head, Linear)
