"""Optimisers against hand-computed updates; schedules; clipping."""
import math

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.nn.module import Parameter
from minitransformer.optim import SGD, Adam, AdamW, clip_grad_norm, noam, warmup_cosine


def _param(device, values, grad):
    p = Parameter(backend.to_device(np.array(values, dtype=np.float64), device))
    p.grad = backend.to_device(np.array(grad, dtype=np.float64), device)
    return p


def test_sgd_momentum_matches_formula(device):
    p = _param(device, [1.0, -2.0], [0.5, 0.25])
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()                                       # v = g; theta -= lr v
    np.testing.assert_allclose(backend.to_numpy(p.data), [0.95, -2.025])
    opt.step()                                       # v = 0.9 g + g = 1.9 g
    np.testing.assert_allclose(backend.to_numpy(p.data), [0.95 - 0.1 * 0.95, -2.025 - 0.1 * 0.475])


def test_adam_first_step_is_lr_times_sign(device):
    # with bias correction, the first Adam step is lr * g / (|g| + eps) = lr * sign(g)
    p = _param(device, [1.0, 1.0, 1.0], [3.0, -0.01, 1e-3])
    Adam([p], lr=0.01, eps=1e-12).step()
    np.testing.assert_allclose(backend.to_numpy(p.data), [0.99, 1.01, 0.99], rtol=1e-9)


def test_adamw_matches_reference_over_steps(device):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    p = Parameter(backend.to_device(w0.copy(), device))
    opt = AdamW([p], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    m = v = np.zeros_like(w0)
    w = w0.copy()
    for t, g in enumerate(grads, start=1):
        p.grad = backend.to_device(g, device)
        opt.step()
        w = w * (1 - 0.01 * 0.1)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        w = w - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-8)
    np.testing.assert_allclose(backend.to_numpy(p.data), w, rtol=1e-6, atol=1e-9)


def test_adamw_does_not_decay_biases(device):
    bias = _param(device, [1.0, 1.0], [0.0, 0.0])
    AdamW([bias], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(backend.to_numpy(bias.data), [1.0, 1.0])


def test_frozen_parameters_are_skipped(device):
    p = _param(device, [1.0], [1.0])
    p.requires_grad = False
    q = _param(device, [1.0], [1.0])
    opt = SGD([p, q], lr=0.5)
    opt.step()
    assert float(p.data[0]) == 1.0 and float(q.data[0]) == 0.5


def test_clip_grad_norm(device):
    a, b = _param(device, [0.0, 0.0], [3.0, 0.0]), _param(device, [0.0], [4.0])
    norm = clip_grad_norm([a, b], 1.0)
    assert norm == pytest.approx(5.0)
    total = math.sqrt(float((a.grad ** 2).sum() + (b.grad ** 2).sum()))
    assert total == pytest.approx(1.0, rel=1e-5)


def test_schedules():
    assert warmup_cosine(0, 1.0, 0.1, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 1.0, 0.1, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 1.0, 0.1, 10, 100) == pytest.approx(0.55)
    assert warmup_cosine(100, 1.0, 0.1, 10, 100) == pytest.approx(0.1)
    peak = max(range(1, 20000), key=lambda s: noam(s, 512, 4000))
    assert abs(peak - 3999) <= 1                       # peaks at the end of warm-up
    assert noam(3999, 512, 4000) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)


def test_bad_optimizer_input():
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="positive"):
        SGD([Parameter(np.zeros(2))], lr=-1)
