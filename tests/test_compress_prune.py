"""Pruning: exact sparsity, global vs per layer, masks kept through updates, schedule, heads."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.compress.prune import (GradualPruning, PruningMask, cubic_sparsity, head_importance, head_mask,
                                            magnitude_masks, prune_model)
from minitransformer.nn import Module
from minitransformer.nn.functional.linear import linear_forward
from test_compress_lowrank import Toy


def test_layer_sparsity_is_exact(device):
    w = backend.to_device(np.random.default_rng(0).standard_normal((10, 7)), device)
    masks = magnitude_masks({"w": w}, 0.3)
    keep = backend.to_numpy(masks["w"])
    assert keep.sum() == 70 - 21
    a = np.abs(backend.to_numpy(w))
    assert a[~keep].max() <= a[keep].min()


def test_global_differs_from_layer():
    rng = np.random.default_rng(1)
    weights = {"big": rng.standard_normal((8, 8)) * 10, "small": rng.standard_normal((8, 8))}
    g = magnitude_masks(weights, 0.5, scope="global")
    assert g["small"].sum() < 16 and g["big"].sum() > 48      # small weights pruned first
    assert g["small"].sum() + g["big"].sum() == 64
    lay = magnitude_masks(weights, 0.5, scope="layer")
    assert lay["small"].sum() == lay["big"].sum() == 32


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "half"])
def test_sparsity_out_of_range(bad):
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        magnitude_masks({"w": np.ones((2, 2))}, bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_model(Toy(), bad)


def test_mask_survives_updates(device):
    model = Toy().to(device)
    mask = prune_model(model, 0.6, ["ffn"], scope="global")
    assert mask.sparsity() == pytest.approx(int(0.6 * 768) / 768)
    p = model.blocks[0].ffn.fc1.weight
    p.data += 1.0                                  # an optimizer step would revive pruned weights...
    mask.apply(model)                              # ...the hook puts them back to zero
    keep = backend.to_numpy(mask.masks["blocks.0.ffn.fc1.weight"])
    assert np.all(backend.to_numpy(p.data)[~keep] == 0) and np.all(backend.to_numpy(p.data)[keep] != 0)
    with pytest.raises(ValueError, match="no parameters"):
        PruningMask({"nope.weight": keep}).apply(model)


def test_cubic_schedule():
    assert cubic_sparsity(0, 0.8, 10, 110) == 0.0
    assert cubic_sparsity(110, 0.8, 10, 110) == pytest.approx(0.8)
    assert cubic_sparsity(500, 0.8, 10, 110) == pytest.approx(0.8)
    mid = cubic_sparsity(60, 0.8, 10, 110)
    assert mid == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    values = [cubic_sparsity(t, 0.8, 10, 110) for t in range(0, 120, 10)]
    assert values == sorted(values)
    with pytest.raises(ValueError):
        cubic_sparsity(0, 1.0, 0, 10)


def _attention_output(model, x, n_head):
    """A toy multi-head step through blocks[0].attn: v part of qkv per head, then proj."""
    attn = model.blocks[0].attn
    qkv, _ = linear_forward(x, attn.qkv.weight.data, attn.qkv.bias.data)
    C = x.shape[-1]
    v = qkv[..., 2 * C:]                           # heads side by side, like the real attention
    y, cache = linear_forward(v, attn.proj.weight.data, attn.proj.bias.data)
    attn.proj.cache = cache
    return y, v


def test_head_pruning_removes_heads(device):
    model = Toy(c=8, n=1).to(device, "float64")
    n_head = 4
    x = backend.to_device(np.random.default_rng(2).standard_normal((3, 5, 8)), device)
    _attention_output(model, x, n_head)
    scores = head_importance(model, n_head, "output")
    assert scores["blocks.0.attn"].shape == (n_head,)
    mask = head_mask(model, n_head, scores, 0.5)
    pruned = mask.pruned_heads["blocks.0.attn"]
    assert len(pruned) == 2
    mask.apply(model)
    _, v = _attention_output(model, x, n_head)
    v = backend.to_numpy(v).reshape(3, 5, n_head, 2)
    for h in range(n_head):
        assert np.all(v[:, :, h] == 0) == (h in pruned)
    proj = backend.to_numpy(model.blocks[0].attn.proj.weight.data).reshape(n_head, 2, 8)
    assert all(np.all(proj[h] == 0) for h in pruned)
    # the pruned heads were the least important ones
    s = backend.to_numpy(scores["blocks.0.attn"])
    assert set(pruned) == set(np.argsort(s)[:2])


def test_gradient_importance_equals_michel_score(device):
    model = Toy(c=8, n=1).to(device, "float64")
    attn = model.blocks[0].attn
    x = backend.to_device(np.random.default_rng(3).standard_normal((2, 4, 8)), device)
    y, _ = _attention_output(model, x, 4)
    dy = backend.to_device(np.random.default_rng(4).standard_normal(y.shape), device)
    attn.proj.zero_grad()
    dx = attn.proj.backward(dy)                    # d(head outputs)
    scores = backend.to_numpy(head_importance(model, 4, "gradient")["blocks.0.attn"])
    o = backend.to_numpy(attn.proj.cache.x).reshape(-1, 4, 2)
    do = backend.to_numpy(dx).reshape(-1, 4, 2)
    np.testing.assert_allclose(scores, np.abs((o * do).sum(axis=(0, 2))), rtol=1e-10)
    with pytest.raises(ValueError, match="method"):
        head_importance(model, 4, "random")
    with pytest.raises(ValueError, match="divisible"):
        head_importance(model, 3, "gradient")


def test_head_mask_keeps_one_head_per_layer():
    model = Toy(c=8, n=2)
    scores = {"blocks.0.attn": np.array([1.0, 1, 1, 1]), "blocks.1.attn": np.array([5.0, 5, 5, 5])}
    mask = head_mask(model, 4, scores, 0.99)
    assert all(len(v) == 3 for v in mask.pruned_heads.values())


def test_no_attention_is_clear():
    class Plain(Module):
        pass
    with pytest.raises(ValueError, match="no attention block"):
        head_importance(Plain(), 2)


def test_gradual_pruning_hook(device):
    model = Toy().to(device)
    hook = GradualPruning(0.8, begin=0, end=20, targets=["ffn"], every=5)
    seen = []
    for _ in range(25):
        for p in model.parameters():
            p.data += 0.01                          # a stand-in for an optimizer step
        hook(model)
        seen.append(hook.mask.sparsity())
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.8, abs=0.01)
    w = backend.to_numpy(model.blocks[0].ffn.fc1.weight.data)
    assert (w == 0).mean() == pytest.approx(0.8, abs=0.01)
