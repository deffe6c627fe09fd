r"""RNN, LSTM and GRU layers: Modules that own the weights and call the BPTT pairs of
``functional/recurrent.py``.

Each reads x (B, T, C_in) and returns every state (B, T, C) plus the final state, which the next
chunk of a long sequence (or the next generated token) starts from. Weights are drawn uniformly
from $[-1/\sqrt{C}, 1/\sqrt{C}]$ (the usual choice for recurrent layers); biases are zero, except
the LSTM's **forget-gate bias, which starts at 1** (Gers, Schmidhuber and Cummins 2000;
Jozefowicz et al. 2015): $f = \sigma(1) \approx 0.73$ at initialisation, so the cell keeps most
of its content and gradients through $c$ do not vanish before training has begun.

Gate order of the LSTM's fused weights $W_x \in \mathbb{R}^{C_{in} \times 4C}$,
$W_h \in \mathbb{R}^{C \times 4C}$, $b \in \mathbb{R}^{4C}$: **i, f, g, o** (input, forget,
candidate, output), as in PyTorch's ``nn.LSTM``; the GRU's: **r, z, n**, as in ``nn.GRU``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_module, float64_inputs, register
from .checks import check_array
from .functional.recurrent import (gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward,
                                  rnn_forward)
from .module import Module, Parameter


class LSTMState(NamedTuple):
    h: Any      # (B, C) hidden state (the output)
    c: Any      # (B, C) cell state (the carry)


def _uniform(rng, shape, fan: int):
    bound = fan ** -0.5
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _check_state(state, name: str, B: int, C: int, like) -> None:
    if state is None:
        return
    check_array(state, name, ndim=2, last_dim=C, dtype=like.dtype, device=backend.device_of(like))
    if state.shape[0] != B:
        raise ValueError(f"{name}: expected shape (B, C) = ({B}, {C}), got {tuple(state.shape)}")


class _Recurrent(Module):
    """What RNN and LSTM share: the weights' shapes, the input check, the zero initial state."""

    n_gates = 1

    def __init__(self, in_features: int, hidden_size: int, rng: np.random.Generator | None = None):
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        rng = rng if rng is not None else backend.host_rng(0)
        C, G = hidden_size, self.n_gates * hidden_size
        self.in_features, self.hidden_size = in_features, hidden_size
        self.w_x = Parameter(_uniform(rng, (in_features, G), C))      # (C_in, G) input projection
        self.w_h = Parameter(_uniform(rng, (C, G), C))                # (C, G) recurrent matrix
        self.bias = Parameter(np.zeros(G, np.float32))                # (G,)
        self.cache = None

    def _check_input(self, x) -> None:
        check_array(x, f"{type(self).__name__} input", ndim=3, last_dim=self.in_features,
                    dtype=self.w_x.dtype, device=self.w_x.device)

    def _zeros(self, x):
        xp = backend.get_array_module(x)
        return xp.zeros((x.shape[0], self.hidden_size), dtype=x.dtype)   # (B, C)

    def _saved(self):
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no forward pass was cached (forward ran "
                               "inside no_grad(), or backward was called twice)")
        cache, self.cache = self.cache, None
        return cache

    def _accumulate(self, dw_x, dw_h, db) -> None:
        self.w_x.grad += dw_x
        self.w_h.grad += dw_h
        self.bias.grad += db

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.hidden_size}"


class RNN(_Recurrent):
    """Elman RNN, h_t = tanh(x_t W_x + h_{t-1} W_h + b).

    forward(x, h0=None) -> (hs (B,T,C), h_T (B,C)); backward(dhs, dh_last=None) -> (dx, dh0).
    """

    def forward(self, x, h0=None):
        self._check_input(x)
        _check_state(h0, "RNN h0", x.shape[0], self.hidden_size, x)
        h0 = self._zeros(x) if h0 is None else h0
        hs, cache = rnn_forward(x, h0, self.w_x.data, self.w_h.data, self.bias.data)
        self.cache = cache if self.keep_cache else None
        return hs, hs[:, -1]

    def backward(self, dhs, dh_last=None):
        cache = self._saved()
        if dh_last is not None:
            dhs = dhs.copy()                                          # backward never writes into dout
            dhs[:, -1] += dh_last                                     # h_T is also the last output
        dx, dh0, dw_x, dw_h, db = rnn_backward(dhs, cache)
        self._accumulate(dw_x, dw_h, db)
        return dx, dh0


# --8<-- [start:lstm_module]
class LSTM(_Recurrent):
    """LSTM layer, gate order i, f, g, o; the forget-gate bias starts at `forget_bias` (1).

    forward(x, state=None) -> (hs (B,T,C), LSTMState(h_T, c_T));
    backward(dhs, dstate=None) -> (dx, LSTMState(dh0, dc0)), dstate the gradient of (h_T, c_T).
    """

    n_gates = 4

    def __init__(self, in_features: int, hidden_size: int, forget_bias: float = 1.0,
                 rng: np.random.Generator | None = None):
        super().__init__(in_features, hidden_size, rng)
        C = hidden_size
        self.forget_bias = forget_bias
        self.bias.data[C:2 * C] = forget_bias                         # the f block of i | f | g | o

    def forward(self, x, state: LSTMState | None = None):
        self._check_input(x)
        B, C = x.shape[0], self.hidden_size
        h0, c0 = (None, None) if state is None else state
        _check_state(h0, "LSTM initial h", B, C, x)
        _check_state(c0, "LSTM initial c", B, C, x)
        h0 = self._zeros(x) if h0 is None else h0
        c0 = self._zeros(x) if c0 is None else c0
        hs, cs, cache = lstm_forward(x, h0, c0, self.w_x.data, self.w_h.data, self.bias.data)
        self.cache = cache if self.keep_cache else None
        return hs, LSTMState(hs[:, -1], cs[:, -1])

    def backward(self, dhs, dstate: LSTMState | None = None):
        cache = self._saved()
        dh_last, dc_last = (None, None) if dstate is None else dstate
        if dh_last is not None:
            dhs = dhs.copy()                                          # backward never writes into dout
            dhs[:, -1] += dh_last
        dx, dh0, dc0, dw_x, dw_h, db = lstm_backward(dhs, cache, dc_last)
        self._accumulate(dw_x, dw_h, db)
        return dx, LSTMState(dh0, dc0)
