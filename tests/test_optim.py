"""Optimisers against hand-computed updates; schedules; clipping."""
import math

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.nn.module import Parameter
from minitransformer.optim import SGD, Adam, AdamW, clip_grad_norm, decay_groups, noam, warmup_cosine


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


def test_adamw_decays_every_parameter_of_a_plain_list(device):
    # as in PyTorch: without groups, weight_decay applies to all; decay_groups keeps biases out
    bias = _param(device, [1.0, 1.0], [0.0, 0.0])
    AdamW([bias], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(backend.to_numpy(bias.data), [0.95, 0.95])


def test_decay_groups_split_matrices_from_the_rest():
    w, emb, b, gain = (Parameter(np.zeros(s)) for s in [(3, 4), (5, 3), (4,), (3,)])
    frozen = Parameter(np.zeros((2, 2)), requires_grad=False)
    named = [("fc.weight", w), ("fc.bias", b), ("wte.weight", emb), ("ln.weight", gain), ("lora.base", frozen)]
    decay, no_decay = decay_groups(named, 0.1)
    assert decay == {"params": [w, emb], "weight_decay": 0.1}
    assert no_decay == {"params": [b, gain], "weight_decay": 0.0}
    assert decay_groups([w, emb], 0.1) == [{"params": [w, emb], "weight_decay": 0.1}]   # no empty group


def test_adamw_per_group_decay_matches_hand_computation(device):
    rng = np.random.default_rng(1)
    w0, b0 = rng.standard_normal((2, 3)), rng.standard_normal(3)
    grads = [(rng.standard_normal((2, 3)), rng.standard_normal(3)) for _ in range(3)]
    w, b = Parameter(backend.to_device(w0.copy(), device)), Parameter(backend.to_device(b0.copy(), device))
    opt = AdamW(decay_groups([("w", w), ("b", b)], 0.2), lr=0.05, betas=(0.8, 0.9), eps=1e-8)
    expected, state = {"w": w0.copy(), "b": b0.copy()}, {k: (0.0, 0.0) for k in "wb"}
    for t, (gw, gb) in enumerate(grads, start=1):
        w.grad, b.grad = backend.to_device(gw, device), backend.to_device(gb, device)
        opt.step()
        for key, g, wd in (("w", gw, 0.2), ("b", gb, 0.0)):
            m, v = state[key]
            m, v = 0.8 * m + 0.2 * g, 0.9 * v + 0.1 * g * g
            state[key] = m, v
            theta = expected[key] * (1 - 0.05 * wd)             # decoupled decay, this group's rate
            expected[key] = theta - 0.05 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-8)
    np.testing.assert_allclose(backend.to_numpy(w.data), expected["w"], rtol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(b.data), expected["b"], rtol=1e-10)


def test_groups_with_their_own_lr_keep_their_ratio_to_the_base_lr(device):
    p, q = _param(device, [1.0], [1.0]), _param(device, [1.0], [1.0])
    opt = SGD([{"params": [p]}, {"params": [q], "lr": 0.3, "weight_decay": 0.5}], lr=0.1)
    assert [g.lr_scale for g in opt.param_groups] == pytest.approx([1.0, 3.0])
    opt.step()                                   # p: 1 - 0.1 * 1;  q: 1 - 0.3 * (1 + 0.5 * 1)
    np.testing.assert_allclose(backend.to_numpy(p.data), [0.9])
    np.testing.assert_allclose(backend.to_numpy(q.data), [0.55])
    opt.lr = 0.01                                # the schedule writes the base rate: q keeps 3x
    assert opt.group_lr(opt.param_groups[1]) == pytest.approx(0.03)
    opt.step()                                   # q: 0.55 - 0.03 * (1 + 0.5 * 0.55)
    np.testing.assert_allclose(backend.to_numpy(p.data), [0.89])
    np.testing.assert_allclose(backend.to_numpy(q.data), [0.55 - 0.03 * 1.275])


def _groups_and_grads(device, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,), (4, 2), (2,)]
    params = [Parameter(backend.to_device(rng.standard_normal(s), device)) for s in shapes]
    frozen = Parameter(backend.to_device(np.ones((2, 2)), device), requires_grad=False)
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(4)]
    named = [(f"p{i}", p) for i, p in enumerate(params)] + [("frozen", frozen)]
    return params, named, grads


