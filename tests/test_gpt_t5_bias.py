"""GPTConfig(positional="t5_bias"): T5's causal relative bias, one table shared by every layer of the
GPT. Against direct computations, through the KV cache, the shared table's gradient, float64
gradient checks, and the errors at the door."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention.relative_bias import relative_position_bucket
from minitransformer.attention.scaled_dot_product import DenseAttention
from minitransformer.attention.shared_bias_attention import SharedBiasAttention
from minitransformer.benchmarking.extrapolation import longer_context
from minitransformer.generate import generate
from minitransformer.gradcheck import check_module
from minitransformer.models.gpt import GPT, GPTConfig

SMALL = dict(vocab_size=13, block_size=12, n_layer=2, n_head=2, d_model=8, positional="t5_bias",
             relative_buckets=8, relative_max_distance=6)      # distances 6.. share the last bucket


def dev(a, device, dtype=None):
    return backend.to_device(np.asarray(a), device, dtype)


def host(a):
    return backend.to_numpy(a)


def direct_bias(table, T, S, num_buckets, max_distance):
    """P[h, i, j] = table[bucket(j - (i + S - T)), h], entry by entry (queries end at key S-1)."""
    H = table.shape[1]
    P = np.zeros((H, T, S))
    for i in range(T):
        for j in range(S):
            b = int(relative_position_bucket(np.array(j - (i + S - T)), False, num_buckets, max_distance))
            P[:, i, j] = table[b]
    return P


def test_kernel_adds_the_bias_to_causal_scores(device):
    """The kernel's output = softmax(q k^T / sqrt(D) + P + causal) v, with a KV-cache shape (T < S)."""
    rng = np.random.default_rng(0)
    B, H, T, S, D = 2, 2, 3, 5, 4
    q, k, v = (rng.standard_normal(s) for s in ((B, H, T, D), (B, H, S, D), (B, H, S, D)))
    P = rng.standard_normal((1, H, T, S))
    kernel = SharedBiasAttention(H, D).to(device, "float64")
    kernel.set_position_bias(dev(P, device))
    got = host(kernel.forward(dev(q, device), dev(k, device), dev(v, device), causal=True))
    allowed = np.arange(S)[None, :] <= np.arange(S - T, S)[:, None]             # (T, S) bottom right
    s = np.einsum("bhtd,bhsd->bhts", q, k) / np.sqrt(D) + P + np.where(allowed, 0.0, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = np.einsum("bhts,bhsd->bhtd", p / p.sum(-1, keepdims=True), v)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_every_layer_reads_the_one_table(device):
    """One table, on the model; each layer's kernel gets P[h,i,j] = W[bucket(j - i), h]."""
    model = GPT(GPTConfig(**SMALL), seed=1).to(device, "float64")
    names = [n for n, _ in model.named_parameters() if "relative" in n]
    assert names == ["relative_bias.weight"]
    idx = dev(np.random.default_rng(2).integers(0, 13, (2, 10)), device)
    with model.no_grad():
        model.forward(idx)
    want = direct_bias(host(model.relative_bias.weight.data), 10, 10, 8, 6)
    for block in model.blocks:
        assert isinstance(block.attn.kernel, SharedBiasAttention)
        np.testing.assert_array_equal(host(block.attn.kernel.position_bias)[0], want)


def test_positions_come_from_the_table():
    """Swapping two early tokens changes the last logits; with the table zeroed the GPT has no
    positions at all and the swap changes nothing (so the bias really is added). One block: with two,
    the causal mask alone would let the second block see order."""
    model = GPT(GPTConfig(**{**SMALL, "n_layer": 1}), seed=3).to("cpu", "float64")
    a, b = np.array([[1, 2, 3, 4, 5, 6]]), np.array([[2, 1, 3, 4, 5, 6]])
    assert np.abs(model.forward(a)[0][0, -1] - model.forward(b)[0][0, -1]).max() > 1e-4
    model.relative_bias.weight.data[...] = 0.0
    np.testing.assert_allclose(model.forward(a)[0][0, -1], model.forward(b)[0][0, -1], rtol=1e-12, atol=1e-12)


def test_cached_decoding_equals_recomputation(device):
    """Prefill then token by token through the KV cache = the whole sequence at once; T = 11 reaches
    past max_distance = 6, so the open-ended last bucket is used too."""
    model = GPT(GPTConfig(**SMALL), seed=4).to(device, "float64")
    assert model.supports_kv_cache
    idx = dev(np.random.default_rng(5).integers(0, 13, (2, 11)), device)
    with model.no_grad():
        full, _ = model.forward(idx)
        caches = model.make_kv_caches(2)
        prefill, _ = model.forward(idx[:, :4], kv_caches=caches)
        steps = [model.forward(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(4, 11)]
    got = np.concatenate([host(prefill)] + [host(s) for s in steps], axis=1)
    np.testing.assert_allclose(got, host(full), rtol=1e-11, atol=1e-12)
    prompt = idx[:, :3]
    np.testing.assert_array_equal(host(generate(model, prompt, 9, greedy=True, use_cache=True)),
                                  host(generate(model, prompt, 9, greedy=True, use_cache=False)))


def test_shared_table_gradient_is_the_sum_over_layers(device):
    """dW = sum over layers of (layer l's dP scattered by bucket), each scatter done entry by entry;
    every layer contributes (dropping one would change dW)."""
    model = GPT(GPTConfig(**SMALL), seed=6).to(device, "float64")
    rng = np.random.default_rng(7)
    idx, targets = dev(rng.integers(0, 13, (3, 9)), device), dev(rng.integers(0, 13, (3, 9)), device)
    model.zero_grad()
    model.forward(idx, targets)
    model.backward()
    got = host(model.relative_bias.weight.grad)
    buckets = host(model.relative_bias.buckets(9, 9, 0))
    per_layer = []
    for block in model.blocks:
        dP = host(block.attn.kernel.bias_grad)[0]                    # (H, T, S)
        d = np.zeros_like(got)
        for i in range(9):
            for j in range(9):
                d[buckets[i, j]] += dP[:, i, j]
        per_layer.append(d)
    np.testing.assert_allclose(got, sum(per_layer), rtol=1e-12, atol=1e-14)
    for d in per_layer:
        assert np.abs(d).max() > 1e-3 * np.abs(got).max()


def test_shared_table_gradient_against_finite_differences():
    """Every entry of the 8 x 2 table, central differences of the loss (all layers read each entry)."""
    model = GPT(GPTConfig(**SMALL), seed=8).to("cpu", "float64")
    rng = np.random.default_rng(9)
    idx, targets = rng.integers(0, 13, (2, 11)), rng.integers(0, 13, (2, 11))
    model.zero_grad()
    model.forward(idx, targets)
    model.backward()
    W = model.relative_bias.weight.data
    numeric = np.zeros_like(W)
    with model.no_grad():
        for index in np.ndindex(W.shape):
            old = W[index]
            W[index] = old + 1e-6
            up = float(model.forward(idx, targets)[1])
            W[index] = old - 1e-6
            down = float(model.forward(idx, targets)[1])
            W[index] = old
            numeric[index] = (up - down) / 2e-6
    np.testing.assert_allclose(model.relative_bias.weight.grad, numeric, rtol=1e-6, atol=1e-9)


def test_gpt_gradcheck(device):
    model = GPT(GPTConfig(**SMALL), seed=10).to(device, "float64")
    rng = np.random.default_rng(11)
    idx, targets = dev(rng.integers(0, 13, (2, 7)), device), dev(rng.integers(0, 13, (2, 7)), device)
    result = check_module("t5_bias", model, [idx, targets], run=lambda m, i, t: m.forward(i, t)[1],
                          backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)
    assert result.passed, str(result)


def test_other_positionals_keep_the_dense_kernel():
    for positional in ("learned", "sinusoidal", "rope"):
        model = GPT(GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8, positional=positional))
        assert model.relative_bias is None and type(model.blocks[0].attn.kernel) is DenseAttention


def test_longer_context_carries_the_table():
    model = GPT(GPTConfig(**SMALL), seed=12).to("cpu", "float64")
    longer = longer_context(model, 24)
    np.testing.assert_array_equal(longer.relative_bias.weight.data, model.relative_bias.weight.data)
    idx = np.random.default_rng(13).integers(0, 13, (1, 12))
    with model.no_grad(), longer.no_grad():
        np.testing.assert_allclose(longer.forward(idx)[0], model.forward(idx)[0], rtol=1e-12, atol=1e-13)
        assert longer.forward(np.concatenate([idx, idx], axis=1))[0].shape == (1, 24, 13)


def test_errors():
    with pytest.raises(ValueError, match="'alibi', 't5_bias'"):
        GPTConfig(positional="t5")
    with pytest.raises(ValueError, match="attention='sliding_window' cannot take it"):
        GPTConfig(positional="t5_bias", attention="sliding_window")
    with pytest.raises(ValueError, match="relative_buckets must be even.*got relative_buckets=7"):
        GPTConfig(positional="t5_bias", relative_buckets=7)
    with pytest.raises(ValueError, match="relative_max_distance=4"):
        GPTConfig(positional="t5_bias", relative_buckets=8, relative_max_distance=4)
    kernel = SharedBiasAttention(2, 3)
    q = np.zeros((1, 2, 4, 3))
    with pytest.raises(RuntimeError, match="no position bias was set"):
        kernel.forward(q, q, q, causal=True)
    kernel.set_position_bias(np.zeros((1, 2, 4, 5)))
    with pytest.raises(ValueError, match=r"shape \(1, 2, 4, 4\), got \(1, 2, 4, 5\)"):
        kernel.forward(q, q, q, causal=True)


def test_onnx_export_refuses_positions_inside_attention():
    pytest.importorskip("onnx")
    from minitransformer.interop.onnx_graph import gpt_to_onnx
    for positional in ("t5_bias", "rope"):
        model = GPT(GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8, positional=positional))
        with pytest.raises(ValueError, match=f"positional='{positional}' is not exported"):
            gpt_to_onnx(model)
