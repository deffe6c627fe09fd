"""RMSNorm: forward against the formula and PyTorch, backward against finite differences and autograd."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.gradcheck import check_functional, check_module
from minitransformer.nn.functional.rmsnorm import rmsnorm_backward, rmsnorm_forward
from minitransformer.nn.rmsnorm import RMSNorm


@pytest.mark.parametrize("shape", [(2, 3, 6), (1, 1, 5), (4, 2), (3, 2, 3)])
def test_rmsnorm_gradcheck(shape, device):
    rng = np.random.default_rng(0)
    x = backend.to_device(rng.standard_normal(shape) * 3, device)
    g = backend.to_device(rng.standard_normal(shape[-1]) + 1, device)
    result = check_functional("rmsnorm", lambda a, b: rmsnorm_forward(a, b, 1e-6), rmsnorm_backward, [x, g])
    assert result.passed, str(result)


def test_rmsnorm_forward_formula_and_no_mean_subtracted(device):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7)) + 4.0                     # a large mean: LayerNorm would remove it
    g = rng.standard_normal(7)
    y, _ = rmsnorm_forward(backend.to_device(x, device), backend.to_device(g, device))
    expected = x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + 1e-6) * g
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12)
    assert np.all(backend.to_numpy(y).mean(axis=-1) * np.sign(g.mean()) != 0)


def test_rmsnorm_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, g, dy = rng.standard_normal((3, 4, 8)), rng.standard_normal(8), rng.standard_normal((3, 4, 8))
    y, cache = rmsnorm_forward(x, g)
    dx, dg = rmsnorm_backward(dy, cache)
    tx, tg = torch.tensor(x, requires_grad=True), torch.tensor(g, requires_grad=True)
    ty = torch.nn.functional.rms_norm(tx, (8,), tg, eps=1e-6)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dg, tg.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_rmsnorm_zero_row_is_finite(device):
    """eps inside the square root: an all-zero row gives zeros and finite gradients, not NaN."""
    x = backend.to_device(np.zeros((2, 4)), device)
    y, cache = rmsnorm_forward(x, backend.to_device(np.ones(4), device))
    dx, _ = rmsnorm_backward(backend.to_device(np.ones((2, 4)), device), cache)
    assert np.all(backend.to_numpy(y) == 0) and np.all(np.isfinite(backend.to_numpy(dx)))


def test_rmsnorm_module(device):
    layer = RMSNorm(6).to(device, "float64")
    layer.weight.data[...] = backend.to_device(np.linspace(0.5, 1.5, 6), device)
    x = backend.to_device(np.random.default_rng(3).standard_normal((2, 3, 6)), device)
    result = check_module("RMSNorm", layer, [x])
    assert result.passed, str(result)
    assert [n for n, _ in layer.named_parameters()] == ["weight"]          # no bias
    assert layer.eps == 1e-6


def test_rmsnorm_bad_input():
    with pytest.raises(ValueError, match="last dimension 6"):
        RMSNorm(6)(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="eps > 0"):
        RMSNorm(4, eps=0.0)
