"""Approximate attention kernels behave as the theory says: linear, Performer, Linformer, Reformer
LSH, Nyströmformer. Exact limits equal dense attention; errors shrink the way they should; causal
variants do not leak the future; odd shapes and fully masked rows stay finite."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention import make_kernel
from minitransformer.attention.linear_attention import linear_attention_forward
from minitransformer.attention.nystromformer import iterative_pinv_forward, nystrom_forward
from minitransformer.attention.performer import draw_features, performer_forward
from minitransformer.attention.reformer_lsh import SELF_SCORE, draw_rotations, lsh_attention_forward

from attention_reference import causal_mask, reference_attention


def _randn(device, seed, *shapes, scale=1.0):
    rng = np.random.default_rng(seed)
    return [backend.to_device(rng.standard_normal(s) * scale, device) for s in shapes]


def _np(x):
    return backend.to_numpy(x)


def _exact(q, k, v, mask=True):
    return reference_attention(_np(q), _np(k), _np(v), mask)[0]


# -- linear attention --------------------------------------------------------------------------------
def test_linear_causal_matches_explicit_formula_and_chunking(device):
    q, k, v = _randn(device, 0, (2, 3, 9, 4), (2, 3, 11, 4), (2, 3, 11, 5))
    phi = lambda x: np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))  # noqa: E731
    a = (phi(_np(q)) @ phi(_np(k)).swapaxes(-1, -2)) * causal_mask(9, 11)
    ref = (a @ _np(v)) / (a.sum(-1, keepdims=True) + 1e-6)
    for chunk in (1, 4, 64):
        out, _ = linear_attention_forward(q, k, v, True, None, 1e-6, chunk)
        np.testing.assert_allclose(_np(out), ref, atol=1e-12)


def test_linear_noncausal_equals_causal_on_last_query(device):
    q, k, v = _randn(device, 1, (2, 2, 7, 4), (2, 2, 7, 4), (2, 2, 7, 4))
    full, _ = linear_attention_forward(q, k, v, False)
    causal, _ = linear_attention_forward(q, k, v, True, chunk=3)
    np.testing.assert_allclose(_np(causal)[:, :, -1], _np(full)[:, :, -1], atol=1e-12)
    assert not np.allclose(_np(causal)[:, :, 0], _np(full)[:, :, 0])


def test_linear_padding_ignores_padded_keys(device):
    q, k, v = _randn(device, 2, (2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 4))
    mask = backend.to_device(np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool), device)
    out, _ = linear_attention_forward(q, k, v, False, mask)
    v2 = v.copy()
    v2[0, :, 4:] += 100.0
    k2 = k.copy()
    k2[0, :, 4:] -= 50.0
    out2, _ = linear_attention_forward(q, k2, v2, False, mask)
    np.testing.assert_allclose(_np(out), _np(out2), atol=1e-12)


# -- Performer ---------------------------------------------------------------------------------------
def _performer_errors(device, orthogonal, ms, seeds, T=64, D=16, H=2):
    """Mean over seeds of (kernel-estimate MSE, output MSE) for each m."""
    kernel_err, out_err = [], []
    for m in ms:
        ke, oe = [], []
        for seed in range(seeds):
            q, k, v = _randn(device, seed, (1, H, T, D), (1, H, T, D), (1, H, T, D), scale=0.5)
            omega = draw_features(np.random.default_rng(1000 + seed), m, D, orthogonal)
            omega = backend.to_device(omega, device)
            qs, ks = _np(q) * D ** -0.25, _np(k) * D ** -0.25
            om = _np(omega)
            feat = lambda x: np.exp(x @ om.T - 0.5 * (x * x).sum(-1, keepdims=True)) / np.sqrt(m)  # noqa: E731
            exact_kernel = np.exp(qs @ ks.swapaxes(-1, -2))
            ke.append(((feat(qs) @ feat(ks).swapaxes(-1, -2) - exact_kernel) ** 2).mean())
            out, _ = performer_forward(q, k, v, omega)
            oe.append(((_np(out) - _exact(q, k, v)) ** 2).mean())
        kernel_err.append(np.mean(ke))
        out_err.append(np.mean(oe))
    return np.array(kernel_err), np.array(out_err)


def test_performer_error_falls_as_one_over_m(device):
    ms = [16, 32, 64, 128, 256]
    kernel_err, out_err = _performer_errors(device, orthogonal=False, ms=ms, seeds=8)
    slope_kernel = np.polyfit(np.log(ms), np.log(kernel_err), 1)[0]
    slope_out = np.polyfit(np.log(ms), np.log(out_err), 1)[0]
    # the unbiased kernel estimate has variance exactly proportional to 1/m
    assert -1.25 < slope_kernel < -0.75, slope_kernel
    # the normalised output (a ratio of two estimates) follows it up to higher-order terms
    assert -1.35 < slope_out < -0.6, slope_out
    assert np.all(np.diff(out_err) < 0)


def test_performer_orthogonal_kernel_estimate_is_unbiased():
    """Each orthogonal row must be marginally N(0, I), so phi+(x)^T phi+(y) stays an unbiased estimate
    of exp(x^T y). Over 4000 independent draws (D = 4, M = 8: two blocks) the mean estimate lies
    within 4 standard errors of the exact value. x = y along the first axis is where a QR factor
    without the sign correction fails: numpy's Q always has a negative first entry, so one row per
    block points away from x, and the mean came out 16% low, 26 standard errors (measured)."""
    D, M, draws = 4, 8, 4000
    x = np.zeros(D)
    x[0] = 0.5                                                    # x = y: exp(x.y) = e^0.25
    rng = np.random.default_rng(0)
    est = np.empty(draws)
    for i in range(draws):
        om = draw_features(rng, M, D, orthogonal=True)            # (M, D), a fresh draw each time
        f = np.exp(om @ x - 0.5 * x @ x) / np.sqrt(M)             # (M,) phi+(x)
        est[i] = f @ f                                            # phi+(x)^T phi+(y), y = x
    exact = np.exp(x @ x)
    sem = est.std(ddof=1) / np.sqrt(draws)
    assert abs(est.mean() - exact) < 4 * sem, (est.mean(), exact, (est.mean() - exact) / sem)


def test_performer_orthogonal_beats_iid(device):
    """Paired draws (the same Gaussian blocks, orthogonalised or not), averaged over 32 seeds: the
    output error of orthogonal features is about 0.8x the i.i.d. one at m <= 4D."""
    ms = [16, 32, 64]
    _, iid = _performer_errors(device, orthogonal=False, ms=ms, seeds=32, T=32, H=4)
    _, orth = _performer_errors(device, orthogonal=True, ms=ms, seeds=32, T=32, H=4)
    assert orth.sum() < 0.95 * iid.sum(), (orth, iid)


def test_performer_orthogonal_features_are_orthogonal_with_chi_norms():
    om = draw_features(np.random.default_rng(0), 8, 8, True)
    gram = om @ om.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-10)
    assert not np.allclose(np.diag(gram), np.diag(gram)[0])      # norms drawn, not all equal


def test_performer_stable_for_huge_logits(device):
    q, k, v = _randn(device, 3, (1, 2, 6, 8), (1, 2, 6, 8), (1, 2, 6, 8), scale=1000.0)
    for dtype in ("float32", "float64"):
        kern = make_kernel("performer", 2, 8, n_features=32).to(device, dtype).eval()
        out = kern.forward(q.astype(dtype), k.astype(dtype), v.astype(dtype), causal=True)
        assert np.isfinite(_np(out)).all()


def test_performer_redraw_in_training_frozen_in_eval(device):
    kern = make_kernel("performer", 1, 4, n_features=8, redraw_every=2).to(device, "float64")
    q, k, v = _randn(device, 4, (1, 1, 3, 4), (1, 1, 3, 4), (1, 1, 3, 4))
    first = _np(kern.omega).copy()
    kern.forward(q, k, v)
    kern.forward(q, k, v)
    assert np.array_equal(_np(kern.omega), first)                 # two calls: not yet redrawn
    kern.forward(q, k, v)
    assert not np.array_equal(_np(kern.omega), first)             # third call redraws
    kern.eval()
    frozen = _np(kern.omega).copy()
    outs = [_np(kern.forward(q, k, v)) for _ in range(4)]
    assert np.array_equal(_np(kern.omega), frozen) and np.array_equal(outs[0], outs[-1])


# -- Linformer ---------------------------------------------------------------------------------------
def test_linformer_identity_projection_is_exact(device):
    kern = make_kernel("linformer", 2, 4, max_len=7, k=7).to(device, "float64")
    eye = backend.to_device(np.eye(7), device)
    kern.E.data[...] = eye
    kern.F.data[...] = eye
    q, k, v = _randn(device, 5, (2, 2, 5, 4), (2, 2, 7, 4), (2, 2, 7, 4))
    np.testing.assert_allclose(_np(kern.forward(q, k, v)), _exact(q, k, v), atol=1e-12)


def test_linformer_refuses_causal_and_long_inputs(device):
    kern = make_kernel("linformer", 1, 4, max_len=6, k=3).to(device, "float64")
    q, k, v = _randn(device, 6, (1, 1, 6, 4), (1, 1, 6, 4), (1, 1, 6, 4))
    with pytest.raises(ValueError, match="causal"):
        kern.forward(q, k, v, causal=True)
    q8, k8, v8 = _randn(device, 6, (1, 1, 8, 4), (1, 1, 8, 4), (1, 1, 8, 4))
    with pytest.raises(ValueError, match="max_len"):
        kern.forward(q8, k8, v8)
    with pytest.raises(ValueError, match="max_len"):
        make_kernel("linformer", 1, 4, k=3)


def test_linformer_uses_first_columns_for_short_inputs(device):
    kern = make_kernel("linformer", 1, 4, max_len=9, k=3).to(device, "float64")
    q, k, v = _randn(device, 7, (1, 1, 4, 4), (1, 1, 5, 4), (1, 1, 5, 4))
    before = _np(kern.forward(q, k, v))
    kern.E.data[:, 5:] += 10.0                                     # unused columns change nothing
    np.testing.assert_allclose(_np(kern.forward(q, k, v)), before, atol=1e-12)


# -- Reformer LSH ------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [13, 7, 64])
@pytest.mark.parametrize("causal", [False, True])
def test_lsh_one_bucket_is_exact(device, chunk, causal):
    """n_buckets = 1: sorting keeps positions; one chunk, or two chunks that see each other."""
    q, k, v = _randn(device, 8, (2, 2, 13, 8), (2, 2, 13, 8), (2, 2, 13, 8))
    pad = np.random.default_rng(8).random((2, 13)) > 0.3
    pad[:, 0] = True
    rot = backend.to_device(draw_rotations(np.random.default_rng(0), 8, 3, 1), device)
    out, _ = lsh_attention_forward(q, k, v, rot, 1, chunk, causal, backend.to_device(pad, device))
    mask = pad[:, None, None, :] & (causal_mask(13, 13) if causal else True)
    np.testing.assert_allclose(_np(out), _exact(q, k, v, mask), atol=1e-12)


def test_lsh_shared_qk_matches_dense_with_self_score(device):
    (q, v) = _randn(device, 9, (1, 2, 10, 8), (1, 2, 10, 8))
    rot = backend.to_device(draw_rotations(np.random.default_rng(0), 8, 2, 1), device)
    out, _ = lsh_attention_forward(q, q, v, rot, 1, 64, False, None, True)
    qn = _np(q)
    kn = qn / np.sqrt((qn * qn).sum(-1, keepdims=True) + 1e-12)
    s = qn @ kn.swapaxes(-1, -2) / np.sqrt(8)
    s[..., np.arange(10), np.arange(10)] = SELF_SCORE
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(_np(out), p @ _np(v), atol=1e-12)


def test_lsh_error_decreases_with_more_hash_rounds(device):
    T, D = 128, 16
    errors = []
    for n_hashes in (1, 2, 4, 8):
        errs = []
        for seed in range(4):
            q, v = _randn(device, seed, (1, 2, T, D), (1, 2, T, D), scale=2.0)
            rot = backend.to_device(draw_rotations(np.random.default_rng(seed), D, n_hashes, 8), device)
            out, _ = lsh_attention_forward(q, q, v, rot, 8, 16, False, None, True)
            qn = _np(q)
            kn = qn / np.sqrt((qn * qn).sum(-1, keepdims=True) + 1e-12)
            s = qn @ kn.swapaxes(-1, -2) / np.sqrt(D)
            s[..., np.arange(T), np.arange(T)] = SELF_SCORE
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            errs.append(((_np(out) - p @ _np(v)) ** 2).mean())
        errors.append(np.mean(errs))
    assert np.all(np.diff(errors) < 0), errors
    assert errors[-1] < 0.5 * errors[0], errors


def test_lsh_causal_never_reads_future_values(device):
    """Which keys share a chunk depends on every token's hash, but future *values* never leak."""
    kern = make_kernel("reformer", 2, 8, n_hashes=2, n_buckets=4, chunk_size=4).to(device, "float64").eval()
    q, k, v = _randn(device, 10, (1, 2, 12, 8), (1, 2, 12, 8), (1, 2, 12, 8))
    out = _np(kern.forward(q, k, v, causal=True))
    v2 = v.copy()
    v2[:, :, 7:] += 5.0
    np.testing.assert_allclose(_np(kern.forward(q, k, v2, causal=True))[:, :, :7], out[:, :, :7], atol=1e-12)


