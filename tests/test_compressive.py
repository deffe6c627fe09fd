"""The Compressive Transformer: compressors (values and gradients), the memory's bookkeeping, the
reconstruction loss reaching only the compressor, decoding, and clear errors."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.gradcheck import registered
from minitransformer.models.compressive import CompressiveConfig, CompressiveTransformer
from minitransformer.nn.compressor import (ConvCompressor, conv_compress_forward, make_compressor,
                                           mean_pool_backward, mean_pool_forward)


def _model(device, **kw):
    cfg = CompressiveConfig(**{"vocab_size": 11, "segment_len": 4, "mem_len": 4, "cmem_len": 3,
                               "compression_rate": 2, "n_layer": 2, "n_head": 2, "d_model": 8, **kw})
    return CompressiveTransformer(cfg, seed=0).to(device, "float64")


def _ids(device, shape, seed=0):
    return backend.to_device(np.random.default_rng(seed).integers(0, 11, shape), device)


@pytest.mark.parametrize("name", [n for n in registered() if "compressive" in n])
def test_registered_gradchecks(device, name):
    for result in registered()[name](device):
        assert result.passed, str(result)


def test_mean_pool_and_its_gradient(device):
    x = backend.to_device(np.arange(24, dtype=float).reshape(1, 6, 4), device)
    y, rate = mean_pool_forward(x, 3)
    np.testing.assert_allclose(backend.to_numpy(y)[0, 1], np.arange(12, 24).reshape(3, 4).mean(0))
    dx = backend.to_numpy(mean_pool_backward(backend.xp_for(device).ones((1, 2, 4)), rate))
    np.testing.assert_allclose(dx, np.full((1, 6, 4), 1 / 3))


def test_conv_compressor_starts_near_mean_pooling(device):
    comp = ConvCompressor(4, 2, rng=backend.host_rng(0), noise=0.0).to(device, "float64")
    x = backend.to_device(np.random.default_rng(1).standard_normal((2, 6, 4)), device)
    np.testing.assert_allclose(backend.to_numpy(comp(x)), backend.to_numpy(mean_pool_forward(x, 2)[0]),
                               atol=1e-12)
    w = backend.to_device(np.random.default_rng(2).standard_normal((8, 4)), device)
    y, _ = conv_compress_forward(x, w, backend.xp_for(device).zeros(4), 2)
    host = backend.to_numpy(x)
    direct = host[:, 2] @ backend.to_numpy(w)[:4] + host[:, 3] @ backend.to_numpy(w)[4:]   # slot 1: rows 2, 3
    np.testing.assert_allclose(backend.to_numpy(y)[:, 1], direct, rtol=1e-12)


def test_memory_bookkeeping(device):
    """mem keeps mem_len rows; evicted rows enter cmem c at a time, and cmem keeps cmem_len slots;
    with mean pooling the slots are exactly the means of the evicted layer inputs."""
    model = _model(device, compression="mean")
    idx = _ids(device, (2, 20))
    memory, history = None, []
    with model.no_grad():
        for s in range(5):
            before = memory
            _, _, memory = model.forward_segment(idx[:, 4 * s:4 * s + 4], memory)
            history.append((memory.mem[0].shape[1], memory.cmem[0].shape[1]))
            if s == 1:                                   # segment 0's inputs are evicted now
                expect = mean_pool_forward(before.mem[0], 2)[0]
                np.testing.assert_allclose(backend.to_numpy(memory.cmem[0]), backend.to_numpy(expect))
    assert history == [(4, 0), (4, 2), (4, 3), (4, 3), (4, 3)]


def test_compressed_memory_changes_the_output(device):
    model = _model(device)
    idx = _ids(device, (1, 16))
    with model.no_grad():
        memory = None
        for s in range(3):
            _, _, memory = model.forward_segment(idx[:, 4 * s:4 * s + 4], memory)
        with_c, _, _ = model.forward_segment(idx[:, 12:], memory)
        empty = [m[:, :0] for m in memory.cmem]
        without, _, _ = model.forward_segment(idx[:, 12:], type(memory)(memory.mem, empty))
    assert not np.allclose(backend.to_numpy(with_c), backend.to_numpy(without))


def test_reconstruction_trains_only_the_compressor(device):
    """The compressor gets a gradient (nonzero) only from the reconstruction loss; with
    recon_weight 0 it gets none, and every other gradient is the same either way."""
    grads = {}
    for weight in (1.0, 0.0):
        model = _model(device, recon_weight=weight)
        idx = _ids(device, (2, 13))
        with model.no_grad():
            _, _, memory = model.forward_segment(idx[:, :4], None)
        model.zero_grad()
        model.forward_segment(idx[:, 4:8], memory, idx[:, 5:9])
        assert model.reconstruction_loss > 0
        model.backward()
        grads[weight] = {n: backend.to_numpy(p.grad).copy() for n, p in model.named_parameters()}
    for name, g in grads[1.0].items():
        if name.startswith("compressors."):
            assert np.abs(g).max() > 0 and np.abs(grads[0.0][name]).max() == 0, name
        else:
            np.testing.assert_array_equal(g, grads[0.0][name])


def test_no_reconstruction_in_evaluation(device):
    model = _model(device).eval()
    idx = _ids(device, (1, 8))
    _, _, memory = model.forward_segment(idx[:, :4], None)
    model.forward_segment(idx[:, 4:], memory)
    assert model.reconstruction_loss is None


def test_decoding_through_the_memory(device):
    from minitransformer.generate import generate
    model = _model(device)
    idx = _ids(device, (2, 3))
    out = generate(model, idx, 20, greedy=True)
    assert out.shape == (2, 23)


def test_bad_settings_are_refused(device):
    with pytest.raises(ValueError, match="compression must be one of"):
        CompressiveConfig(compression="max")
    with pytest.raises(ValueError, match="compression_rate must be an integer >= 1"):
        CompressiveConfig(compression_rate=0)
    with pytest.raises(ValueError, match="unknown compression 'max'"):
        make_compressor("max", 4, 2)
    with pytest.raises(ValueError, match="5 memories cannot be compressed at rate 2"):
        mean_pool_forward(backend.xp_for(device).zeros((1, 5, 3)), 2)
    model = _model(device)
    with pytest.raises(TypeError, match="CompressiveMemory"):
        model.forward_segment(_ids(device, (1, 4)), [None, None])


def test_rate_one_is_transformer_xl_with_a_longer_memory(device):
    """c = 1 with mean pooling keeps the evicted memories as they are: the model is then a
    Transformer-XL with memory M + N_cm (same weights, same logits)."""
    from minitransformer.models.transformer_xl import TransformerXL, TransformerXLConfig
    comp = _model(device, compression="mean", compression_rate=1, cmem_len=6)
    xl = TransformerXL(TransformerXLConfig(vocab_size=11, segment_len=4, mem_len=10, n_layer=2, n_head=2,
                                           d_model=8)).to(device, "float64")
    xl.load_state_dict(comp.state_dict())
    idx = _ids(device, (2, 20))
    with comp.no_grad(), xl.no_grad():
        mc = mx = None
        for s in range(5):
            a, _, mc = comp.forward_segment(idx[:, 4 * s:4 * s + 4], mc)
            b, _, mx = xl.forward_segment(idx[:, 4 * s:4 * s + 4], mx)
            np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-10, atol=1e-12)
    assert mc.cmem[0].shape[1] == 6 and mx[0].shape[1] == 10
