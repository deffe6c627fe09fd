"""LoRA: starts equal to the base model, merge/unmerge exact, only adapters train."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.compress.lora import (LoRALinear, apply_lora, lora_layers, merge_lora,
                                           parameter_counts, unmerge_lora)
from minitransformer.nn import Linear
from minitransformer.optim import AdamW
from test_compress_lowrank import Toy


def _x(device, shape=(2, 3, 8), seed=0):
    return backend.to_device(np.random.default_rng(seed).standard_normal(shape), device)


def test_starts_equal_to_base(device):
    base = Linear(8, 5, rng=backend.host_rng(1)).to(device, "float64")
    x = _x(device)
    ref = backend.to_numpy(base(x))
    layer = LoRALinear(base, rank=2, alpha=4.0)
    np.testing.assert_array_equal(backend.to_numpy(layer(x)), ref)
    assert layer.scale == 2.0 and not layer.weight.requires_grad


def test_merge_unmerge_exact_and_outputs_equal(device):
    base = Linear(8, 5, rng=backend.host_rng(1)).to(device, "float64")
    w0 = backend.to_numpy(base.weight.data).copy()
    layer = LoRALinear(base, rank=3, alpha=6.0)
    layer.lora_b.data = _x(device, (3, 5), 2)
    x = _x(device, (4, 1, 8))                                   # T = 1
    unmerged = backend.to_numpy(layer(x))
    layer.merge()
    merged = backend.to_numpy(layer(x))
    np.testing.assert_allclose(merged, unmerged, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    with pytest.raises(RuntimeError, match="unmerge"):
        layer.backward(merged)
    layer.unmerge()
    np.testing.assert_allclose(backend.to_numpy(layer.weight.data), w0, rtol=0, atol=1e-14)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()


def test_float32_merge_roundtrip(device):
    base = Linear(64, 32, rng=backend.host_rng(3)).to(device)
    w0 = backend.to_numpy(base.weight.data).copy()
    layer = LoRALinear(base, rank=4)
    layer.lora_b.data = _x(device, (4, 32), 4).astype(np.float32) * 0.1
    layer.merge()
    layer.unmerge()
    np.testing.assert_allclose(backend.to_numpy(layer.weight.data), w0, rtol=0, atol=1e-6)


def test_apply_lora_freezes_and_counts(device):
    model = Toy(c=8, n=2).to(device)
    total = model.num_parameters()
    names = apply_lora(model, ["attn.qkv", "attn.proj"], rank=2, alpha=4)
    assert len(names) == 4 and len(lora_layers(model)) == 4
    counts = parameter_counts(model)
    expected = 2 * (2 * (8 + 24) + 2 * (8 + 8))
    assert counts["trainable"] == expected and counts["total"] == total + expected
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    # the optimizer skips frozen parameters
    opt = AdamW(model.parameters(), lr=0.1)
    assert len(opt.params) == 8


def test_backward_trains_only_adapters(device):
    base = Linear(8, 5, rng=backend.host_rng(1)).to(device, "float64")
    layer = LoRALinear(base, rank=2)
    x = _x(device)
    y = layer(x)
    dx = layer.backward(backend.to_device(np.ones(y.shape), device))
    assert dx.shape == x.shape
    assert float(abs(layer.weight.grad).sum()) == 0 and float(abs(layer.lora_b.grad).sum()) > 0


def test_model_merge_equals_unmerged(device):
    model = Toy(c=8, n=1).to(device, "float64")
    apply_lora(model, ["ffn"], rank=2)
    for layer in lora_layers(model):
        layer.lora_b.data = _x(device, layer.lora_b.shape, 5)
    fc = lambda m, x: m.blocks[0].ffn.fc2(m.blocks[0].ffn.fc1(x))   # noqa: E731
    x = _x(device)
    before = backend.to_numpy(fc(model, x))
    merge_lora(model)
    np.testing.assert_allclose(backend.to_numpy(fc(model, x)), before, atol=1e-12)
    unmerge_lora(model)


def test_bad_inputs():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(Linear(4, 3), rank=4)
    with pytest.raises(TypeError, match="Linear"):
        LoRALinear("w", rank=1)