def test_lsh_redraw_in_training_frozen_in_eval(device):
    kern = make_kernel("reformer", 1, 8, n_hashes=1, n_buckets=4, chunk_size=4).to(device, "float64")
    q, k, v = _randn(device, 11, (1, 1, 16, 8), (1, 1, 16, 8), (1, 1, 16, 8))
    r0 = _np(kern.rotations).copy()
    kern.forward(q, k, v)
    assert not np.array_equal(_np(kern.rotations), r0)
    kern.eval()
    r1 = _np(kern.rotations).copy()
    a, b = _np(kern.forward(q, k, v)), _np(kern.forward(q, k, v))
    assert np.array_equal(a, b) and np.array_equal(_np(kern.rotations), r1)


def test_lsh_door_errors(device):
    with pytest.raises(ValueError, match="n_buckets"):
        make_kernel("reformer", 1, 4, n_buckets=3)
    kern = make_kernel("reformer", 1, 4).to(device, "float64")
    q, k, v = _randn(device, 12, (1, 1, 4, 4), (1, 1, 6, 4), (1, 1, 6, 4))
    with pytest.raises(ValueError, match="S == T"):
        kern.forward(q, k, v)


# -- Nyströmformer -----------------------------------------------------------------------------------
def test_nystrom_all_landmarks_is_exact(device):
    q, k, v = _randn(device, 13, (2, 2, 8, 4), (2, 2, 8, 4), (2, 2, 8, 4), scale=0.5)
    out, _ = nystrom_forward(q, k, v, n_landmarks=8, n_iter=30)
    np.testing.assert_allclose(_np(out), _exact(q, k, v), atol=1e-8)


