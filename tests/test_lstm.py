"""RNN and LSTM layers with hand-written BPTT, and the LSTM language model (`--model lstm`)."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.generate import generate
from minitransformer.gradcheck import check_module
from minitransformer.models.lstm import LSTMConfig, LSTMLanguageModel, RecurrentStateCache
from minitransformer.models.registry import build_model
from minitransformer.nn.functional.recurrent import gru_forward, lstm_forward, sigmoid
from minitransformer.nn.recurrent import GRU, LSTM, RNN, LSTMState, gradcheck_lstm_layer


def dev(a, device, dtype=None):
    return backend.to_device(np.asarray(a), device, dtype)


def host(a):
    return backend.to_numpy(a)


# -- gradient checks (float64) --------------------------------------------------------------------
@pytest.mark.parametrize("B,T,C_in,C", [(2, 3, 3, 4), (1, 5, 2, 1), (3, 4, 1, 3)])
def test_lstm_layer_gradcheck(device, B, T, C_in, C):
    """x, h0, c0 and all weights; the output includes c_T, so the gradient entering through the
    final cell state and travelling back along the carry c_t = f c_{t-1} + i g is checked too."""
    result = gradcheck_lstm_layer(device, B, T, C_in, C, seed=30 + T, name="lstm")
    assert result.passed, str(result)
    for key in ("input0", "input1", "input2", "w_x", "w_h", "bias"):
        assert key in result.errors


def test_rnn_layer_gradcheck(device):
    B, T, C = 2, 5, 3
    layer = RNN(2, C, rng=backend.host_rng(1)).to(device, "float64")
    rng = np.random.default_rng(2)
    x, h0 = dev(rng.standard_normal((B, T, 2)), device), dev(rng.standard_normal((B, C)), device)

    def run(m, x_, h_):
        hs, hT = m.forward(x_, h_)
        xp = backend.get_array_module(hs)
        return xp.concatenate([hs.reshape(B, -1), hT], axis=1)               # (B,T*C+C)

    result = check_module("rnn", layer, [x, h0], run=run,
                          backward=lambda m, d: m.backward(d[:, :T * C].reshape(B, T, C), d[:, T * C:]))
    assert result.passed, str(result)


def test_cell_carry_is_the_product_of_forget_gates(device):
    """With W_h = 0, dc_T / dc_0 = prod_t f_t exactly: the carry of BPTT through the cell."""
    T, C = 6, 3
    layer = LSTM(2, C, rng=backend.host_rng(3)).to(device, "float64")
    layer.w_h.data[...] = 0
    xp = backend.xp_for(device)
    x = dev(np.random.default_rng(4).standard_normal((1, T, 2)), device)
    zeros = xp.zeros((1, C))
    gates = host(lstm_forward(x, zeros, zeros, layer.w_x.data, layer.w_h.data, layer.bias.data)[2].gates)
    layer.forward(x)
    _, (dh0, dc0) = layer.backward(xp.zeros((1, T, C)), LSTMState(None, xp.ones((1, C))))
    forget = gates[0, :, C:2 * C]                                              # (T, C) the f block
    np.testing.assert_allclose(host(dc0)[0], forget.prod(axis=0), rtol=1e-12)
    np.testing.assert_allclose(host(dh0), 0, atol=1e-15)                       # W_h = 0: no path into h0


def test_initial_state_gradients_reach_back_over_the_sequence(device):
    """dh0 and dc0 are nonzero and differ for another T: they come through all T steps."""
    layer = LSTM(2, 3, rng=backend.host_rng(5)).to(device, "float64")
    rng = np.random.default_rng(6)
    x = dev(rng.standard_normal((2, 4, 2)), device)
    h0, c0 = dev(rng.standard_normal((2, 3)), device), dev(rng.standard_normal((2, 3)), device)
    hs, _ = layer.forward(x, LSTMState(h0, c0))
    dhs = np.zeros((2, 4, 3))
    dhs[:, -1] = 1                                                              # only the last output
    _, (dh0, dc0) = layer.backward(dev(dhs, device))
    assert np.abs(host(dh0)).min() > 0 and np.abs(host(dc0)).min() > 0


def test_forget_gate_bias_and_gate_order(device):
    layer = LSTM(3, 4, rng=backend.host_rng(7))
    b = host(layer.bias.data)
    np.testing.assert_array_equal(b[4:8], 1.0)                                 # f block of i | f | g | o
    np.testing.assert_array_equal(np.delete(b, range(4, 8)), 0.0)
    assert layer.w_x.shape == (3, 16) and layer.w_h.shape == (4, 16)
    assert "gates=ifgo" in layer.extra_repr()


def test_lstm_matches_torch_gate_order():
    """Against torch.nn.LSTM with the same weights: the gate order i, f, g, o and the values."""
    torch = pytest.importorskip("torch")
    C_in, C, B, T = 3, 4, 2, 5
    layer = LSTM(C_in, C, rng=backend.host_rng(8)).to("cpu", "float64")
    ref = torch.nn.LSTM(C_in, C, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.from_numpy(layer.w_x.data.T.copy()))     # torch: (4C, C_in)
        ref.weight_hh_l0.copy_(torch.from_numpy(layer.w_h.data.T.copy()))
        ref.bias_ih_l0.copy_(torch.from_numpy(layer.bias.data.copy()))
        ref.bias_hh_l0.zero_()
    x = np.random.default_rng(9).standard_normal((B, T, C_in))
    hs, (hT, cT) = layer.forward(x)
    xt = torch.from_numpy(x).requires_grad_()
    out, (h_ref, c_ref) = ref(xt)
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cT, c_ref[0].detach().numpy(), rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(10).standard_normal((B, T, C))
    (out * torch.from_numpy(dout)).sum().backward()
    dx, _ = layer.backward(dout)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.w_h.grad, ref.weight_hh_l0.grad.numpy().T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("B,T,C", [(2, 3, 4), (1, 5, 1)])
def test_gru_layer_gradcheck(device, B, T, C):
    layer = GRU(2, C, rng=backend.host_rng(13)).to(device, "float64")
    rng = np.random.default_rng(14)
    layer.bias.data[...] = dev(rng.standard_normal(3 * C), device)                # nonzero biases
    layer.bias_hn.data[...] = dev(rng.standard_normal(C), device)
    x, h0 = dev(rng.standard_normal((B, T, 2)), device), dev(rng.standard_normal((B, C)), device)

    def run(m, x_, h_):
        hs, hT = m.forward(x_, h_)
        xp = backend.get_array_module(hs)
        return xp.concatenate([hs.reshape(B, -1), hT], axis=1)

    result = check_module("gru", layer, [x, h0], run=run,
                          backward=lambda m, d: m.backward(d[:, :T * C].reshape(B, T, C), d[:, T * C:]))
    assert result.passed, str(result)


def test_gru_carry_is_the_product_of_update_gates(device):
    """With W_h = 0, dh_T / dh_0 = prod_t z_t: the GRU's carry."""
    T, C = 5, 3
    layer = GRU(2, C, rng=backend.host_rng(15)).to(device, "float64")
    layer.w_h.data[...] = 0
    xp = backend.xp_for(device)
    x = dev(np.random.default_rng(16).standard_normal((1, T, 2)), device)
    zeros = xp.zeros((1, C))
    gates = host(gru_forward(x, zeros, layer.w_x.data, layer.w_h.data, layer.bias.data,
                             layer.bias_hn.data)[1].gates)
    layer.forward(x)
    _, dh0 = layer.backward(xp.zeros((1, T, C)), xp.ones((1, C)))
    np.testing.assert_allclose(host(dh0)[0], gates[0, :, C:2 * C].prod(axis=0), rtol=1e-12)


