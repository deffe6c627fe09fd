"""Every attention kernel drops into real models and trains: a causal GPT for the kernels that
support causal masking, a bidirectional encoder for all of them."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention import kernel_names, make_kernel
from minitransformer.blocks import Encoder
from minitransformer.data.batching import get_batch
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.nn.embedding import Embedding
from minitransformer.nn.functional.cross_entropy import cross_entropy_backward, cross_entropy_forward
from minitransformer.nn.linear import Linear
from minitransformer.optim import AdamW

T = 16
# small-sequence options: windows and blocks that fit T = 16
OPTIONS = {
    "bigbird": {"block": 4, "random_blocks": 1},
    "dilated": {"window": 3, "dilation": 2},
    "linformer": {"k": 8},
    "longformer": {"window": 3, "global_tokens": [0]},
    "memory_efficient": {"block_size": 5},
    "nystrom": {"n_landmarks": 4},
    "performer": {"n_features": 32},
    "reformer": {"n_buckets": 4, "chunk_size": 4},
    "sliding_window": {"window": 3},
    "sparse_fixed": {"stride": 4},
    "sparse_strided": {"stride": 4},
}
KERNELS = kernel_names()
_BUILT = {k: make_kernel(k, 2, 8, max_len=T, **OPTIONS.get(k, {})) for k in KERNELS}
CAUSAL = [k for k in KERNELS if _BUILT[k].supports_causal]
BIDIRECTIONAL = [k for k in KERNELS if not getattr(_BUILT[k], "requires_causal", False)]


def test_every_kernel_is_covered():
    assert set(OPTIONS) | {"dense", "linear", "alibi"} >= set(KERNELS)


@pytest.mark.parametrize("name", CAUSAL)
def test_gpt_trains_with_kernel(name, device):
    text_ids = np.tile(np.array([0, 1, 2, 3, 4, 5, 4, 3, 2, 1]), 60)     # a periodic sequence
    cfg = GPTConfig(vocab_size=6, block_size=T, n_layer=1, n_head=2, d_model=16, attention=name,
                    attention_options=OPTIONS.get(name, {}))
    model = GPT(cfg, seed=0).to(device)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(40):
        x, y = get_batch(text_ids, 8, T, rng)
        _, loss = model.forward(backend.to_device(x, device), backend.to_device(y, device))
        model.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("name", BIDIRECTIONAL)
def test_encoder_trains_with_kernel(name, device):
    """Per position, predict the largest token of the sequence (needs information from everywhere)."""
    V, C = 8, 16
    rng = np.random.default_rng(1)
    host = backend.host_rng(0)
    emb = Embedding(V, C, rng=host, std=0.5).to(device)
    enc = Encoder(1, C, 2, attention=name, attention_options=OPTIONS.get(name, {}), max_len=T, rng=host).to(device)
    head = Linear(C, V, rng=host).to(device)
    params = emb.parameters() + enc.parameters() + head.parameters()
    opt = AdamW(params, lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(40):
        x = rng.integers(0, V, (8, T))
        y = np.repeat(x.max(axis=1, keepdims=True), T, axis=1)
        h = enc.forward(emb.forward(backend.to_device(x, device)))
        loss, cache = cross_entropy_forward(head.forward(h), backend.to_device(y, device))
        dlogits, _ = cross_entropy_backward(1.0, cache)
        emb.backward(enc.backward(head.backward(dlogits)))
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("name", CAUSAL)
def test_generation_with_kernel(name):
    """Cached decoding gives the tokens of full recomputation (or falls back to it)."""
    from minitransformer.generate import generate
    cfg = GPTConfig(vocab_size=11, block_size=T, n_layer=2, n_head=2, d_model=16, attention=name,
                    attention_options=OPTIONS.get(name, {}))
    model = GPT(cfg, seed=0).to("cpu", "float64")
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    cached = generate(model, prompt, 10, greedy=True, use_cache=True)
    np.testing.assert_array_equal(cached, generate(model, prompt, 10, greedy=True, use_cache=False))


def test_linformer_refuses_causal_gpt():
    cfg = GPTConfig(vocab_size=6, block_size=T, n_layer=1, n_head=2, d_model=16, attention="linformer",
                    attention_options={"k": 8})
    with pytest.raises(ValueError, match="causal"):
        GPT(cfg).forward(np.zeros((1, 4), np.int64))


def test_unknown_kernel_and_option():
    with pytest.raises(ValueError, match="unknown attention kernel 'flashy'"):
        GPT(GPTConfig(attention="flashy"))
    with pytest.raises(ValueError, match="bad options"):
        GPT(GPTConfig(attention="sliding_window", attention_options={"windw": 3}))
