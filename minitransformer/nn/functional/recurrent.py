r"""Recurrent networks over a whole sequence, with backpropagation through time (BPTT).

Input $x \in \mathbb{R}^{B \times T \times C_{in}}$, state width $C$. The input projections of all
time steps are one matrix product before the loop; only the recurrence $h_{t-1} \mapsto h_t$ is
sequential.

**Elman RNN** (tanh):
$h_t = \tanh(a_t)$, $a_t = x_t W_x + h_{t-1} W_h + b$.
BPTT: $dh_t = \partial\ell/\partial h_t + da_{t+1} W_h^\top$, $da_t = dh_t \circ (1 - h_t^2)$;
$dW_x = \sum_t x_t^\top da_t$, $dW_h = \sum_t h_{t-1}^\top da_t$, $db = \sum_t da_t$,
$dx_t = da_t W_x^\top$, $dh_0 = da_1 W_h^\top$.

**LSTM**, gate order **i, f, g, o** along the last axis of $a_t \in \mathbb{R}^{B \times 4C}$ (the
order of PyTorch and cuDNN):
$i = \sigma(a^i)$, $f = \sigma(a^f)$, $g = \tanh(a^g)$, $o = \sigma(a^o)$,
$c_t = f \circ c_{t-1} + i \circ g$, $h_t = o \circ \tanh(c_t)$.
BPTT, with $dc_t$ the gradient reaching $c_t$ from step $t+1$ (the carry) and from the loss:
$do = dh_t \circ \tanh c_t$, $dc_t \mathrel{+}= dh_t \circ o \circ (1-\tanh^2 c_t)$,
$di = dc_t \circ g$, $dg = dc_t \circ i$, $df = dc_t \circ c_{t-1}$, $dc_{t-1} = dc_t \circ f$,
then through the nonlinearities $\sigma' = \sigma(1-\sigma)$, $\tanh' = 1-\tanh^2$.

**GRU**, gate order **r, z, n** (PyTorch's), with the reset gate applied after the recurrent
product: $u_t = h_{t-1} W_h$ (its n block plus $b_{hn}$), $r = \sigma(\cdot)$, $z = \sigma(\cdot)$,
$n = \tanh(x_t W_x^n + b^n + r \circ u^n)$, $h_t = (1 - z) \circ n + z \circ h_{t-1}$.
BPTT: $dn = dh_t \circ (1 - z)$, $dz = dh_t \circ (h_{t-1} - n)$, $da^n = dn \circ (1 - n^2)$,
$dr = da^n \circ u^n$, $du^n = da^n \circ r$, and $dh_{t-1} = dh_t \circ z + du_t W_h^\top$: the
carry is $dh_t \circ z$.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ...backend import get_array_module


def sigmoid(x, xp):
    """The logistic function, in the form that never overflows: exp of a non-positive number only."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


class RNNCache(NamedTuple):
    x: Any          # (B,T,C_in) the inputs
    h0: Any         # (B,C) the initial state
    hs: Any         # (B,T,C) the states h_1..h_T (also the output: tanh' = 1 - h^2 reuses it)
    w_x: Any        # (C_in,C)
    w_h: Any        # (C,C)


class LSTMCache(NamedTuple):
    x: Any          # (B,T,C_in)
    h0: Any         # (B,C)
    c0: Any         # (B,C)
    hs: Any         # (B,T,C) h_1..h_T
    cs: Any         # (B,T,C) c_1..c_T
    gates: Any      # (B,T,4C) the activated gates i, f, g, o (their derivatives need only these)
    tanh_c: Any     # (B,T,C) tanh(c_t), kept: recomputing it would cost one more tanh per step
    w_x: Any        # (C_in,4C)
    w_h: Any        # (C,4C)


class GRUCache(NamedTuple):
    x: Any          # (B,T,C_in)
    h0: Any         # (B,C)
    hs: Any         # (B,T,C) h_1..h_T
    gates: Any      # (B,T,3C) the activated gates r, z, n
    u_n: Any        # (B,T,C) the n block of h_{t-1} W_h + b_hn, which the reset gate scaled
    w_x: Any        # (C_in,3C)
    w_h: Any        # (C,3C)


