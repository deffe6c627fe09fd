"""The exact kernels (memory-efficient, sliding window, dilated, Longformer, Sparse Transformer,
BigBird) equal dense attention with the equivalent explicit boolean mask, in float64.

The masks here are written independently from each paper's definition (not from the kernels' index
logic), with p = i + S - T the query's position in key coordinates.
"""
import tracemalloc

import numpy as np
import pytest

from attention_reference import causal_mask, padding_mask, reference_attention
from minitransformer import backend
from minitransformer.attention import make_kernel
from minitransformer.attention.bigbird import bigbird_block_table
from minitransformer.attention.scaled_dot_product import attention_forward

TOL = 1e-12


def definition_mask(name, opts, T, S, H, causal, kernel=None):
    """(H|1, T, S) bool: the pattern straight from its definition."""
    p = np.arange(T)[:, None] + (S - T)
    j = np.arange(S)[None, :]
    if name == "memory_efficient":
        m = np.ones((1, T, S), bool)
    elif name == "sliding_window":
        m = (np.abs(j - p) <= opts["window"])[None]
    elif name == "dilated":
        d = opts["dilation"]
        ds = [d] * H if np.isscalar(d) else d
        m = np.stack([((j - p) % dd == 0) & (np.abs(j - p) <= opts["window"] * dd) for dd in ds])
    elif name == "longformer":
        g = np.asarray(opts["global_tokens"])
        m = ((np.abs(j - p) <= opts["window"]) | np.isin(j, g) | np.isin(np.arange(T), g)[:, None])[None]
    elif name == "sparse_strided":
        length = opts["stride"]
        m = (((j >= p - length) & (j <= p)) | ((p - j) % length == 0))[None]
    elif name == "sparse_fixed":
        length, c = opts["stride"], opts["summary"]
        m = ((j // length == p // length) | (j % length >= length - c))[None]
    elif name == "bigbird":
        bs = opts["block"]
        table, valid = kernel.block_table(T)
        nb = table.shape[0]
        rnd = np.zeros((nb, nb), bool)
        for b in range(nb):
            rnd[b, table[b, 5:][valid[b, 5:]]] = True
        qb, kb = np.arange(T)[:, None] // bs, np.arange(S)[None, :] // bs
        m = ((np.abs(qb - kb) <= 1) | (kb == 0) | (kb == nb - 1) | (qb == 0) | (qb == nb - 1)
             | rnd[qb, kb])[None]
    else:
        raise KeyError(name)
    return m & causal_mask(T, S)[None] if causal else m


CASES = [
    ("memory_efficient", {"block_size": 5, "query_block_size": 4}),
    ("memory_efficient", {"block_size": 64}),
    ("sliding_window", {"window": 3}),
    ("dilated", {"window": 2, "dilation": 3}),
    ("dilated", {"window": 2, "dilation": [1, 2, 4]}),
    ("longformer", {"window": 2, "global_tokens": [0, 11, 36]}),
    ("sparse_strided", {"stride": 6}),
    ("sparse_fixed", {"stride": 6, "summary": 2}),
    ("bigbird", {"block": 4, "random_blocks": 2, "seed": 3}),
]
SHAPES = [(37, 37, 3), (37, 41, 3), (1, 6, 1), (5, 5, 1)]      # (T, S, H): odd, non-square, T = 1, H = 1


def _allowed(name, opts, T, S, H, causal):
    if name.startswith("sparse_") and not causal:
        return False                                   # Child et al.'s patterns are causal
    if name == "bigbird" and (causal or T != S):
        return False                                   # bidirectional self-attention only
    return not isinstance(opts.get("dilation"), list) or len(opts["dilation"]) == H


EQUALITY_CASES = [(name, opts, T, S, H, causal) for name, opts in CASES for T, S, H in SHAPES
                  for causal in (False, True) if _allowed(name, opts, T, S, H, causal)]


@pytest.mark.parametrize("name,opts,T,S,H,causal", EQUALITY_CASES,
                         ids=[f"{c[0]}-{i}-T{c[2]}-S{c[3]}-H{c[4]}-{'causal' if c[5] else 'bidir'}"
                              for i, c in enumerate(EQUALITY_CASES)])
def test_equals_dense_with_explicit_mask(name, opts, T, S, H, causal, device):
    D = 8
    rng = np.random.default_rng(T * 100 + S)
    q, k, v = (rng.standard_normal((2, H, n, D)) for n in (T, S, S))
    kpm = np.arange(S)[None, :] < np.array([[S], [max(S - 4, 1)]])          # second sequence padded
    kern = make_kernel(name, H, D, **opts)
    mask = padding_mask(kpm) & definition_mask(name, opts, T, S, H, causal, kern)[None]
    out_ref, grad_ref = reference_attention(q, k, v, mask)
    dout = rng.standard_normal(out_ref.shape)

    dev = [backend.to_device(a, device) for a in (q, k, v, kpm, dout)]
    out = kern.forward(*dev[:3], causal=causal, key_padding_mask=~dev[3])
    grads = kern.backward(dev[4])
    np.testing.assert_allclose(backend.to_numpy(out), out_ref, rtol=0, atol=TOL)
    for g, r in zip(grads, grad_ref(dout)):
        np.testing.assert_allclose(backend.to_numpy(g), r, rtol=0, atol=TOL)
    # and the package's dense attention with the same explicit mask agrees too
    dense, _ = attention_forward(*dev[:3], mask=backend.to_device(mask, device))
    np.testing.assert_allclose(backend.to_numpy(out), backend.to_numpy(dense), rtol=0, atol=TOL)


@pytest.mark.parametrize("name,opts", CASES[2:], ids=[c[0] for c in CASES[2:]])
@pytest.mark.parametrize("causal", [False, True])
def test_pattern_mask_from_kernel_logic_matches_definition(name, opts, causal):
    T, S, H = 23, 23, 3
    if not _allowed(name, opts, T, S, H, causal):
        pytest.skip(f"{name} is not defined with causal={causal}")
    kern = make_kernel(name, H, 8, **opts)
    got = kern.pattern_mask(T, S, causal)
    want = np.broadcast_to(definition_mask(name, opts, T, S, H, causal, kern), got.shape)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("name,opts", CASES, ids=[c[0] for c in CASES])
def test_stress_large_logits_and_fully_masked_rows(name, opts, device):
    """logits of +-1000 stay finite; a sequence whose keys are all padding gives zeros, no NaN."""
    T = S = 12
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 12, 4)) for _ in range(3))
    q = q * 1000
    kpm = np.ones((2, S), bool)
    kpm[1] = False                                                          # all keys padded
    causal = name.startswith("sparse_")
    kern = make_kernel(name, 3, 4, **opts)
    mask = padding_mask(kpm) & definition_mask(name, opts, T, S, 3, causal, kern)[None]
    out_ref, grad_ref = reference_attention(q, k, v, mask)
    dev = [backend.to_device(a, device) for a in (q, k, v, kpm)]
    out = backend.to_numpy(kern.forward(*dev[:3], causal=causal, key_padding_mask=~dev[3]))
    grads = [backend.to_numpy(g) for g in kern.backward(backend.to_device(np.ones(out.shape), device))]
    assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in grads)
    assert np.all(out[1] == 0) and all(np.all(g[1] == 0) for g in grads)
    np.testing.assert_allclose(out, out_ref, atol=1e-9)
    for g, r in zip(grads, grad_ref(np.ones(out.shape))):
        np.testing.assert_allclose(g, r, atol=1e-6 * max(1.0, np.abs(r).max()))


