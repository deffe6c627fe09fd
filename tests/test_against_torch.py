"""Cross-check against an independent implementation: the same GPT in PyTorch (autograd), with the
same weights, must give the same logits, loss and every parameter gradient. Skipped without torch."""
import numpy as np
import pytest

from minitransformer.models.gpt import GPT, GPTConfig

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_gpt_loss(params: dict, cfg: GPTConfig, idx, targets):
    """A from-the-formulas PyTorch GPT reading our parameter names ((in, out) weight layout)."""
    B, T = idx.shape
    C, H = cfg.d_model, cfg.n_head
    D = C // H
    x = params["wte.weight"][idx] + params["wpe.weight"][:T]

    def ln(z, name):
        return F.layer_norm(z, (C,), params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5)

    for i in range(cfg.n_layer):
        p = f"blocks.{i}."
        h = ln(x, p + "ln1") if cfg.norm == "pre" else x
        qkv = h @ params[p + "attn.qkv.weight"] + params[p + "attn.qkv.bias"]
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C) @ params[p + "attn.proj.weight"] + params[p + "attn.proj.bias"]
        x = x + y if cfg.norm == "pre" else ln(x + y, p + "ln1")
        h = ln(x, p + "ln2") if cfg.norm == "pre" else x
        f = F.gelu(h @ params[p + "ffn.fc1.weight"] + params[p + "ffn.fc1.bias"])
        f = f @ params[p + "ffn.fc2.weight"] + params[p + "ffn.fc2.bias"]
        x = x + f if cfg.norm == "pre" else ln(x + f, p + "ln2")
    if cfg.norm == "pre":
        x = ln(x, "ln_f")
    logits = x @ params["wte.weight"].T
    return logits, F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1))


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_gpt_matches_pytorch(norm):
    cfg = GPTConfig(vocab_size=17, block_size=12, n_layer=2, n_head=3, d_model=12, norm=norm)
    model = GPT(cfg, seed=0).to("cpu", "float64")
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 17, (3, 10)), rng.integers(0, 17, (3, 10))
    logits, loss = model.forward(idx, targets)
    model.backward()

    params = {n: torch.tensor(p.data, requires_grad=True) for n, p in model.named_parameters()}
    t_logits, t_loss = torch_gpt_loss(params, cfg, torch.tensor(idx), torch.tensor(targets))
    t_loss.backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert float(loss) == pytest.approx(t_loss.item(), rel=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)