def _previous_states(s0, ss, xp):
    """(s_0, ..., s_{T-1}) from s_0 (B,C) and (s_1..s_T) (B,T,C)."""
    return xp.concatenate([s0[:, None], ss[:, :-1]], axis=1)       # (B,1,C) + (B,T-1,C) -> (B,T,C)


def _weight_gradients(x, h_prev, da):
    """dW_x = sum_t x_t^T da_t, dW_h = sum_t h_{t-1}^T da_t, db = sum_t da_t: three products over
    all B*T rows at once, after the loop."""
    G = da.shape[-1]
    da2 = da.reshape(-1, G)                                         # (B,T,G) -> (N,G)
    dw_x = x.reshape(-1, x.shape[-1]).T @ da2                       # (C_in,N) @ (N,G) -> (C_in,G)
    dw_h = h_prev.reshape(-1, h_prev.shape[-1]).T @ da2             # (C,N) @ (N,G) -> (C,G)
    db = da2.sum(axis=0)                                            # (N,G) -> (G,)
    return dw_x, dw_h, db


# --8<-- [start:rnn]
def rnn_forward(x, h0, w_x, w_h, b):
    """h_t = tanh(x_t W_x + h_{t-1} W_h + b) for t = 1..T; x (B,T,C_in), h0 (B,C) -> hs (B,T,C)."""
    xp = get_array_module(x)
    B, T, _ = x.shape
    xw = x @ w_x + b                                                # (B,T,C_in) @ (C_in,C) -> (B,T,C), all steps at once
    hs = xp.empty((B, T, w_h.shape[0]), dtype=x.dtype)
    h = h0
    for t in range(T):                                              # the sequential part
        h = xp.tanh(xw[:, t] + h @ w_h)                             # (B,C) @ (C,C) -> (B,C)
        hs[:, t] = h
    return hs, RNNCache(x, h0, hs, w_x, w_h)


def rnn_backward(dhs, cache: RNNCache):
    """Returns (dx, dh0, dw_x, dw_h, db). dhs (B,T,C) is the gradient of every output state; the
    gradient of the final state h_T belongs in dhs[:, -1]."""
    xp = get_array_module(dhs)
    x, h0, hs, w_x, w_h = cache
    T = x.shape[1]
    da = xp.empty_like(hs)                                          # (B,T,C) gradient of the pre-activations
    dh_next = xp.zeros_like(h0)                                     # nothing flows back into h_T from step T+1
    for t in reversed(range(T)):
        # fwd: h_t = tanh(a_t), and h_t feeds the loss and a_{t+1}  =>  dh_t = dhs_t + da_{t+1} W_h^T
        dh = dhs[:, t] + dh_next
        da[:, t] = dh * (1 - hs[:, t] ** 2)                         # tanh' = 1 - h^2
        # fwd: a_t = x_t W_x + h_{t-1} W_h + b  =>  dh_{t-1} = da_t W_h^T
        dh_next = da[:, t] @ w_h.T                                  # (B,C) @ (C,C) -> (B,C)
    dw_x, dw_h, db = _weight_gradients(x, _previous_states(h0, hs, xp), da)
    dx = da @ w_x.T                                                 # (B,T,C) @ (C,C_in) -> (B,T,C_in)
    return dx, dh_next, dw_x, dw_h, db
# --8<-- [end:rnn]


