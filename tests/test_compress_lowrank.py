"""Low-rank linear layer and model surgery (replace_linears / factorize_model)."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.compress.lowrank import (LowRankLinear, factorize_model, from_linear, lowrank_linear_forward,
                                              replace_linears)
from minitransformer.nn import Linear, Module


class FFN(Module):
    def __init__(self, c, rng):
        super().__init__()
        self.fc1, self.fc2 = Linear(c, 3 * c, rng=rng), Linear(3 * c, c, rng=rng)


class Attn(Module):
    def __init__(self, c, rng):
        super().__init__()
        self.qkv, self.proj = Linear(c, 3 * c, rng=rng), Linear(c, c, rng=rng)


class Block(Module):
    def __init__(self, c, rng):
        super().__init__()
        self.attn, self.ffn = Attn(c, rng), FFN(c, rng)


class Toy(Module):
    def __init__(self, c=8, n=2):
        super().__init__()
        rng = backend.host_rng(0)
        self.blocks = [Block(c, rng) for _ in range(n)]
        self.head = Linear(c, 5, rng=rng)


def test_forward_matches_dense_product(device):
    rng = np.random.default_rng(0)
    x, a, b, bias = (backend.to_device(rng.standard_normal(s), device) for s in [(2, 3, 6), (6, 2), (2, 5), (5,)])
    y, _ = lowrank_linear_forward(x, a, b, bias)
    ref = backend.to_numpy(x) @ (backend.to_numpy(a) @ backend.to_numpy(b)) + backend.to_numpy(bias)
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12, atol=1e-12)
    assert y.shape == (2, 3, 5)


def test_full_rank_svd_reproduces_linear(device):
    lin = Linear(6, 4, rng=backend.host_rng(1)).to(device, "float64")
    lin.bias.data += 0.5
    low = from_linear(lin, 4)
    x = backend.to_device(np.random.default_rng(2).standard_normal((3, 1, 6)), device)   # T = 1
    np.testing.assert_allclose(backend.to_numpy(low(x)), backend.to_numpy(lin(x)), atol=1e-12)
    assert low.a.dtype == np.float64 and low.a.device == device


@pytest.mark.parametrize("rank", [0, 5, -1])
def test_bad_rank(rank):
    with pytest.raises(ValueError, match=r"rank must lie in \[1, min\(m, n\)\]"):
        LowRankLinear(6, 4, rank)
    with pytest.raises(ValueError, match="rank"):
        from_linear(Linear(6, 4), rank)


def test_rank_type():
    with pytest.raises(TypeError, match="integer"):
        LowRankLinear(6, 4, 2.5)


def test_random_init_matches_std():
    layer = LowRankLinear(256, 256, 64, rng=backend.host_rng(3), std=0.02)
    assert abs(float(layer.dense_weight().std()) / 0.02 - 1) < 0.1


def test_replace_linears_walks_lists_and_matches_pieces():
    model = Toy()
    seen = replace_linears(model, ["attn.qkv", "ffn"], lambda n, lin: LowRankLinear(lin.in_features, lin.out_features, 2))
    assert seen == ["blocks.0.attn.qkv", "blocks.0.ffn.fc1", "blocks.0.ffn.fc2",
                    "blocks.1.attn.qkv", "blocks.1.ffn.fc1", "blocks.1.ffn.fc2"]
    assert isinstance(model.blocks[1].ffn.fc2, LowRankLinear)
    assert isinstance(model.blocks[0].attn.proj, Linear) and isinstance(model.head, Linear)
    names = [n for n, _ in model.named_parameters()]
    assert "blocks.0.attn.qkv.a" in names and "blocks.0.attn.proj.weight" in names


def test_replace_linears_no_match_is_clear():
    with pytest.raises(ValueError, match="no Linear matches"):
        replace_linears(Toy(), ["attn.nothing"], lambda n, lin: lin)
    with pytest.raises(ValueError, match="at least one target"):
        replace_linears(Toy(), [], lambda n, lin: lin)


def test_factorize_model_svd_and_random_train(device):
    model = Toy().to(device, "float64")
    x = backend.to_device(np.random.default_rng(4).standard_normal((2, 3, 8)), device)
    w_before = backend.to_numpy(model.blocks[0].attn.proj.weight.data)
    names = factorize_model(model, 8, ["attn.proj"], init="svd")        # full rank for 8x8
    assert names == ["blocks.0.attn.proj", "blocks.1.attn.proj"]
    np.testing.assert_allclose(backend.to_numpy(model.blocks[0].attn.proj.dense_weight()), w_before, atol=1e-12)
    factorize_model(model, 2, ["ffn.fc1"], init="random", seed=1)
    layer = model.blocks[0].ffn.fc1
    assert layer.rank == 2 and layer.a.device == device and layer.a.dtype == np.float64
    y = layer(x)
    dx = layer.backward(backend.to_device(np.ones(y.shape), device))
    assert dx.shape == x.shape and float(abs(layer.a.grad).sum()) > 0
    with pytest.raises(ValueError, match="init"):
        factorize_model(model, 2, ["ffn"], init="zeros")
    with pytest.raises(ValueError, match="rank"):
        factorize_model(Toy(), 9, ["attn.proj"])
