"""Distillation loss: limits, temperature scaling, stress inputs, bad arguments."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.compress.distill import (check_distill_args, distillation_loss_backward,
                                              distillation_loss_forward)
from minitransformer.nn.functional.cross_entropy import cross_entropy_forward


def _logits(device, seed, shape=(2, 3, 5), scale=1.0):
    return backend.to_device(np.random.default_rng(seed).standard_normal(shape) * scale, device)


def test_alpha_zero_is_cross_entropy(device):
    zs, zt = _logits(device, 0), _logits(device, 1)
    y = backend.to_device(np.array([[0, 4, 2], [1, 1, 3]]), device)
    loss, _ = distillation_loss_forward(zs, zt, y, temperature=3.0, alpha=0.0)
    ce, _ = cross_entropy_forward(zs, y, ignore_index=-1)
    assert float(loss) == pytest.approx(float(ce), rel=1e-12)


def test_identical_logits_give_zero_soft_loss_and_gradient(device):
    z = _logits(device, 2)
    y = backend.to_device(np.zeros((2, 3), dtype=np.int64), device)
    loss, cache = distillation_loss_forward(z, z.copy(), y, temperature=2.0, alpha=1.0)
    dz, dt, dy = distillation_loss_backward(1.0, cache)
    assert abs(float(loss)) < 1e-12 and float(abs(dz).max()) < 1e-12
    assert dt is None and dy is None


def test_t_squared_keeps_gradient_scale(device):
    """For large T, the soft gradient tends to (z_s - z_t) / (V N) whatever T: the T^2 factor."""
    zs, zt = _logits(device, 3, (4, 6), 0.5), _logits(device, 4, (4, 6), 0.5)
    y = backend.to_device(np.zeros(4, dtype=np.int64), device)
    grads = []
    for T in (100.0, 1000.0):
        _, cache = distillation_loss_forward(zs, zt, y, temperature=T, alpha=1.0)
        grads.append(backend.to_numpy(distillation_loss_backward(1.0, cache)[0]))
    np.testing.assert_allclose(grads[0], grads[1], rtol=0.05, atol=1e-4)
    d = backend.to_numpy(zs - zt)
    limit = (d - d.mean(axis=1, keepdims=True)) / (6 * 4)
    np.testing.assert_allclose(grads[1], limit, rtol=0.02, atol=1e-5)


def test_stress_logits_stay_finite(device):
    zs = _logits(device, 5, (3, 7), 1000.0)
    zt = _logits(device, 6, (3, 7), 1000.0)
    y = backend.to_device(np.array([0, 3, -100]), device)          # one ignored row
    loss, cache = distillation_loss_forward(zs, zt, y, temperature=1.0, alpha=0.5)
    dz, _, _ = distillation_loss_backward(1.0, cache)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(backend.to_numpy(dz)))
    assert np.all(backend.to_numpy(dz)[2] == 0)                  # ignored row: no gradient


@pytest.mark.parametrize("T,alpha", [(0.0, 0.5), (-1.0, 0.5), (2.0, 1.5), (2.0, -0.1)])
def test_bad_arguments(T, alpha):
    with pytest.raises(ValueError):
        check_distill_args(T, alpha)


def test_shape_mismatch_is_clear(device):
    zs, zt = _logits(device, 7, (2, 3, 5)), _logits(device, 8, (2, 3, 6))
    y = backend.to_device(np.zeros((2, 3), dtype=np.int64), device)
    with pytest.raises(ValueError, match="do not match"):
        distillation_loss_forward(zs, zt, y)
    with pytest.raises(ValueError, match="targets of shape"):
        distillation_loss_forward(zs, zs, y[:, :2])
