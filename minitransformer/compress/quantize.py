r"""Post-training quantization: int8 (or fewer bits) symmetric per-channel weights, float16 weights,
and dynamic per-row activation quantization for a matmul on integers.

Symmetric per-output-channel quantization of $W \in \mathbb{R}^{C_{in} \times C_{out}}$ with
$b$ bits, $q_{max} = 2^{b-1} - 1$ (127 for int8):

$$s_c = \max\!\Big(\frac{\max_i |W_{ic}|}{q_{max}},\ s_{min}\Big), \qquad
  q_{ic} = \operatorname{clip}\big(\operatorname{round}(W_{ic} / s_c), -q_{max}, q_{max}\big),$$

so $|W_{ic} - s_c q_{ic}| \le s_c / 2$ (rounding is the only error: $|W_{ic}/s_c| \le q_{max}$, nothing
is clipped). The clamp $s_{min}$ keeps an all-zero column from dividing by zero.

Two ways to multiply: *dequantised* $y = x\,(q \odot s) + b$ (weights stored small, math in float),
and *integer* $y_{nc} = s^x_n s_c \sum_i q^x_{ni} q_{ic} + b_c$, where the activations are quantized
per row on the fly ($s^x_n = \max_i |x_{ni}| / q_{max}$), the sum runs in int32 and the two scales
are applied after. Quantized layers are for inference only: they have no backward.
"""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..nn.checks import check_array
from ..nn.linear import Linear
from ..nn.module import Module
from ..nn.lowrank import WeightView
from .surgery import DEFAULT_TARGETS, replace_linears

SCALE_MIN = 1e-12     # the clamp: a column of zeros gets this scale instead of 0
MODES = ("int8", "int8-dynamic", "fp16")


def _qmax(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer in [2, 8] (stored in int8), got {bits!r}")
    return 2 ** (bits - 1) - 1


# --8<-- [start:quantize_weight]
def quantize_weight(w, bits: int = 8):
    """Symmetric per-output-channel quantization of w (C_in, C_out): returns (q int8, scale float32
    (C_out,)) with w ~= q * scale and |w - q * scale| <= scale / 2 elementwise."""
    xp = backend.get_array_module(w)
    qmax = _qmax(bits)
    w32 = w.astype(xp.float32)
    scale = xp.maximum(xp.abs(w32).max(axis=0) / qmax, SCALE_MIN)    # (C_in, C_out) -> (C_out,)
    q = xp.clip(xp.rint(w32 / scale), -qmax, qmax).astype(xp.int8)  # (C_in, C_out) / (C_out,)
    return q, scale.astype(xp.float32)


def dequantize(q, scale, dtype=None):
    """q * scale as floats (float32 unless dtype is given)."""
    xp = backend.get_array_module(q)
    return (q.astype(xp.float32) * scale).astype(dtype or xp.float32)  # (C_in, C_out) * (C_out,)
# --8<-- [end:quantize_weight]


# --8<-- [start:int8_matmul]
def quantize_rows(x, bits: int = 8):
    """Dynamic per-row quantization of activations x (N, C): (q int8 (N, C), scale float32 (N, 1))."""
    xp = backend.get_array_module(x)
    qmax = _qmax(bits)
    x32 = x.astype(xp.float32)
    scale = xp.maximum(xp.abs(x32).max(axis=1, keepdims=True) / qmax, SCALE_MIN)  # (N, C) -> (N, 1)
    q = xp.clip(xp.rint(x32 / scale), -qmax, qmax).astype(xp.int8)              # (N, C)
    return q, scale


def int8_matmul(x, q, scale, bits: int = 8):
    """x (N, C_in) float @ dequantize(q, scale) (C_in, C_out), computed on integers: activations are
    quantized per row, products summed in int32, both scales applied to the int32 result."""
    xp = backend.get_array_module(x)
    qx, sx = quantize_rows(x, bits)                                  # (N, C_in), (N, 1)
    acc = qx.astype(xp.int32) @ q.astype(xp.int32)                   # (N, C_in) @ (C_in, C_out) -> (N, C_out)
    return (acc.astype(xp.float32) * sx * scale).astype(x.dtype)     # (N, C_out) * (N, 1) * (C_out,)
# --8<-- [end:int8_matmul]


class QuantizedLinear(Module):
    """Inference-only replacement of a Linear with compressed weights.

    mode="int8": weights int8 per channel, dequantised matmul in the input's float type;
    mode="int8-dynamic": int8 weights and per-row int8 activations, integer matmul;
    mode="fp16": weights stored as float16, cast up for the matmul.
    `bits` (2..8) quantizes to fewer levels while still storing int8 (for accuracy-vs-bits studies;
    the size accounting counts `bits` per weight, as a packed format would).
    Quantize after moving the model (``model.to(device)``): a later ``.to(dtype=...)`` casts the
    float16 weights of mode "fp16" along with every other float buffer.
    """

    _buffers = ("qweight", "scale", "bias")

    def __init__(self, linear: Linear, mode: str = "int8", bits: int = 8):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"QuantizedLinear: unknown mode {mode!r}; expected one of {MODES}")
        if not isinstance(linear, Linear):
            raise TypeError(f"QuantizedLinear: expected a Linear, got {type(linear).__name__}")
        w = linear.weight.data
        self.in_features, self.out_features = w.shape
        self.mode, self.bits = mode, (16 if mode == "fp16" else bits)
        self.out_dtype = w.dtype
        if mode == "fp16":
            xp = backend.get_array_module(w)
            self.qweight, self.scale = w.astype(xp.float16), None
        else:
            self.qweight, self.scale = quantize_weight(w, bits)
        self.bias = None if linear.bias is None else linear.bias.data.copy()

    def dense_weight(self):
        """The float weight this layer applies (dequantised)."""
        if self.mode == "fp16":
            return self.qweight.astype(self.out_dtype)
        return dequantize(self.qweight, self.scale, self.out_dtype)

    @property
    def weight(self) -> WeightView:
        """dtype/device/shape like a Linear's weight; .data dequantises on access."""
        return WeightView(self.dense_weight, self.out_dtype, backend.device_of(self.qweight),
                          (self.in_features, self.out_features))

    def forward(self, x):
        check_array(x, "QuantizedLinear input", last_dim=self.in_features,
                    device=backend.device_of(self.qweight))
        x2 = x.reshape(-1, self.in_features)                          # (..., C_in) -> (N, C_in)
        if self.mode == "int8-dynamic":
            y = int8_matmul(x2, self.qweight, self.scale, self.bits)  # (N, C_in) -> (N, C_out)
        else:
            y = x2 @ self.dense_weight().astype(x.dtype)                    # (N, C_in) @ (C_in, C_out) -> (N, C_out)
        if self.bias is not None:
            y += self.bias.astype(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)          # (N, C_out) -> (..., C_out)

    def backward(self, dy):
        raise RuntimeError("QuantizedLinear is inference-only and has no backward: quantize after "
                           "training (or fine-tune the float model, then quantize again)")

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, mode={self.mode}, bits={self.bits}"


# --8<-- [start:quantize_model]
def quantize_model(model: Module, mode: str = "int8", targets=DEFAULT_TARGETS, bits: int = 8) -> list[str]:
    """Replace the Linears named by `targets` with QuantizedLinear(mode, bits), in place; returns
    the names replaced. Embeddings and norms stay in float."""
    if mode not in MODES:
        raise ValueError(f"quantize_model: unknown mode {mode!r}; expected one of {MODES}")
    _qmax(bits)
    return replace_linears(model, targets, lambda name, lin: QuantizedLinear(lin, mode, bits))
# --8<-- [end:quantize_model]