@pytest.mark.parametrize("make", [
    lambda groups: AdamW([groups[0], dict(groups[1], lr=0.02)], lr=0.01),
    lambda groups: SGD([groups[0], dict(groups[1], lr=0.2)], lr=0.1, momentum=0.9),
], ids=["adamw", "sgd"])
def test_state_round_trip_with_groups(device, make):
    """Four steps in one go equal two steps, a checkpoint, a fresh optimizer and two more."""
    params, named, grads = _groups_and_grads(device)
    opt = make(decay_groups(named, 0.1))
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = backend.to_device(g, device)
        opt.step()
    straight = [backend.to_numpy(p.data) for p in params]

    params, named, grads = _groups_and_grads(device)
    opt = make(decay_groups(named, 0.1))
    for gs in grads[:2]:
        for p, g in zip(params, gs):
            p.grad = backend.to_device(g, device)
        opt.step()
    saved, t = opt.state_arrays(), opt.t
    assert all(isinstance(a, np.ndarray) for a in saved.values()) and len(saved) % len(params) == 0
    resumed = make(decay_groups(named, 0.1))
    resumed.load_state_arrays(saved)
    resumed.t = t
    for gs in grads[2:]:
        for p, g in zip(params, gs):
            p.grad = backend.to_device(g, device)
        resumed.step()
    for a, b in zip(straight, params):
        np.testing.assert_allclose(backend.to_numpy(b.data), a, rtol=1e-12)
    with pytest.raises(ValueError, match="not a state of this"):
        resumed.load_state_arrays({"momentum.0": saved[next(iter(saved))]})


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
    assert norm.ndim == 0 and float(norm) == pytest.approx(5.0)      # the norm before, a 0-d array
    total = math.sqrt(float((a.grad ** 2).sum() + (b.grad ** 2).sum()))
    assert total == pytest.approx(1.0, rel=1e-5)
    for max_norm in (10.0, 0.0):                                      # below the limit, or off: unchanged
        assert float(clip_grad_norm([a, b], max_norm)) == pytest.approx(1.0, rel=1e-5)
        np.testing.assert_allclose(backend.to_numpy(b.grad), [4.0 / (5.0 + 1e-6)])


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


def _two_params():
    return Parameter(np.zeros((2, 2))), Parameter(np.zeros(2))


@pytest.mark.parametrize("make, error, message", [
    (lambda w, b: AdamW([{"params": [w, b]}, {"params": [b]}]), ValueError,
     r"parameter group 1: Parameter\(shape=\(2,\).* is already in parameter group 0"),
    (lambda w, b: SGD([w, b, w]), ValueError, "already earlier in the list"),
    (lambda w, b: AdamW([{"params": [w]}, {"params": []}]), ValueError, "parameter group 1: 'params' is empty"),
    (lambda w, b: AdamW([{"params": [w], "momentum": 0.9}]), ValueError,
     "unknown key 'momentum'; allowed keys: params, lr, weight_decay"),
    (lambda w, b: Adam([{"params": [w], "weight_decay": 0.1}]), ValueError,
     "unknown key 'weight_decay'; allowed keys: params, lr"),
    (lambda w, b: AdamW([{"lr": 0.1}]), ValueError, "missing key 'params'"),
    (lambda w, b: AdamW([{"params": [w], "lr": -0.1}]), ValueError, r"group 0: lr=-0.1 is not allowed; expected a number >= 0"),
    (lambda w, b: AdamW([{"params": [w], "weight_decay": -1}]), ValueError, "weight_decay=-1 is not allowed"),
    (lambda w, b: AdamW([w], weight_decay=-0.5), ValueError, "AdamW: weight_decay=-0.5 is not allowed"),
    (lambda w, b: AdamW([w], betas=(0.9, 1.0)), ValueError, r"beta2=1.0 is not allowed; expected 0 <= beta2 < 1"),
    (lambda w, b: Adam([w], betas=(-0.1, 0.9)), ValueError, r"beta1=-0.1 is not allowed"),
    (lambda w, b: AdamW([w], betas=0.9), ValueError, "expected a pair"),
    (lambda w, b: SGD([w], momentum=-0.9), ValueError, "momentum=-0.9 is not allowed"),
    (lambda w, b: AdamW([w, {"params": [b]}]), TypeError, "list of Parameters or a list of parameter-group dicts"),
    (lambda w, b: AdamW([("w", w)]), TypeError, "got items of type tuple"),
    (lambda w, b: AdamW([{"params": [w.data]}]), TypeError, "'params' holds a ndarray"),
])
def test_bad_parameter_groups(make, error, message):
    with pytest.raises(error, match=message):
        make(*_two_params())