# --8<-- [start:lstm_forward]
def lstm_forward(x, h0, c0, w_x, w_h, b):
    """The LSTM over x (B,T,C_in) from (h0, c0) (B,C) each; gates in the order i, f, g, o.
    Returns (hs (B,T,C), cs (B,T,C), cache): h_T = hs[:, -1] and c_T = cs[:, -1]."""
    xp = get_array_module(x)
    B, T, _ = x.shape
    C = w_h.shape[0]
    xw = x @ w_x + b                                                # (B,T,C_in) @ (C_in,4C) -> (B,T,4C)
    hs = xp.empty((B, T, C), dtype=x.dtype)
    cs = xp.empty_like(hs)
    tanh_c = xp.empty_like(hs)
    gates = xp.empty((B, T, 4 * C), dtype=x.dtype)
    h, c = h0, c0
    for t in range(T):
        a = xw[:, t] + h @ w_h                                      # (B,C) @ (C,4C) -> (B,4C)
        z = gates[:, t]                                             # (B,4C) view: i | f | g | o
        z[:, :2 * C] = sigmoid(a[:, :2 * C], xp)                    # input and forget gates
        z[:, 2 * C:3 * C] = xp.tanh(a[:, 2 * C:3 * C])              # candidate g
        z[:, 3 * C:] = sigmoid(a[:, 3 * C:], xp)                    # output gate
        i, f, g, o = z[:, :C], z[:, C:2 * C], z[:, 2 * C:3 * C], z[:, 3 * C:]
        c = f * c + i * g                                           # the cell: an additive carry
        tanh_c[:, t] = xp.tanh(c)
        h = o * tanh_c[:, t]
        hs[:, t], cs[:, t] = h, c
    return hs, cs, LSTMCache(x, h0, c0, hs, cs, gates, tanh_c, w_x, w_h)
# --8<-- [end:lstm_forward]


# --8<-- [start:lstm_backward]
def lstm_backward(dhs, cache: LSTMCache, dc_last=None):
    """Returns (dx, dh0, dc0, dw_x, dw_h, db). dhs (B,T,C): gradient of every h_t (that of h_T in
    dhs[:, -1]); dc_last (B,C): gradient of the final cell state c_T (None: zero)."""
    xp = get_array_module(dhs)
    x, h0, c0, hs, cs, gates, tanh_c, w_x, w_h = cache
    T, C = x.shape[1], h0.shape[1]
    da = xp.empty_like(gates)                                       # (B,T,4C) gradient of the pre-activations
    dh_next = xp.zeros_like(h0)
    dc_next = xp.zeros_like(c0) if dc_last is None else dc_last     # the carry into c_T from "step T+1"
    for t in reversed(range(T)):
        z = gates[:, t]
        i, f, g, o = z[:, :C], z[:, C:2 * C], z[:, 2 * C:3 * C], z[:, 3 * C:]
        c_prev = cs[:, t - 1] if t > 0 else c0
        dh = dhs[:, t] + dh_next
        # fwd: h_t = o * tanh(c_t)  =>  do = dh * tanh(c_t),  dc_t += dh * o * (1 - tanh^2(c_t))
        do = dh * tanh_c[:, t]
        dc = dc_next + dh * o * (1 - tanh_c[:, t] ** 2)
        # fwd: c_t = f * c_{t-1} + i * g  =>  di = dc g,  dg = dc i,  df = dc c_{t-1},  dc_{t-1} = dc f
        dz = da[:, t]                                               # (B,4C) view, filled gate by gate
        dz[:, :C] = dc * g * i * (1 - i)                            # through i = sigmoid(a^i)
        dz[:, C:2 * C] = dc * c_prev * f * (1 - f)                  # through f = sigmoid(a^f)
        dz[:, 2 * C:3 * C] = dc * i * (1 - g ** 2)                  # through g = tanh(a^g)
        dz[:, 3 * C:] = do * o * (1 - o)                            # through o = sigmoid(a^o)
        dc_next = dc * f
        # fwd: a_t = x_t W_x + h_{t-1} W_h + b  =>  dh_{t-1} = da_t W_h^T
        dh_next = dz @ w_h.T                                        # (B,4C) @ (4C,C) -> (B,C)
    dw_x, dw_h, db = _weight_gradients(x, _previous_states(h0, hs, xp), da)
    dx = da @ w_x.T                                                 # (B,T,4C) @ (4C,C_in) -> (B,T,C_in)
    return dx, dh_next, dc_next, dw_x, dw_h, db
# --8<-- [end:lstm_backward]


