"""The ONNX export of a GPT (interop/onnx_graph.py) run by onnxruntime (interop/onnx_run.py):
logits equal ours to 1e-5, greedy decoding equal token for token, int8 QDQ weights equal our int8
model. Needs onnx and onnxruntime (the `onnx` extra, part of `test`)."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from minitransformer.cli import main  # noqa: E402
from minitransformer.compress.lowrank import factorize_model  # noqa: E402
from minitransformer.compress.quantize import quantize_model  # noqa: E402
from minitransformer.generate import generate  # noqa: E402
from minitransformer.interop.hf_import import import_hf  # noqa: E402
from minitransformer.interop.onnx_graph import OPSET, gpt_to_onnx  # noqa: E402
from minitransformer.interop.onnx_run import greedy_generate, onnx_logits, onnx_session  # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig  # noqa: E402

FOLDER = Path(__file__).parent / "fixtures" / "hf_gpt2_tiny"


def random_gpt(seed=0, **fields):
    """A small GPT whose weights, biases and norms are all far from their initial values."""
    cfg = dict(vocab_size=37, block_size=12, n_layer=2, n_head=2, d_model=16)
    model = GPT(GPTConfig(**{**cfg, **fields}), seed=seed)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (p.data + rng.standard_normal(p.shape) * 0.3).astype(np.float32)
    return model.eval()


def ours(model, ids):
    with model.no_grad():
        return model.forward(ids)[0]


@pytest.mark.parametrize("fields", [
    {},                                                                   # pre-LN, learned, exact GELU
    {"norm": "post", "positional": "sinusoidal", "activation": "relu", "bias": False},
    {"activation": "gelu_tanh", "norm_eps": 1e-3, "d_ff": 24, "n_head": 4},
    {"attention": "memory_efficient"},
])
def test_onnxruntime_logits_equal_ours(fields):
    model = random_gpt(**fields)
    proto = gpt_to_onnx(model)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)] and OPSET == 17
    session = onnx_session(proto)
    rng = np.random.default_rng(1)
    for shape in [(2, 5), (1, 1), (3, 12)]:                               # T = 1 and T = block_size too
        ids = rng.integers(0, 37, shape)
        np.testing.assert_allclose(onnx_logits(session, ids), ours(model, ids), rtol=0, atol=1e-5)


def test_imported_gpt2_through_onnx_matches_transformers_fixture():
    model, _ = import_hf(FOLDER)
    expected = np.load(FOLDER / "expected.npz")
    logits = onnx_logits(onnx_session(gpt_to_onnx(model.eval())), expected["input_ids"])
    np.testing.assert_allclose(logits, expected["logits"], rtol=0, atol=1e-5)


def test_greedy_generation_through_onnxruntime_equals_ours_token_for_token():
    model = random_gpt(seed=3)
    session = onnx_session(gpt_to_onnx(model))
    prompt = np.random.default_rng(4).integers(0, 37, (2, 3))
    # within the context: our KV-cache decoding; past it, the same cropping as use_cache=False
    np.testing.assert_array_equal(greedy_generate(session, prompt, 9, 12), generate(model, prompt, 9, greedy=True))
    np.testing.assert_array_equal(greedy_generate(session, prompt, 20, 12),
                                  generate(model, prompt, 20, greedy=True, use_cache=False))


@pytest.mark.parametrize("fields", [{}, {"norm": "post", "positional": "sinusoidal", "bias": False}])
def test_kv_cache_graph_step_by_step_equals_our_cached_forward(fields):
    model = random_gpt(seed=12, **fields)
    session = onnx_session(gpt_to_onnx(model, kv_cache=True))
    names = [i.name for i in session.get_inputs() if i.name.startswith("past_")]
    assert names == [f"past_{p}.{i}" for i in range(2) for p in ("key", "value")]
    ids = np.random.default_rng(13).integers(0, 37, (2, 12))
    caches, feeds = model.make_kv_caches(2), {n: np.zeros((2, 2, 0, 8), np.float32) for n in names}
    for start, stop in ((0, 5), (5, 6), (6, 12)):                        # a prompt, one token, the rest
        logits, *presents = session.run(None, {"input_ids": ids[:, start:stop], **feeds})
        with model.no_grad():
            expected = model.forward(ids[:, start:stop], kv_caches=caches)[0]
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
        assert presents[0].shape == (2, 2, stop, 8)
        np.testing.assert_allclose(presents[0], caches[0].keys, rtol=0, atol=1e-5)
        feeds = dict(zip(names, presents))


def test_greedy_generation_with_the_graphs_kv_cache_equals_ours_past_the_context():
    model = random_gpt(seed=14)
    quantize_model(model, "int8")                                          # the cache works for QDQ too
    session = onnx_session(gpt_to_onnx(model, kv_cache=True))
    prompt = np.random.default_rng(15).integers(0, 37, (3, 4))
    np.testing.assert_array_equal(greedy_generate(session, prompt, 30, 12), generate(model, prompt, 30, greedy=True))


def test_int8_qdq_export_equals_our_int8_model_and_is_smaller():
    model = random_gpt(seed=5, d_model=32, n_head=4, vocab_size=11)
    float_bytes = len(gpt_to_onnx(model).SerializeToString())
    quantize_model(model, "int8")
    proto = gpt_to_onnx(model)
    int8 = [i for i in proto.graph.initializer if i.data_type == 3]       # TensorProto.INT8
    assert sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) == 8 and len(int8) >= 8
    assert len(proto.SerializeToString()) < 0.5 * float_bytes             # the Linears hold most weights
    ids = np.random.default_rng(6).integers(0, 11, (2, 12))
    np.testing.assert_allclose(onnx_logits(onnx_session(proto), ids), ours(model, ids), rtol=0, atol=1e-5)
    # onnxruntime's int8-activation kernel: close to, but not equal to, the dequantised matmul
    approx = onnx_logits(onnx_session(proto, int8_activations=True), ids)
    assert np.abs(approx - ours(model, ids)).max() < 0.2 * np.abs(ours(model, ids)).max()


def test_low_rank_layers_export():
    model = random_gpt(seed=8)
    factorize_model(model, rank=4)
    ids = np.random.default_rng(9).integers(0, 37, (2, 7))
    np.testing.assert_allclose(onnx_logits(onnx_session(gpt_to_onnx(model)), ids), ours(model, ids), rtol=0, atol=1e-5)


def test_what_cannot_be_exported_is_refused():
    with pytest.raises(ValueError, match="attention kernel 'sliding_window' is not exported"):
        gpt_to_onnx(random_gpt(attention="sliding_window", attention_options={"window": 4}))
    model = random_gpt()
    quantize_model(model, "int8-dynamic")
    with pytest.raises(ValueError, match="QuantizedLinear \\(mode 'int8-dynamic'\\)"):
        gpt_to_onnx(model)
    from minitransformer.models.registry import build_model
    with pytest.raises(ValueError, match="supports the 'gpt' family, got a 'classifier'"):
        gpt_to_onnx(build_model("classifier", {}))
    with pytest.raises(ValueError, match=r"expected integer token ids of shape \(B, T\)"):
        onnx_logits(onnx_session(gpt_to_onnx(random_gpt())), np.zeros(3, np.int64))


def test_export_cli_writes_and_checks_the_file(tmp_path, capsys):
    run = tmp_path / "gpt2"
    assert main(["import-hf", str(FOLDER), "--out", str(run)]) == 0
    for extra, name in (([], "model.onnx"), (["--quantize", "int8"], "model-int8.onnx"),
                        (["--quantize", "int8", "--kv-cache"], "model-int8-kv.onnx")):
        assert main(["export", "--checkpoint", str(run), "--format", "onnx", *extra]) == 0
        printed = capsys.readouterr().out
        assert (run / name).is_file() and "opset 17" in printed
        assert float(printed.rsplit("difference| ", 1)[1]) < 1e-5
    assert main(["export", "--checkpoint", str(run), "--format", "hf", "--quantize", "int8"]) == 2


def test_export_cli_names_the_missing_packages(tmp_path, capsys, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert main(["export", "--checkpoint", str(tmp_path), "--format", "onnx"]) == 2
    assert "needs onnxruntime: pip install 'minitransformer[onnx]'" in capsys.readouterr().err


@pytest.mark.parametrize("merged", [False, True])
def test_lora_adapters_are_folded_into_the_exported_weights(merged):
    from minitransformer.compress.lora import apply_lora, lora_layers, merge_lora
    model = random_gpt(seed=10)
    apply_lora(model, rank=2)
    rng = np.random.default_rng(11)
    for layer in lora_layers(model):                                  # B starts at zero: make the update real
        layer.lora_b.data = (rng.standard_normal(layer.lora_b.shape) * 0.3).astype(np.float32)
    if merged:
        merge_lora(model)
    ids = rng.integers(0, 37, (2, 6))
    np.testing.assert_allclose(onnx_logits(onnx_session(gpt_to_onnx(model)), ids), ours(model, ids), rtol=0, atol=1e-5)
