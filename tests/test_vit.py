"""ViT: the patch order (c, r, s), [CLS] + positions, the model's gradients, its errors, its attention
maps, and training on the generated shapes (no scikit-learn needed)."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.gradcheck import run_registered
from minitransformer.models import build_model
from minitransformer.models.vit import ViT, ViTConfig
from minitransformer.nn.class_token import ClassTokenAndPositions
from minitransformer.nn.functional.class_token import class_token_backward, class_token_forward
from minitransformer.nn.functional.patches import patchify_backward, patchify_forward, unpatchify
from minitransformer.nn.patch_embedding import PatchEmbedding


def test_patch_rows_are_in_c_r_s_order():
    B, C, H, W, P = 2, 3, 4, 6, 2
    x = np.arange(B * C * H * W, dtype=np.float64).reshape(B, C, H, W)
    patches, _ = patchify_forward(x, P)
    assert patches.shape == (B, (H // P) * (W // P), C * P * P)
    for b in range(B):
        for i in range(H // P):
            for j in range(W // P):
                n = i * (W // P) + j                                     # row-major over the grid
                for c in range(C):
                    for r in range(P):
                        for s in range(P):
                            assert patches[b, n, c * P * P + r * P + s] == x[b, c, i * P + r, j * P + s]


def test_patchify_backward_is_the_inverse_permutation(xp):
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    patches, cache = patchify_forward(x, 3)
    assert bool((patchify_backward(patches, cache) == x).all())
    assert bool((unpatchify(patches, x.shape, 3) == x).all())


def test_patch_size_must_divide_the_image():
    with pytest.raises(ValueError, match="not divisible by the patch size 3"):
        patchify_forward(np.zeros((1, 1, 8, 8)), 3)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify_forward(np.zeros((8, 8)), 2)


def test_class_token_is_row_zero_and_positions_are_added():
    rng = np.random.default_rng(1)
    e, cls, pos = rng.standard_normal((2, 3, 4)), rng.standard_normal(4), rng.standard_normal((4, 4))
    z, cache = class_token_forward(e, cls, pos)
    np.testing.assert_allclose(z[:, 0], np.broadcast_to(cls + pos[0], (2, 4)))
    np.testing.assert_allclose(z[:, 1:], e + pos[1:])
    dz = rng.standard_normal(z.shape)
    de, dcls, dpos = class_token_backward(dz, cache)
    np.testing.assert_allclose(de, dz[:, 1:])
    np.testing.assert_allclose(dcls, dz[:, 0].sum(axis=0))
    np.testing.assert_allclose(dpos, dz.sum(axis=0))


def test_registered_gradchecks_pass(device):
    names = ["nn.patchify", "nn.patch_embedding", "nn.vit_class_token", "models.vit"]
    results = [r for res in run_registered(device, names) for r in (res if isinstance(res, list) else [res])]
    assert len(results) == 8
    for r in results:
        assert r.passed, str(r)


def _model(device, **kw):
    cfg = ViTConfig(**{"image_size": 8, "patch_size": 2, "channels": 2, "n_classes": 3, "n_layer": 2,
                       "n_head": 2, "d_model": 8, **kw})
    return ViT(cfg, seed=0).to(device)


def _images(device, B=3, C=2, S=8, seed=0):
    return backend.to_device(np.random.default_rng(seed).random((B, C, S, S)).astype(np.float32), device)


def test_head_and_cls_start_at_zero(device):
    model = _model(device)
    assert not backend.to_numpy(model.head.weight.data).any()
    assert not backend.to_numpy(model.tokens.cls.data).any()
    logits, _ = model.forward(_images(device))
    assert not backend.to_numpy(logits).any()            # a zero head: uniform predictions at the start


def _swap_patches(images, P):
    """The images with patch (0, 0) and patch (1, 1) exchanged (whole P x P blocks)."""
    out = images.copy()
    out[..., :P, :P], out[..., P:2 * P, P:2 * P] = images[..., P:2 * P, P:2 * P], images[..., :P, :P]
    return out


def test_positions_are_what_tells_patches_apart(device):
    """Without positions, attention and the position-wise layers treat the patches as a set: moving
    whole patches around leaves [CLS] unchanged. The learned positions break that symmetry."""
    model = _model(device)
    model.head.weight.data[...] = backend.to_device(np.random.default_rng(2).standard_normal((8, 3)), device)
    x = backend.to_numpy(_images(device))
    swapped = backend.to_device(_swap_patches(x, 2), device)
    x = backend.to_device(x, device)
    with model.no_grad():
        a, b = backend.to_numpy(model.forward(x)[0]), backend.to_numpy(model.forward(swapped)[0])
        assert np.abs(a - b).max() > 1e-4                          # learned positions: order matters
        model.tokens.pos.data[...] = 0
        a, b = backend.to_numpy(model.forward(x)[0]), backend.to_numpy(model.forward(swapped)[0])
    np.testing.assert_allclose(a, b, atol=1e-5)                    # no positions: a set of patches


def test_config_is_validated():
    with pytest.raises(ValueError, match="image_size=8 is not divisible by patch_size=3"):
        ViTConfig(image_size=8, patch_size=3)
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_head=4"):
        ViTConfig(d_model=10, n_head=4)
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        ViTConfig(channels=0)
    with pytest.raises(ValueError, match="n_classes must be at least 2"):
        ViTConfig(n_classes=1)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['patch'\]"):
        build_model("vit", {"patch": 4})
    assert ViTConfig(image_size=8, patch_size=2).n_patches == 16


def test_bad_inputs_name_what_was_expected(device):
    model = _model(device)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 2, 8, 8\).*got \(3, 1, 8, 8\)"):
        model.forward(_images(device, C=1))
    with pytest.raises(ValueError, match=r"got \(3, 2, 4, 4\)"):
        model.forward(_images(device, S=4))
    with pytest.raises(TypeError, match="expected dtype float32, got int64"):
        model.forward(backend.to_device(np.zeros((1, 2, 8, 8), np.int64), device))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\)"):
        model.forward(_images(device), backend.to_device(np.array([0, 1, 3]), device))
    with pytest.raises(ValueError, match="expected 2 channel"):
        PatchEmbedding(2, 2, 4).to(device).forward(_images(device, C=3))
    with pytest.raises(ValueError, match="expected 4 patches"):
        ClassTokenAndPositions(4, 8).to(device).forward(backend.to_device(np.zeros((1, 5, 8), np.float32), device))


def test_cls_attention_maps(device):
    model = _model(device)
    x = _images(device)
    maps = backend.to_numpy(model.cls_attention(x))
    assert maps.shape == (2, 3, 2, 4, 4)                          # (L, B, H, S/P, S/P)
    assert (maps >= 0).all()
    self_attention = np.stack([backend.to_numpy(b.attn.last_weights)[:, :, 0, 0] for b in model.encoder.blocks])
    np.testing.assert_allclose(maps.sum(axis=(-2, -1)) + self_attention, 1.0, rtol=1e-5)
    assert model.training and model.cache is None                  # the model is left as it was
    with pytest.raises(ValueError, match="keeps no attention probabilities"):
        _model(device, attention="linear").cls_attention(x)


def test_learns_the_generated_shapes(device):
    from minitransformer.data.images import shapes_split
    from minitransformer.tasks.image_classification import ImageClassificationTask
    from minitransformer.train import TrainConfig, fit

    task = ImageClassificationTask(shapes_split(512, 256, 8, 3, seed=0), "shapes")
    model = ViT(task.adapt(ViTConfig(patch_size=2, n_layer=1, n_head=2, d_model=16)), seed=0).to(device)
    assert task.test_accuracy(model) < 0.5                                     # four classes, untrained
    cfg = TrainConfig(steps=200, batch_size=32, lr=1e-2, min_lr=1e-3, warmup=5, weight_decay=0.0,
                      eval_interval=200, eval_iters=1, num_samples=0, threads=1)
    result = fit(model, task, cfg, progress=False, log=lambda *a: None)
    assert result["history"][-1]["test_accuracy"] > 0.95