def test_gru_matches_torch_gate_order():
    """Against torch.nn.GRU: gate order r, z, n and the reset gate after the recurrent product."""
    torch = pytest.importorskip("torch")
    C_in, C, B, T = 3, 4, 2, 5
    layer = GRU(C_in, C, rng=backend.host_rng(17)).to("cpu", "float64")
    rng = np.random.default_rng(18)
    layer.bias.data[...] = rng.standard_normal(3 * C)
    layer.bias_hn.data[...] = rng.standard_normal(C)
    ref = torch.nn.GRU(C_in, C, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.from_numpy(layer.w_x.data.T.copy()))     # torch: (3C, C_in)
        ref.weight_hh_l0.copy_(torch.from_numpy(layer.w_h.data.T.copy()))
        ref.bias_ih_l0.copy_(torch.from_numpy(layer.bias.data.copy()))
        ref.bias_hh_l0.copy_(torch.from_numpy(np.concatenate([np.zeros(2 * C), layer.bias_hn.data])))
    x = rng.standard_normal((B, T, C_in))
    hs, _ = layer.forward(x)
    xt = torch.from_numpy(x).requires_grad_()
    out, _ = ref(xt)
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal((B, T, C))
    (out * torch.from_numpy(dout)).sum().backward()
    dx, _ = layer.backward(dout)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.w_h.grad, ref.weight_hh_l0.grad.numpy().T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.bias_hn.grad, ref.bias_hh_l0.grad.numpy()[2 * C:], rtol=1e-10)