def test_iterative_pinv_converges(device):
    rng = np.random.default_rng(14)
    a = rng.random((1, 1, 5, 5)) + 2 * np.eye(5)
    a = a / a.sum(-1, keepdims=True)                               # a row-stochastic matrix, like softmax
    z, _ = iterative_pinv_forward(backend.to_device(a, device), n_iter=20)
    np.testing.assert_allclose(_np(z)[0, 0], np.linalg.pinv(a[0, 0]), atol=1e-8)


def test_nystrom_error_shrinks_with_landmarks(device):
    q, k, v = _randn(device, 15, (1, 4, 32, 8), (1, 4, 32, 8), (1, 4, 32, 8), scale=0.5)
    ref = _exact(q, k, v)
    errs = [((_np(nystrom_forward(q, k, v, m)[0]) - ref) ** 2).mean() for m in (2, 8, 32)]
    assert errs[0] > errs[1] > errs[2], errs


# -- shared properties -----------------------------------------------------------------------------
CAUSAL_KERNELS = [("linear", {"chunk_size": 3}), ("performer", {"n_features": 16}),
                  ("reformer", {"n_buckets": 1, "chunk_size": 4})]


@pytest.mark.parametrize("name,opts", CAUSAL_KERNELS)
def test_causal_variants_do_not_leak_the_future(device, name, opts):
    kern = make_kernel(name, 2, 4, **opts).to(device, "float64").eval()
    q, k, v = _randn(device, 16, (2, 2, 9, 4), (2, 2, 9, 4), (2, 2, 9, 4))
    out = _np(kern.forward(q, k, v, causal=True))
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    for a in (q2, k2, v2):
        a[:, :, 5:] = backend.to_device(np.random.default_rng(17).standard_normal((2, 2, 4, 4)) * 3, device)
    out2 = _np(kern.forward(q2, k2, v2, causal=True))
    np.testing.assert_allclose(out2[:, :, :5], out[:, :, :5], atol=1e-12)
    assert not np.allclose(out2[:, :, 5:], out[:, :, 5:])


