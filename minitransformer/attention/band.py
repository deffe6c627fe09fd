r"""Shared machinery of the exact sparse kernels: banded scores, global columns and global rows.

A sparse pattern is described per query $i$ by the keys it may see. With $p_i = i + (S - T)$ the
query's position in key coordinates (bottom-right alignment, as for the causal mask):

* a **band** lists key offsets: query $i$, column $c$ sees key $j = p_i + o_{h,c}$ (offsets may
  differ per head, e.g. per-head dilation); scores are stored as a band $(B,H,T,K)$, never $T\times S$;
* **columns** are a fixed small set of keys (global tokens, summary positions) every query may see;
* **rows** are a fixed small set of queries (global tokens) that see every key.

The band and column scores of a query share one softmax (its keys are the union, listed once);
global rows are full rows of dense attention. Forward (scale $s = 1/\sqrt{D}$):

$$ P_i = \operatorname{softmax}\big(s\, q_i \cdot k_{j}\big)_{j \in A(i)}, \qquad o_i = \sum_{j\in A(i)} P_{ij} v_j .$$

Backward (the dense formulas restricted to the pattern): $dP_{ij} = do_i \cdot v_j$,
$dS_{ij} = P_{ij}(dP_{ij} - \sum_{j'} P_{ij'} dP_{ij'})$, $dq_i = s\sum_j dS_{ij} k_j$,
$dk_j = s \sum_{i: j \in A(i)} dS_{ij} q_i$, $dv_j = \sum_{i: j\in A(i)} P_{ij}\, do_i$.
The key-side sums run over the *transposed* band: key $j$ is seen by query $i = j - (S-T) - o_{h,c}$
in column $c$, so they are again band products, with no scatter.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from ..backend import get_array_module
from ..nn.functional.softmax import softmax_forward


# --8<-- [start:masked_softmax]
def masked_softmax(s, valid):
    """softmax over the last axis restricted to `valid`; a row with no valid entry gives zeros."""
    xp = get_array_module(s)
    return softmax_forward(xp.where(valid, s, -xp.inf))[0]   # the package's one stable softmax
# --8<-- [end:masked_softmax]


class Band(NamedTuple):
    offsets: Any      # host int array (Hp, K), Hp in {1, H}: query i, column c sees key p_i + offsets[h, c]
    valid: Any        # bool (Hp|1, T, K) pattern rule on top of range/causal/padding, or None (all)


class Columns(NamedTuple):
    cols: Any         # host int array (G,): key positions every query may see (unique, sorted)
    valid: Any        # bool (1, T, G) pattern rule (e.g. "not in my own block"), or None (all)


class SparsePattern(NamedTuple):
    bands: tuple      # of Band
    columns: Any      # Columns or None
    rows: Any         # host int array (G',) of query positions that see every key, or None


# -- band views ------------------------------------------------------------------------------------
def _progression(offsets):
    """(start, step) when the offsets are one increasing arithmetic progression shared by all heads."""
    if offsets.shape[0] != 1:
        return None
    o = offsets[0]
    if o.size == 1:
        return int(o[0]), 1
    steps = np.diff(o)
    return (int(o[0]), int(steps[0])) if steps[0] > 0 and np.all(steps == steps[0]) else None


# --8<-- [start:band_rows]
def band_rows(x, offsets, n_out: int, shift: int):
    """out[..., i, c, :] = x[..., i + shift + offsets[h, c], :], zero where that row does not exist.

    x (B,H,L,D) -> (B,H,n_out,K,D). A shared arithmetic progression of offsets gives a strided
    *view* of a zero-padded copy of x (no K-fold copy); per-head offsets fall back to a gather.
    """
    xp = get_array_module(x)
    B, H, L, D = x.shape
    lo, hi = int(offsets.min()), int(offsets.max())
    pad_l = max(0, -(shift + lo))
    pad_r = max(0, n_out - 1 + shift + hi - (L - 1))
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad_l, pad_r), (0, 0)))     # (B,H,L,D) -> (B,H,pad_l+L+pad_r,D)
    prog = _progression(offsets)
    if prog is not None:
        start, step = prog
        base = xpad[:, :, shift + start + pad_l:, :]
        sB, sH, sT, sD = base.strides
        return xp.lib.stride_tricks.as_strided(                   # (B,H,n_out,K,D) view
            base, shape=(B, H, n_out, offsets.shape[1], D), strides=(sB, sH, sT, step * sT, sD))
    idx = xp.asarray(np.arange(n_out)[None, :, None] + shift + pad_l + offsets[:, None, :])  # (Hp,n_out,K)
    if offsets.shape[0] == 1:
        return xpad[:, :, idx[0]]                                 # (B,H,n_out,K,D)
    return xpad[:, xp.arange(H)[:, None, None], idx]              # (B,H,n_out,K,D)
# --8<-- [end:band_rows]


def band_keys_valid(offsets, T: int, S: int, causal: bool, key_valid, xp):
    """Range, causal and padding validity of a band: bool (B|1, Hp, T, K)."""
    j = np.arange(T)[None, :, None] + (S - T) + offsets[:, None, :]          # (Hp,T,K) key index
    ok = (j >= 0) & (j < S)
    if causal:
        ok &= offsets[:, None, :] <= 0
    ok = xp.asarray(ok)[None]                                                # (1,Hp,T,K)
    if key_valid is not None:
        kpm = xp.concatenate([key_valid, xp.zeros_like(key_valid[:, :1])], axis=1)  # (B,S+1)
        ok = ok & kpm[:, xp.asarray(np.where((j >= 0) & (j < S), j, S))]     # (B,Hp,T,K)
    return ok


def _skew(a, offsets, T: int, S: int):
    """Transpose a band: out[..., j, c'] = a[..., i, K-1-c'] with i = j - (S-T) - offsets[h, K-1-c'],
    zero where i is not a query. a (B,H,T,K) -> (B,H,S,K), columns reversed so that the matching
    query rows form an increasing progression again (see band_transpose)."""
    xp = get_array_module(a)
    B, H, _, K = a.shape
    off_r = offsets[:, ::-1]                                                 # (Hp,K)
    i = np.arange(S)[None, :, None] - (S - T) - off_r[:, None, :]           # (Hp,S,K)
    i = xp.asarray(np.where((i >= 0) & (i < T), i, T))                      # T -> the zero row
    c = xp.asarray(np.arange(K)[::-1].copy())[None, None, :]               # (1,1,K)
    apad = xp.concatenate([a, xp.zeros_like(a[:, :, :1])], axis=2)         # (B,H,T+1,K)
    if offsets.shape[0] == 1:
        return apad[:, :, i[0], c[0]]                                        # (B,H,S,K)
    return apad[:, xp.arange(H)[:, None, None], i, c]                        # (B,H,S,K)


# --8<-- [start:band_transpose]
def band_transpose(a, x, offsets, T: int, S: int):
    """out_j = sum_c a[i, c] x_i over the queries i = j - (S-T) - offsets[c] that see key j.

    a (B,H,T,K) band weights (dS or P), x (B,H,T,D) query-side rows (q or dout) -> (B,H,S,D).
    Used for dk = s * dS^T q and dv = P^T dout without scattering into keys."""
    a_t = _skew(a, offsets, T, S)                                            # (B,H,S,K)
    x_t = band_rows(x, -offsets[:, ::-1], S, -(S - T))                       # (B,H,S,K,D)
    return (a_t[..., None, :] @ x_t)[..., 0, :]                              # (B,H,S,1,K)@(B,H,S,K,D) -> (B,H,S,D)
# --8<-- [end:band_transpose]


class SparseCache(NamedTuple):
    q: Any
    k: Any
    v: Any
    pattern: Any      # SparsePattern
    probs: Any        # list of (B,H,T,K_part) probabilities, one per band then the columns
    rows_p: Any       # (B,H,G',S) probabilities of the global rows, or None
    scale: float


def _dense_rows_valid(rows, S, T, causal, key_valid, xp):
    ok = np.ones((len(rows), S), bool)
    if causal:
        ok = np.arange(S)[None, :] <= rows[:, None] + (S - T)
    ok = xp.asarray(ok)[None, None]                                          # (1,1,G',S)
    if key_valid is not None:
        ok = ok & key_valid[:, None, None, :]                                 # (B,1,G',S)
    return ok


# --8<-- [start:sparse_forward]
def sparse_forward(q, k, v, pattern: SparsePattern, causal: bool, key_valid=None):
    """Attention restricted to `pattern`: one joint softmax over band + column keys per query,
    dense rows for global queries. Returns (out (B,H,T,D), SparseCache)."""
    xp = get_array_module(q)
    B, H, T, D = q.shape
    S = k.shape[2]
    scale = D ** -0.5
    row_is_global = np.zeros(T, bool)
    if pattern.rows is not None:
        row_is_global[pattern.rows] = True
    not_global = xp.asarray(~row_is_global)[:, None]                         # (T,1): global rows go dense
    scores, valids, values = [], [], []
    for band in pattern.bands:
        kb = band_rows(k, band.offsets, T, S - T)                            # (B,H,T,K,D)
        values.append(band_rows(v, band.offsets, T, S - T))                  # (B,H,T,K,D)
        scores.append((q[..., None, :] @ kb.swapaxes(-1, -2))[..., 0, :] * scale)  # (B,H,T,K)
        ok = band_keys_valid(band.offsets, T, S, causal, key_valid, xp) & not_global
        valids.append(ok if band.valid is None else ok & band.valid)
    if pattern.columns is not None:
        cols = pattern.columns.cols
        cols_x = xp.asarray(cols)                                             # device copy for indexing
        kc, vc = k[:, :, cols_x], v[:, :, cols_x]                             # (B,H,G,D)
        scores.append(q @ kc.swapaxes(-1, -2) * scale)                        # (B,H,T,G)
        values.append(vc)
        ok = xp.asarray(cols[None, :] <= np.arange(T)[:, None] + (S - T)) if causal else \
            xp.ones((T, len(cols)), bool)
        ok = ok & not_global                                                  # (T,G)
        if key_valid is not None:
            ok = ok & key_valid[:, None, None, cols_x]                        # (B,1,T,G)
        valids.append(ok if pattern.columns.valid is None else ok & pattern.columns.valid)
    sizes = np.cumsum([s.shape[-1] for s in scores])[:-1]
    valid = xp.concatenate([xp.broadcast_to(ok, s.shape) for ok, s in zip(valids, scores)], axis=-1)
    p_all = masked_softmax(xp.concatenate(scores, axis=-1), valid)           # (B,H,T,K_total) joint
    probs = xp.split(p_all, sizes, axis=-1)
    out = xp.zeros_like(q)
    for p, val in zip(probs, values):
        out += (p[..., None, :] @ val)[..., 0, :] if val.ndim == 5 else p @ val  # (B,H,T,D)
    rows_p = None
    if pattern.rows is not None and len(pattern.rows):
        rows = xp.asarray(pattern.rows)
        s_r = q[:, :, rows] @ k.swapaxes(-1, -2) * scale                      # (B,H,G',S)
        rows_p = masked_softmax(s_r, _dense_rows_valid(pattern.rows, S, T, causal, key_valid, xp))
        out[:, :, rows] = rows_p @ v                                          # (B,H,G',S)@(B,H,S,D)
    return out, SparseCache(q, k, v, pattern, probs, rows_p, scale)
# --8<-- [end:sparse_forward]


# --8<-- [start:sparse_backward]
def sparse_backward(dout, cache: SparseCache):
    """Returns (dq, dk, dv) of sparse_forward; the key-side sums of a band use band_transpose."""
    q, k, v, pattern, probs, rows_p, scale = cache
    xp = get_array_module(dout)
    T, S = q.shape[2], k.shape[2]
    n_bands = len(pattern.bands)
    # fwd: o = sum_parts P @ V_part  =>  dP = do . v_j (per part)
    dps = []
    for b, band in enumerate(pattern.bands):
        vb = band_rows(v, band.offsets, T, S - T)                             # (B,H,T,K,D)
        dps.append((dout[..., None, :] @ vb.swapaxes(-1, -2))[..., 0, :])    # (B,H,T,K)
    if pattern.columns is not None:
        dps.append(dout @ v[:, :, xp.asarray(pattern.columns.cols)].swapaxes(-1, -2))  # (B,H,T,G)
    # fwd: P = softmax(S) jointly over all parts  =>  dS = P * (dP - sum_j P dP)
    row_dot = sum((p * dp).sum(-1, keepdims=True) for p, dp in zip(probs, dps))  # (B,H,T,1)
    dss = [p * (dp - row_dot) for p, dp in zip(probs, dps)]
    dq, dk, dv = xp.zeros_like(q), xp.zeros_like(k), xp.zeros_like(v)
    for band, p, ds in zip(pattern.bands, probs[:n_bands], dss[:n_bands]):
        kb = band_rows(k, band.offsets, T, S - T)                             # (B,H,T,K,D)
        # fwd: S_ic = s q_i . k_{p_i + o_c}  =>  dq_i = s sum_c dS_ic k_{p_i+o_c}; dk_j = s sum dS q (transposed band)
        dq += (ds[..., None, :] @ kb)[..., 0, :] * scale                      # (B,H,T,1,K)@(B,H,T,K,D)
        dk += band_transpose(ds, q, band.offsets, T, S) * scale
        # fwd: o_i = sum_c P_ic v_{p_i+o_c}  =>  dv_j = sum over the transposed band of P do
        dv += band_transpose(p, dout, band.offsets, T, S)
    if pattern.columns is not None:
        cols = xp.asarray(pattern.columns.cols)
        p, ds = probs[-1], dss[-1]
        dq += ds @ k[:, :, cols] * scale                                      # (B,H,T,G)@(B,H,G,D)
        dk[:, :, cols] += ds.swapaxes(-1, -2) @ q * scale                     # (B,H,G,T)@(B,H,T,D); cols unique
        dv[:, :, cols] += p.swapaxes(-1, -2) @ dout                           # (B,H,G,D)
    if rows_p is not None:
        rows = xp.asarray(pattern.rows)
        do_r, q_r = dout[:, :, rows], q[:, :, rows]                           # (B,H,G',D)
        dp_r = do_r @ v.swapaxes(-1, -2)                                      # (B,H,G',S)
        ds_r = rows_p * (dp_r - (rows_p * dp_r).sum(-1, keepdims=True))
        dq[:, :, rows] += ds_r @ k * scale                                    # (B,H,G',D)
        dk += ds_r.swapaxes(-1, -2) @ q_r * scale                             # (B,H,S,D)
        dv += rows_p.swapaxes(-1, -2) @ do_r                                  # (B,H,S,D)
    return dq, dk, dv
# --8<-- [end:sparse_backward]


def pattern_mask(pattern: SparsePattern, T: int, S: int, causal: bool, n_head: int = 1):
    """The dense (H,T,S) boolean mask a pattern stands for, from the same index logic (small T only:
    for tests and pictures)."""
    mask = np.zeros((n_head, T, S), bool)
    for band in pattern.bands:
        ok = np.asarray(band_keys_valid(band.offsets, T, S, causal, None, np))[0]   # (Hp,T,K)
        if band.valid is not None:
            ok = ok & np.asarray(band.valid, bool)
        ok = np.broadcast_to(ok, (n_head,) + ok.shape[1:])
        j = np.arange(T)[None, :, None] + (S - T) + np.broadcast_to(band.offsets, (n_head, band.offsets.shape[1]))[:, None, :]
        h, i, c = np.nonzero(ok)
        mask[h, i, j[h, i, c]] = True
    if pattern.columns is not None:
        cols = pattern.columns.cols
        ok = np.ones((1, T, len(cols)), bool)
        if causal:
            ok &= cols[None, None, :] <= np.arange(T)[None, :, None] + (S - T)
        if pattern.columns.valid is not None:
            ok = ok & np.asarray(pattern.columns.valid, bool)
        _, i, g = np.nonzero(ok)
        mask[:, i, cols[g]] = True
    if pattern.rows is not None:
        mask[:, pattern.rows, :] = (np.arange(S)[None, :] <= pattern.rows[:, None] + (S - T)) if causal else True
    return mask


def gradcheck_mha_with_kernel(name: str, device: str, options: dict, causal: bool, T: int = 9):
    """Float64 check of MultiHeadAttention(d_model=8, n_head=2) using kernel `name`, with padding."""
    from .. import backend
    from ..gradcheck import check_module, float64_inputs
    from .multi_head import MultiHeadAttention
    mha = MultiHeadAttention(8, 2, attention=name, attention_options=options, max_len=T,
                             rng=backend.host_rng(3)).to(device, "float64")
    (x,) = float64_inputs(device, 6, (2, T, 8))
    kpm = backend.to_device(np.arange(T)[None, :] < np.array([[T], [T - 2]]), device)
    return check_module(f"attention.MultiHeadAttention[{name}, causal={causal}]", mha, [x],
                        run=lambda m, a: m.forward(a, causal=causal, key_padding_mask=~kpm))