def test_sigmoid_is_stable():
    xp = backend.xp_for("cpu")
    with np.errstate(over="raise"):
        s = sigmoid(np.array([-1000.0, 0.0, 1000.0]), xp)
    np.testing.assert_array_equal(s, [0.0, 0.5, 1.0])


def test_chunked_sequence_equals_whole(device):
    """Running T steps in two chunks, carrying (h, c), equals one run of T steps."""
    layer = LSTM(2, 3, rng=backend.host_rng(11)).to(device, "float64")
    x = dev(np.random.default_rng(12).standard_normal((2, 7, 2)), device)
    whole, (h, c) = layer.forward(x)
    first, state = layer.forward(x[:, :3])
    second, (h2, c2) = layer.forward(x[:, 3:], state)
    np.testing.assert_allclose(host(second), host(whole)[:, 3:], rtol=1e-12)
    np.testing.assert_allclose(host(c2), host(c), rtol=1e-12)


def test_lstm_errors(device):
    layer = LSTM(3, 4).to(device)
    with pytest.raises(ValueError, match="LSTM input"):
        layer.forward(dev(np.zeros((2, 5, 2), np.float32), device))
    with pytest.raises(ValueError, match=r"LSTM initial c.*\(2, 4\)"):
        layer.forward(dev(np.zeros((2, 5, 3), np.float32), device),
                      LSTMState(None, dev(np.zeros((3, 4), np.float32), device)))
    with pytest.raises(RuntimeError, match="no forward pass"):
        LSTM(3, 4).backward(np.zeros((1, 1, 4), np.float32))
    with pytest.raises(ValueError, match="hidden_size"):
        LSTM(3, 0)


# -- the language model ----------------------------------------------------------------------------
def test_lstm_model_gradcheck(device):
    model = LSTMLanguageModel(LSTMConfig(vocab_size=7, block_size=6, n_layer=2, d_model=3), seed=1)
    model = model.to(device, "float64")
    rng = np.random.default_rng(2)
    idx, targets = dev(rng.integers(0, 7, (2, 3)), device), dev(rng.integers(0, 7, (2, 3)), device)
    result = check_module("lstm lm", model, [idx, targets], run=lambda m, i, t: m.forward(i, t)[1],
                          backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5)
    assert result.passed, str(result)


def test_registered_and_cached_decoding_equals_recomputation(device):
    model = build_model("lstm", {"vocab_size": 11, "block_size": 16, "n_layer": 2, "d_model": 8}, seed=3)
    model = model.to(device, "float64")
    assert model.kind == "lstm" and model.can_generate
    prompt = dev(np.random.default_rng(4).integers(0, 11, (2, 3)), device)
    cached = generate(model, prompt, 10, greedy=True, use_cache=True)
    fresh = generate(model, prompt, 10, greedy=True, use_cache=False)
    np.testing.assert_array_equal(host(cached), host(fresh))
    # the state cache: logits of the last token equal those of the full recomputation
    caches = model.make_kv_caches(2)
    with model.no_grad():
        model.forward(cached[:, :7], kv_caches=caches)
        step, _ = model.forward(cached[:, 7:8], kv_caches=caches)
        full, _ = model.forward(cached[:, :8])
    assert caches[0].length == 8
    np.testing.assert_allclose(host(step)[:, -1], host(full)[:, -1], rtol=1e-12)


def test_model_errors(device):
    model = LSTMLanguageModel(LSTMConfig(vocab_size=5, block_size=4, n_layer=1, d_model=4)).to(device)
    with pytest.raises(ValueError, match="token"):
        model.forward(dev(np.array([[1, 7]]), device))
    with pytest.raises(ValueError, match="batch 2"):
        model.forward(dev(np.array([[1, 2]]), device), kv_caches=[RecurrentStateCache(2)])
    with pytest.raises(TypeError, match="RecurrentStateCache"):
        model.forward(dev(np.array([[1, 2]]), device), kv_caches=[object()])
    with pytest.raises(ValueError, match="dropout"):
        LSTMConfig(dropout=1.0)


def test_train_preset_tiny_learns(tmp_path):
    """`minitransformer train --model lstm --preset tiny` through the one training loop."""
    from minitransformer.presets import load_run_config, start_run
    family, model_cfg, train_cfg = load_run_config("lstm", "tiny", overrides={"train": {"steps": 30}})
    result = start_run(family, model_cfg, train_cfg, out_dir=tmp_path / "run", progress=False,
                       log=lambda *a: None)
    assert result["model"].kind == "lstm"
    assert result["history"][-1]["val_loss"] < result["baseline"] + 0.1