@pytest.mark.parametrize("name", ["dense", "memory_efficient", "sliding_window", "linear", "performer"])
def test_causal_with_fewer_keys_than_queries_is_refused_by_every_kernel(device, name):
    """The door, not the kernel, decides: a causal mask aligns the last query with the last key, so
    it needs S >= T; every kernel refuses S < T with the same message."""
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((1, 1, 9, 4)), rng.standard_normal((1, 1, 5, 4))
    kern = make_kernel(name, 1, 4)
    with pytest.raises(ValueError, match="at least as many keys as queries, got T=9 > S=5"):
        kern.forward(*(backend.to_device(a, device) for a in (q, k, k)), causal=True)


def _peak_bytes(fn):
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("name,opts,n", [("memory_efficient", {"block_size": 256}, 1024),
                                         ("sliding_window", {"window": 16}, 4096),
                                         ("longformer", {"window": 16, "global_tokens": [0]}, 4096),
                                         ("sparse_strided", {}, 4096), ("bigbird", {"block": 32}, 4096)])
def test_no_quadratic_memory(name, opts, n):
    """At N in the thousands each of these needs less extra memory than half of one N x N float64
    array (dense attention keeps at least two such arrays: P and dS)."""
    d = 8
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, n, d)) for _ in range(3))
    kern = make_kernel(name, 1, d, **opts)
    causal = name.startswith("sparse_")
    peak = _peak_bytes(lambda: kern.backward(kern.forward(q, k, v, causal=causal)))
    assert peak < n * n * 8 / 2, f"{name}: peak {peak / 2**20:.1f} MiB"


def test_bigbird_random_blocks_fixed_per_seed_outside_window_and_global():
    table, valid = bigbird_block_table(12, 3, np.random.default_rng(0))
    again, _ = bigbird_block_table(12, 3, np.random.default_rng(0))
    assert np.array_equal(table, again)
    b = np.arange(12)[:, None]
    rnd, ok = table[:, 5:], valid[:, 5:]
    assert ok[1:-1].all()                                                  # 3 random blocks per non-global row
    assert not ((np.abs(rnd - b) <= 1) | (rnd == 0) | (rnd == 11))[ok].any()
    kern = make_kernel("bigbird", 1, 4, block=2, random_blocks=3, seed=5)
    assert np.array_equal(kern.block_table(24)[0], kern.block_table(24)[0])
    redraw = make_kernel("bigbird", 1, 4, block=2, random_blocks=3, seed=5, redraw=True)
    draws = {redraw.block_table(24)[0].tobytes() for _ in range(5)}
    assert len(draws) > 1                                                  # training redraws
    assert redraw.eval().block_table(24)[0].tobytes() == redraw.block_table(24)[0].tobytes()


def test_errors_at_the_door():
    q = np.zeros((1, 2, 5, 4))
    with pytest.raises(ValueError, match="causal"):
        make_kernel("sparse_strided", 2, 4).forward(q, q, q, causal=False)
    with pytest.raises(ValueError, match="causal"):
        make_kernel("bigbird", 2, 4).forward(q, q, q, causal=True)
    with pytest.raises(ValueError, match="dilation"):
        make_kernel("dilated", 2, 4, dilation=[1, 2, 3])
    with pytest.raises(ValueError, match="k and v"):
        make_kernel("sliding_window", 2, 4).forward(q, np.zeros((1, 2, 5, 3)), q)
    with pytest.raises(ValueError, match="key_padding_mask"):
        make_kernel("memory_efficient", 2, 4).forward(q, q, q, key_padding_mask=np.ones((1, 4), bool))
    with pytest.raises(TypeError, match="floating"):
        make_kernel("longformer", 2, 4).forward(q.astype(int), q, q)
