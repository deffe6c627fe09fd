"""Cross-check against an independent implementation: the same ViT written from the formulas in
PyTorch, with the patch embedding as a strided Conv2d (weight (C, C_img, P, P), the (c, r, s) order),
must give the same logits, loss and every gradient (input images included). Skipped without torch."""
import numpy as np
import pytest

from minitransformer.models.vit import ViT, ViTConfig

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_vit_loss(params: dict, cfg: ViTConfig, images, labels):
    C, H, P = cfg.d_model, cfg.n_head, cfg.patch_size
    D = C // H
    conv_w = params["patch_embed.proj.weight"].T.reshape(C, cfg.channels, P, P)   # (in, out) -> Conv2d layout
    e = F.conv2d(images, conv_w, params["patch_embed.proj.bias"], stride=P)        # (B, C, S/P, S/P)
    e = e.flatten(2).transpose(1, 2)                                               # (B, N, C), row-major grid
    B = e.shape[0]
    x = torch.cat([params["tokens.cls"].expand(B, 1, C), e], dim=1) + params["tokens.pos"]

    def ln(z, name):
        return F.layer_norm(z, (C,), params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5)

    T = x.shape[1]
    for i in range(cfg.n_layer):
        p = f"encoder.blocks.{i}."
        qkv = ln(x, p + "ln1") @ params[p + "attn.qkv.weight"] + params[p + "attn.qkv.bias"]
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v)                                # not causal
        x = x + y.transpose(1, 2).reshape(B, T, C) @ params[p + "attn.proj.weight"] + params[p + "attn.proj.bias"]
        f = F.gelu(ln(x, p + "ln2") @ params[p + "ffn.fc1.weight"] + params[p + "ffn.fc1.bias"])
        x = x + f @ params[p + "ffn.fc2.weight"] + params[p + "ffn.fc2.bias"]
    h = ln(x, "encoder.ln_f")
    logits = h[:, 0] @ params["head.weight"] + params["head.bias"]
    return logits, F.cross_entropy(logits, labels)


@pytest.mark.parametrize("channels,patch_size", [(1, 4), (3, 2)])
def test_vit_matches_pytorch(channels, patch_size):
    cfg = ViTConfig(image_size=8, patch_size=patch_size, channels=channels, n_classes=5, n_layer=2,
                    n_head=2, d_model=16)
    model = ViT(cfg, seed=1).to(dtype="float64")
    rng = np.random.default_rng(2)
    model.head.weight.data[...] = rng.standard_normal(model.head.weight.shape)   # nonzero: gradients below it
    model.tokens.cls.data[...] = rng.standard_normal(16)
    images = rng.standard_normal((3, channels, 8, 8))
    labels = np.array([4, 0, 2])

    logits, loss = model.forward(images, labels)
    model.zero_grad()
    dimages = model.backward()

    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in model.named_parameters()}
    x = torch.tensor(images, requires_grad=True)
    t_logits, t_loss = torch_vit_loss(params, cfg, x, torch.tensor(labels))
    t_loss.backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert float(loss) == pytest.approx(t_loss.item(), rel=1e-10)
    np.testing.assert_allclose(dimages, x.grad.numpy(), rtol=1e-8, atol=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)