# --8<-- [end:lstm_module]

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.hidden_size}, gates=ifgo, forget_bias={self.forget_bias}"


class GRU(_Recurrent):
    """GRU layer (Cho et al. 2014), gate order r, z, n, the reset gate applied after the recurrent
    product as in PyTorch; bias (3C) on the input side and bias_hn (C) inside the reset gate.

    forward(x, h0=None) -> (hs (B,T,C), h_T (B,C)); backward(dhs, dh_last=None) -> (dx, dh0).
    """

    n_gates = 3

    def __init__(self, in_features: int, hidden_size: int, rng: np.random.Generator | None = None):
        super().__init__(in_features, hidden_size, rng)
        self.bias_hn = Parameter(np.zeros(hidden_size, np.float32))  # (C,)

    def forward(self, x, h0=None):
        self._check_input(x)
        _check_state(h0, "GRU h0", x.shape[0], self.hidden_size, x)
        h0 = self._zeros(x) if h0 is None else h0
        hs, cache = gru_forward(x, h0, self.w_x.data, self.w_h.data, self.bias.data, self.bias_hn.data)
        self.cache = cache if self.keep_cache else None
        return hs, hs[:, -1]

    def backward(self, dhs, dh_last=None):
        cache = self._saved()
        if dh_last is not None:
            dhs = dhs.copy()                                          # backward never writes into dout
            dhs[:, -1] += dh_last
        dx, dh0, dw_x, dw_h, db, db_hn = gru_backward(dhs, cache)
        self._accumulate(dw_x, dw_h, db)
        self.bias_hn.grad += db_hn
        return dx, dh0


# -- gradient checks (float64, T >= 3 so that the carry through h and c is exercised) ------------
def _flat_outputs(hs, last):
    """One array from every output state and the final state(s): (B, T*C + k*C)."""
    xp = backend.get_array_module(hs)
    B = hs.shape[0]
    return xp.concatenate([hs.reshape(B, -1)] + [s for s in last], axis=1)   # (B,T,C) -> (B,T*C+kC)


def gradcheck_lstm_layer(device: str, B: int, T: int, C_in: int, C: int, seed: int, name: str):
    """The LSTM against central differences for x, h0, c0 and the weights; the output includes
    c_T, so the gradient that enters through the final cell state is checked too."""
    layer = LSTM(C_in, C, rng=backend.host_rng(seed)).to(device, "float64")
    x, h0, c0 = float64_inputs(device, seed + 1, (B, T, C_in), (B, C), (B, C))

    def run(m, x_, h_, c_):
        hs, (hT, cT) = m.forward(x_, LSTMState(h_, c_))
        return _flat_outputs(hs, [hT, cT])           # h_T twice: once as output, once as state

    def backward(m, d):
        dhs = d[:, :T * C].reshape(B, T, C)                                      # (B,T*C) -> (B,T,C)
        dx, (dh0, dc0) = m.backward(dhs, LSTMState(d[:, T * C:(T + 1) * C], d[:, (T + 1) * C:]))
        return dx, dh0, dc0

    return check_module(name, layer, [x, h0, c0], run=run, backward=backward)


@register("nn.LSTM")
def _gradcheck_lstm(device: str):
    return [gradcheck_lstm_layer(device, 2, 4, 3, 5, 20, "nn.LSTM[T=4, C_in=3, C=5]"),
            gradcheck_lstm_layer(device, 1, 3, 2, 1, 22, "nn.LSTM[T=3, B=1, C=1]")]


def _gradcheck_single_state(device: str, cls, name: str, seed: int):
    B, T, C = 2, 4, 5
    layer = cls(3, C, rng=backend.host_rng(seed)).to(device, "float64")
    x, h0 = float64_inputs(device, seed + 1, (B, T, 3), (B, C))

    def run(m, x_, h_):
        hs, hT = m.forward(x_, h_)
        return _flat_outputs(hs, [hT])

    def backward(m, d):
        return m.backward(d[:, :T * C].reshape(B, T, C), d[:, T * C:])        # (B,T*C) -> (B,T,C)

    return check_module(name, layer, [x, h0], run=run, backward=backward)


@register("nn.RNN")
def _gradcheck_rnn(device: str):
    return _gradcheck_single_state(device, RNN, "nn.RNN[T=4]", 24)


@register("nn.GRU")
def _gradcheck_gru(device: str):
    return _gradcheck_single_state(device, GRU, "nn.GRU[T=4]", 26)