# --8<-- [start:gru]
def gru_forward(x, h0, w_x, w_h, b, b_hn):
    """The GRU over x (B,T,C_in) from h0 (B,C); gates r, z, n; b (3C,) on the input side, b_hn (C,)
    inside the reset gate. Returns (hs (B,T,C), cache)."""
    xp = get_array_module(x)
    B, T, _ = x.shape
    C = w_h.shape[0]
    xw = x @ w_x + b                                                # (B,T,C_in) @ (C_in,3C) -> (B,T,3C)
    hs = xp.empty((B, T, C), dtype=x.dtype)
    gates = xp.empty((B, T, 3 * C), dtype=x.dtype)
    u_n = xp.empty_like(hs)
    h = h0
    for t in range(T):
        u = h @ w_h                                                 # (B,C) @ (C,3C) -> (B,3C)
        u_n[:, t] = u[:, 2 * C:] + b_hn
        z = gates[:, t]                                             # (B,3C) view: r | z | n
        z[:, :2 * C] = sigmoid(xw[:, t, :2 * C] + u[:, :2 * C], xp)
        r, update = z[:, :C], z[:, C:2 * C]
        z[:, 2 * C:] = xp.tanh(xw[:, t, 2 * C:] + r * u_n[:, t])
        n = z[:, 2 * C:]
        h = n + update * (h - n)                                    # (1 - z) n + z h
        hs[:, t] = h
    return hs, GRUCache(x, h0, hs, gates, u_n, w_x, w_h)


def gru_backward(dhs, cache: GRUCache):
    """Returns (dx, dh0, dw_x, dw_h, db, db_hn); the gradient of h_T belongs in dhs[:, -1]."""
    xp = get_array_module(dhs)
    x, h0, hs, gates, u_n, w_x, w_h = cache
    T, C = x.shape[1], h0.shape[1]
    da_x = xp.empty_like(gates)                                     # (B,T,3C) gradient of x W_x + b
    da_h = xp.empty_like(gates)                                     # (B,T,3C) gradient of h W_h (+ b_hn)
    dh_next = xp.zeros_like(h0)
    for t in reversed(range(T)):
        g = gates[:, t]
        r, z, n = g[:, :C], g[:, C:2 * C], g[:, 2 * C:]
        h_prev = hs[:, t - 1] if t > 0 else h0
        dh = dhs[:, t] + dh_next
        # fwd: h_t = (1 - z) n + z h_{t-1}  =>  dn = dh (1 - z),  dz = dh (h_{t-1} - n),  carry dh z
        dn_pre = dh * (1 - z) * (1 - n ** 2)                        # through n = tanh(.)
        dx_t, dh_t = da_x[:, t], da_h[:, t]                         # (B,3C) views
        dx_t[:, :C] = dn_pre * u_n[:, t] * r * (1 - r)              # fwd: n = tanh(.. + r u_n)  =>  dr = dn u_n
        dx_t[:, C:2 * C] = dh * (h_prev - n) * z * (1 - z)
        dx_t[:, 2 * C:] = dn_pre
        dh_t[:, :2 * C] = dx_t[:, :2 * C]                           # r, z: the same sum of x and h terms
        dh_t[:, 2 * C:] = dn_pre * r                                # fwd: r * u_n  =>  du_n = dn r
        # fwd: u = h_{t-1} W_h  and the carry z h_{t-1}  =>  dh_{t-1} = du W_h^T + dh z
        dh_next = dh_t @ w_h.T + dh * z                             # (B,3C) @ (3C,C) -> (B,C)
    da_x2 = da_x.reshape(-1, 3 * C)                                 # (B,T,3C) -> (N,3C)
    dw_x = x.reshape(-1, x.shape[-1]).T @ da_x2                     # (C_in,N) @ (N,3C) -> (C_in,3C)
    db = da_x2.sum(axis=0)                                          # (N,3C) -> (3C,)
    dw_h = _previous_states(h0, hs, xp).reshape(-1, C).T @ da_h.reshape(-1, 3 * C)   # (C,N) @ (N,3C)
    db_hn = da_h[..., 2 * C:].reshape(-1, C).sum(axis=0)           # (B,T,C) -> (C,)
    dx = da_x @ w_x.T                                               # (B,T,3C) @ (3C,C_in) -> (B,T,C_in)
    return dx, dh_next, dw_x, dw_h, db, db_hn
# --8<-- [end:gru]
