"""The GPT: KV-cache decoding equals recomputation, it learns a synthetic task, bad input fails clearly."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.config import from_dict
from minitransformer.data.synthetic import IGNORE, copy_or_reverse_batch
from minitransformer.generate import filter_logits, generate
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.optim import AdamW, clip_grad_norm


def _model(device, dtype="float64", **kw):
    cfg = GPTConfig(**{"vocab_size": 13, "block_size": 16, "n_layer": 2, "n_head": 2, "d_model": 16, **kw})
    return GPT(cfg, seed=0).to(device, dtype)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_kv_cache_logits_equal_full_recompute(device, norm):
    model = _model(device, norm=norm)
    idx = backend.to_device(np.random.default_rng(0).integers(0, 13, (3, 11)), device)
    full, _ = model.forward(idx)
    caches = model.make_kv_caches(3)
    with model.no_grad():
        prefill, _ = model.forward(idx[:, :4], kv_caches=caches)            # a prompt of 4
        steps = [model.forward(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(4, 11)]
    cached = np.concatenate([backend.to_numpy(prefill)] + [backend.to_numpy(s) for s in steps], axis=1)
    np.testing.assert_allclose(cached, backend.to_numpy(full), rtol=1e-10, atol=1e-12)


def test_generate_with_and_without_cache_agree(device):
    model = _model(device)
    prompt = backend.to_device(np.array([[1, 2, 3], [4, 5, 6]]), device)
    a = generate(model, prompt, 10, greedy=True, use_cache=True)
    b = generate(model, prompt, 10, greedy=True, use_cache=False)
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    # beyond the context the cached decoder keeps going (refilling its cache)
    long = generate(model, prompt, 30, temperature=1.0, top_k=5, seed=1)
    assert long.shape == (2, 33)


def test_sampling_filters(xp):
    logits = xp.asarray([[1.0, 3.0, 2.0, 0.0]])
    assert np.isinf(backend.to_numpy(filter_logits(logits, top_k=2))).sum() == 2
    kept = backend.to_numpy(filter_logits(logits, top_p=0.5))        # top token alone has p > 0.5
    assert np.isfinite(kept).sum() == 1 and np.isfinite(kept[0, 1])
    one = generate(_model("cpu"), np.array([[1]]), 5, top_k=1, seed=3)
    greedy = generate(_model("cpu"), np.array([[1]]), 5, greedy=True)
    np.testing.assert_array_equal(one, greedy)


def test_gpt_learns_to_reverse(device):
    """A 2-layer GPT reverses 4 digits almost perfectly after ~300 steps (seconds on a CPU)."""
    rng = np.random.default_rng(0)
    cfg = GPTConfig(vocab_size=7, block_size=8, n_layer=2, n_head=2, d_model=32)
    model = GPT(cfg, seed=0).to(device)
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(300):
        x, y = copy_or_reverse_batch(32, 4, 6, rng, reverse=True)
        _, loss = model.forward(backend.to_device(x, device), backend.to_device(y, device), ignore_index=IGNORE)
        model.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    x, y = copy_or_reverse_batch(256, 4, 6, np.random.default_rng(1), reverse=True)
    _, loss = model.forward(backend.to_device(x, device), backend.to_device(y, device), ignore_index=IGNORE)
    assert float(loss) < 0.05


def test_bad_input_is_named(device):
    model = _model(device)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 13\), got values in \[0, 13\]"):
        model.forward(backend.to_device(np.array([[0, 13]]), device))
    with pytest.raises(ValueError, match="exceed the context length block_size=16"):
        model.forward(backend.to_device(np.zeros((1, 17), np.int64), device))
    with pytest.raises(TypeError, match="expected integer token ids, got dtype float"):
        model.forward(backend.to_device(np.zeros((1, 3)), device))
    with pytest.raises(ValueError, match="expected 2 dimensions"):
        model.forward(backend.to_device(np.zeros(3, np.int64), device))
    with pytest.raises(ValueError, match=r"targets: expected shape \(1, 3\)"):
        model.forward(backend.to_device(np.zeros((1, 3), np.int64), device),
                      backend.to_device(np.zeros((1, 4), np.int64), device))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 13\) or equal ignore_index=-100, got values in \[-1, 40\]"):
        model.forward(backend.to_device(np.zeros((1, 3), np.int64), device),
                      backend.to_device(np.array([[0, 40, -1]]), device))
    with pytest.raises(ValueError, match="not divisible by n_head"):
        GPTConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_layers'\]"):
        from_dict(GPTConfig, {"n_layers": 2}, "my.toml [model]")


def test_same_seed_same_weights_on_every_device(device):
    a = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, d_model=4), seed=7)
    b = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, d_model=4), seed=7).to(device)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(backend.to_numpy(pa.data), backend.to_numpy(pb.data))


def test_tied_embedding_listed_once():
    model = _model("cpu")
    names = [n for n, _ in model.named_parameters()]
    assert names.count("wte.weight") == 1 and len(names) == len(set(names))


def test_low_rank_config_factorises_projections(device):
    full = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, d_model=32), seed=0)
    low = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, d_model=32, low_rank=4), seed=0)
    assert low.num_parameters() < full.num_parameters()
    assert type(low.blocks[0].attn.qkv).__name__ == "LowRankLinear"
    low.to(device)
    x = backend.to_device(np.random.default_rng(0).integers(0, 13, (2, 16)), device)
    _, loss = low.forward(x, x)
    low.backward()
    assert np.isfinite(float(loss))
    with pytest.raises(ValueError, match="rank"):
        GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=1, n_head=2, d_model=32, low_rank=64))
