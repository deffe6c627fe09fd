"""Cross-entropy: values against a naive log-softmax, ignore_index, label smoothing, stress, errors."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.nn import CrossEntropyLoss
from minitransformer.nn.functional.cross_entropy import cross_entropy_backward, cross_entropy_forward


def dev(a, device):
    return backend.to_device(np.asarray(a), device)


def host(a):
    return backend.to_numpy(a)


def naive(logits, targets, ignore_index=-100, eps=0.0):
    """Float64 reference: loss and dlogits from an explicit log-softmax and target distribution."""
    z = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    t = targets.reshape(-1)
    V = z.shape[1]
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    keep = t != ignore_index
    q = np.full(z.shape, eps / V)
    q[np.arange(len(t)), np.where(keep, t, 0)] += 1 - eps
    rows = -(q * logp).sum(1)
    count = max(keep.sum(), 1)
    loss = (rows * keep).sum() / count
    dz = (np.exp(logp) - q) * keep[:, None] / count
    return loss, dz.reshape(logits.shape)


@pytest.mark.parametrize("shape", [(1, 5), (6, 3), (2, 1, 4), (3, 5, 11)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_naive(device, shape, eps):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape) * 2
    targets = rng.integers(0, shape[-1], shape[:-1])
    crit = CrossEntropyLoss(label_smoothing=eps)
    loss = crit(dev(logits, device), dev(targets, device))
    assert loss.shape == () and loss.dtype == np.float64
    ref_loss, ref_dz = naive(logits, targets, eps=eps)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-12)
    dz = crit.backward()
    assert dz.shape == shape
    np.testing.assert_allclose(host(dz), ref_dz, rtol=1e-10, atol=1e-14)


def test_matches_torch(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 4, 9)).astype(np.float32)
    targets = rng.integers(0, 9, (2, 4))
    targets[0, 1] = targets[1, 3] = -100
    crit = CrossEntropyLoss(label_smoothing=0.2)
    loss = float(crit(dev(logits, device), dev(targets, device)))
    tl = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tl.reshape(-1, 9), torch.tensor(targets).reshape(-1),
                                              ignore_index=-100, label_smoothing=0.2)
    tloss.backward()
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-5)
    np.testing.assert_allclose(host(crit.backward(1.0)), tl.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_ignore_index(device):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((4, 6))
    targets = np.array([1, 0, 5, 2])
    crit = CrossEntropyLoss(ignore_index=0)                    # a pad id inside the vocabulary
    loss = float(crit(dev(logits, device), dev(targets, device)))
    keep = [0, 2, 3]
    ref, _ = naive(logits[keep], targets[keep])
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    dz = host(crit.backward())
    np.testing.assert_array_equal(dz[1], 0)                    # ignored row: no gradient
    np.testing.assert_allclose(dz.sum(1), 0, atol=1e-12)      # softmax - target sums to zero


def test_all_ignored_gives_zero(device):
    crit = CrossEntropyLoss()
    loss = crit(dev(np.ones((2, 3)), device), dev(np.array([-100, -100]), device))
    assert float(loss) == 0.0
    np.testing.assert_array_equal(host(crit.backward()), 0)


def test_label_smoothing_values(device):
    # uniform logits: every p_v = 1/V, so the loss is log V whatever eps and the target
    V = 8
    for eps in (0.0, 0.3, 1.0):
        loss = CrossEntropyLoss(label_smoothing=eps)(dev(np.zeros((3, V)), device),
                                                     dev(np.array([0, 3, 7]), device))
        np.testing.assert_allclose(float(loss), np.log(V), rtol=1e-12)
    # a confident correct prediction is penalised by smoothing
    logits = dev(np.array([[10.0, 0.0, 0.0]]), device)
    t = dev(np.array([0]), device)
    assert float(CrossEntropyLoss(label_smoothing=0.1)(logits, t)) > float(CrossEntropyLoss()(logits, t))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stress_large_logits(device, dtype):
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0], [1000.0, 1000.0, -1000.0]],
                      dtype)
    targets = np.array([1, 2, 0])
    crit = CrossEntropyLoss(label_smoothing=0.1)
    loss = crit(dev(logits, device), dev(targets, device))
    assert loss.dtype == dtype and np.isfinite(float(loss))
    ref, ref_dz = naive(logits, targets, eps=0.1)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-6)
    dz = host(crit.backward())
    assert dz.dtype == dtype and np.all(np.isfinite(dz))
    np.testing.assert_allclose(dz, ref_dz, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0])
def test_float32_loss_of_shifted_rows_is_accurate(device, eps):
    """Rows of logits near +300: every term of the loss is formed relative to the row maximum, so
    the float32 loss (about 8.5) agrees with the float64 one to a few ulps. With the smoothing term
    written as m - mean(z), the mean rounded at the size of 300 cost up to 30 ulps (measured)."""
    rng = np.random.default_rng(1)
    V = 5000
    ulps = []
    for _ in range(8):                                       # one row per call: no averaging of errors
        z = (rng.standard_normal((1, V)) + 300).astype(np.float32)
        t = rng.integers(0, V, size=1)
        ref, _ = naive(z, t, eps=eps)                        # float64, from the same float32 logits
        loss, _ = cross_entropy_forward(dev(z, device), dev(t, device), label_smoothing=eps)
        assert loss.dtype == np.float32
        ulps.append(abs(float(loss) - ref) / np.spacing(np.float32(ref)))
    assert max(ulps) <= 4, f"eps={eps}: up to {max(ulps):.1f} float32 ulps from float64, expected <= 4"


def test_backward_scales_and_is_pure(device):
    rng = np.random.default_rng(3)
    logits, t = dev(rng.standard_normal((3, 4)), device), dev(np.array([0, 1, 2]), device)
    _, cache = cross_entropy_forward(logits, t)
    probs0 = host(cache.probs).copy()
    d1, _ = cross_entropy_backward(1.0, cache)
    d3, _ = cross_entropy_backward(dev(np.array(3.0), device), cache)
    np.testing.assert_allclose(host(d3), 3 * host(d1), rtol=1e-12)
    np.testing.assert_array_equal(host(cache.probs), probs0)


def test_float32_backward_keeps_dtype(device):
    logits = dev(np.zeros((2, 3), np.float32), device)
    crit = CrossEntropyLoss()
    crit(logits, dev(np.array([0, 1]), device))
    assert crit.backward(np.float64(1.0)).dtype == np.float32


def test_errors(device):
    crit = CrossEntropyLoss()
    logits = dev(np.zeros((2, 3), np.float32), device)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        crit(logits, dev(np.array([0, 3]), device))
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        crit(logits, dev(np.array([-1, 0]), device))
    with pytest.raises(TypeError, match="integer class ids"):
        crit(logits, dev(np.array([0.0, 1.0]), device))
    with pytest.raises(ValueError, match="do not match"):
        crit(logits, dev(np.array([0, 1, 2]), device))
    with pytest.raises(ValueError, match="dimensions"):
        crit(dev(np.zeros(3, np.float32), device), dev(np.array(0), device))
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.5)
