"""Feed-forward, encoder/decoder blocks and stacks: structure, KV-cache decoding, dropout, errors."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention import KVCache
from minitransformer.blocks import Decoder, DecoderBlock, Encoder, EncoderBlock, FeedForward


def np_(a):
    return backend.to_numpy(a)


def rand(device, seed, *shapes):
    rng = np.random.default_rng(seed)
    return [backend.to_device(rng.standard_normal(s), device) for s in shapes]


def test_feed_forward_shapes_and_relu(device):
    ffn = FeedForward(4, 9, activation="relu", rng=backend.host_rng(0)).to(device, "float64")
    (x,) = rand(device, 0, (2, 3, 4))
    y = ffn(x)
    w1, b1, w2, b2 = (np_(p.data) for p in (ffn.fc1.weight, ffn.fc1.bias, ffn.fc2.weight, ffn.fc2.bias))
    np.testing.assert_allclose(np_(y), np.maximum(np_(x) @ w1 + b1, 0) @ w2 + b2, rtol=1e-12)
    assert ffn.backward(y).shape == (2, 3, 4)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_encoder_block_residual_structure(device, norm):
    block = EncoderBlock(8, 2, 16, norm=norm, rng=backend.host_rng(1)).to(device, "float64")
    (x,) = rand(device, 1, (2, 5, 8))
    y = np_(block(x, causal=True))
    with block.no_grad():
        if norm == "pre":
            x1 = x + block.attn(block.ln1(x), causal=True)
            want = x1 + block.ffn(block.ln2(x1))
        else:
            x1 = block.ln1(x + block.attn(x, causal=True))
            want = block.ln2(x1 + block.ffn(x1))
    np.testing.assert_allclose(y, np_(want), rtol=1e-12, atol=1e-12)


def test_causal_block_ignores_the_future(device):
    block = EncoderBlock(8, 2, rng=backend.host_rng(2)).to(device, "float64")
    (x,) = rand(device, 2, (1, 6, 8))
    y = np_(block(x, causal=True))
    x2 = x.copy()
    x2[:, 4:] += 10.0                          # change the last two tokens only
    y2 = np_(block(x2, causal=True))
    np.testing.assert_allclose(y2[:, :4], y[:, :4], rtol=1e-12, atol=1e-12)
    assert not np.allclose(y2[:, 4:], y[:, 4:])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_encoder_stack_kv_cache_decoding(device, norm):
    enc = Encoder(3, 8, 2, norm=norm, rng=backend.host_rng(3)).to(device, "float64")
    assert (enc.ln_f is None) == (norm == "post") and len(enc.blocks) == 3
    (x,) = rand(device, 3, (2, 7, 8))
    full = np_(enc(x, causal=True))
    caches = [KVCache(7) for _ in enc.blocks]
    with enc.no_grad():
        steps = [np_(enc(x[:, :3], causal=True, kv_caches=caches))]
        steps += [np_(enc(x[:, t:t + 1], causal=True, kv_caches=caches)) for t in range(3, 7)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_decoder_stack_kv_cache_decoding(device, norm):
    dec = Decoder(2, 8, 4, norm=norm, rng=backend.host_rng(4)).to(device, "float64")
    x, mem = rand(device, 4, (2, 5, 8), (2, 6, 8))
    mem_pad = backend.to_device(~np.array([[1] * 6, [1, 1, 1, 0, 0, 0]], bool), device)   # True on padding
    full = np_(dec(x, mem, memory_padding_mask=mem_pad))
    caches = [KVCache(5) for _ in dec.blocks]
    cross = [KVCache(6) for _ in dec.blocks]
    with dec.no_grad():
        steps = [np_(dec(x[:, t:t + 1], mem, memory_padding_mask=mem_pad, kv_caches=caches,
                         cross_kv_caches=cross)) for t in range(5)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)


def test_decoder_backward_returns_memory_gradient(device):
    block = DecoderBlock(8, 2, rng=backend.host_rng(5)).to(device, "float64")
    x, mem = rand(device, 5, (2, 3, 8), (2, 4, 8))
    y = block(x, mem)
    dx, dmem = block.backward(backend.to_device(np.ones(y.shape), device))
    assert dx.shape == x.shape and dmem.shape == mem.shape
    # the decoder's output does not depend on padded memory positions
    pad = backend.to_device(~np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool), device)   # True on padding
    block(x, mem, memory_padding_mask=pad)
    _, dmem = block.backward(backend.to_device(np.ones(y.shape), device))
    assert np.all(np_(dmem)[0, 2:] == 0)


def test_dropout_train_and_eval(device):
    enc = Encoder(2, 8, 2, dropout=0.5, rng=backend.host_rng(6)).to(device, "float64")
    same = Encoder(2, 8, 2, dropout=0.0, rng=backend.host_rng(6)).to(device, "float64")
    (x,) = rand(device, 6, (2, 4, 8))
    enc.eval()
    np.testing.assert_allclose(np_(enc(x)), np_(same(x)), rtol=1e-12)
    enc.train()
    a, b = np_(enc(x)), np_(enc(x))
    assert not np.allclose(a, b)                      # fresh masks each call
    assert enc.backward(backend.to_device(np.ones(a.shape), device)).shape == x.shape


def test_float32_training_step_shapes(device):
    enc = Encoder(2, 16, 4, norm="pre", activation="gelu_tanh", rng=backend.host_rng(7)).to(device)
    x = backend.to_device(np.random.default_rng(7).standard_normal((3, 10, 16)).astype(np.float32), device)
    y = enc(x, causal=True)
    dx = enc.backward(y)
    assert y.dtype == np.float32 and dx.dtype == np.float32 and dx.shape == x.shape
    names = [n for n, _ in enc.named_parameters()]
    assert "blocks.0.attn.qkv.weight" in names and "blocks.1.ffn.fc2.bias" in names and "ln_f.weight" in names
    assert all(np.isfinite(np_(p.grad)).all() for p in enc.parameters())


def test_errors(device):
    with pytest.raises(ValueError, match="norm placement"):
        EncoderBlock(8, 2, norm="middle")
    with pytest.raises(ValueError, match="activation"):
        FeedForward(8, 16, activation="swish")
    with pytest.raises(ValueError, match="n_layer"):
        Encoder(0, 8, 2)
    with pytest.raises(ValueError, match="not divisible"):
        DecoderBlock(8, 3)
    enc = Encoder(2, 8, 2).to(device)
    x = backend.to_device(np.zeros((1, 2, 8), np.float32), device)
    with pytest.raises(ValueError, match="one KV cache per block"):
        enc(x, kv_caches=[KVCache(4)])
    dec = Decoder(1, 8, 2).to(device)
    with pytest.raises(ValueError, match="needs context"):
        dec(x, None)