ALL_KERNELS = [("linear", {}, None), ("performer", {"n_features": 8}, None), ("linformer", {"k": 3}, 6),
               ("reformer", {"n_buckets": 2, "chunk_size": 2}, None), ("nystrom", {"n_landmarks": 2}, None)]


@pytest.mark.parametrize("name,opts,max_len", ALL_KERNELS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 1, 5, 4), (1, 3, 6, 2)])
def test_odd_shapes_and_fully_masked_rows(device, name, opts, max_len, shape):
    """T = 1, H = 1, odd lengths; a batch row whose keys are all padding gives zeros, never NaN."""
    B, H, T, D = shape
    kern = make_kernel(name, H, D, max_len=max_len, **opts).to(device, "float64").eval()
    q, k, v = _randn(device, 18, shape, shape, shape)
    pad = np.ones((B, T), bool)
    pad[0] = False
    if B == 1:                         # the whole batch padded: the door refuses (nothing to attend)
        with pytest.raises(ValueError, match="every key of every sequence as padding"):
            kern.forward(q, k, v, key_padding_mask=backend.to_device(~pad, device))
        return
    out = kern.forward(q, k, v, key_padding_mask=backend.to_device(~pad, device))   # True on padding
    assert out.shape == shape and np.isfinite(_np(out)).all()
    np.testing.assert_allclose(_np(out)[0], 0.0, atol=1e-6)
    dq, dk, dv = kern.backward(backend.to_device(np.ones(shape), device))
    assert all(np.isfinite(_np(g)).all() for g in (dq, dk, dv))


@pytest.mark.parametrize("name,opts,max_len", ALL_KERNELS)
def test_door_errors_name_expected_shapes(device, name, opts, max_len):
    kern = make_kernel(name, 2, 4, max_len=max_len, **opts).to(device, "float64")
    q, k, v = _randn(device, 19, (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"\(B, H"):
        kern.forward(q[0], k, v)
    with pytest.raises(ValueError, match="key_padding_mask"):
        kern.forward(q, k, v, key_padding_mask=backend.to_device(np.ones((1, 5), bool), device))


@pytest.mark.parametrize("name,opts,max_len", ALL_KERNELS)
def test_huge_logits_stay_finite(device, name, opts, max_len):
    """Inputs of size +-1000 (logits of order 10^6): outputs and gradients finite, causal where allowed."""
    kern = make_kernel(name, 2, 4, max_len=max_len, **opts).to(device, "float64").eval()
    q, k, v = _randn(device, 20, (1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 6, 4), scale=1000.0)
    out = kern.forward(q, k, v, causal=kern.supports_causal)
    grads = kern.backward(backend.to_device(np.ones((1, 2, 6, 4)), device))
    assert np.isfinite(_np(out)).all() and all(np.isfinite(_np(g)).all() for g in grads)
