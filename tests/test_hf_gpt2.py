"""Hugging Face GPT-2 in and out (interop/hf_*.py). The fixture tests need neither torch nor
transformers: tests/fixtures/hf_gpt2_tiny holds a tiny random GPT-2 saved by transformers and the
logits transformers computed (tests/fixtures/make_hf_fixtures.py regenerates it). The live tests
load the same folder, and our exports, with transformers when it is installed."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minitransformer import backend
from minitransformer.checkpoint import load_model, tokenizer_of
from minitransformer.cli import main
from minitransformer.interop.hf_export import export_hf
from minitransformer.interop.hf_import import import_hf
from minitransformer.models.gpt import GPT, GPTConfig

FOLDER = Path(__file__).parent / "fixtures" / "hf_gpt2_tiny"
EXPECTED = np.load(FOLDER / "expected.npz")


def logits_of(model, ids):
    model.eval()
    with model.no_grad():
        logits, _ = model.forward(backend.to_device(ids, model.device))
    return backend.to_numpy(logits)


def test_fixture_is_small():
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) < 1_000_000


def test_import_matches_transformers_logits(device):
    model, tok = import_hf(FOLDER, device)
    assert model.config.norm_eps == 1e-4 and model.config.activation == "gelu_tanh"
    assert tok.vocab_size == model.config.vocab_size == 400
    np.testing.assert_allclose(logits_of(model, EXPECTED["input_ids"]), EXPECTED["logits"], rtol=0, atol=1e-5)


def test_import_hf_writes_a_checkpoint_that_generate_uses(tmp_path, capsys):
    run = tmp_path / "gpt2"
    assert main(["import-hf", str(FOLDER), "--out", str(run)]) == 0
    model, meta = load_model(run)
    assert meta["source"]["model_type"] == "gpt2" and meta["tokenizer"]["type"] == "bpe"
    np.testing.assert_allclose(logits_of(model, EXPECTED["input_ids"]), EXPECTED["logits"], rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(run), "--prompt", "Hello world", "--greedy",
                 "--max-new-tokens", "5"]) == 0
    printed = capsys.readouterr().out
    tok = tokenizer_of(meta)
    prompt = tok.encode("Hello world")
    from minitransformer.generate import generate
    expected = generate(model, prompt[None].astype(np.int64), 5, greedy=True)[0]
    assert tok.decode(expected) in printed
    assert main(["import-hf", str(FOLDER), "--out", str(run)]) == 2              # no silent overwrite
    assert main(["import-hf", str(FOLDER), "--out", str(run), "--overwrite"]) == 0


def test_export_then_import_gives_the_same_tensors(tmp_path):
    model, tok = import_hf(FOLDER)
    written = export_hf(model, tok, tmp_path / "out")
    assert {p.name for p in written} == {"config.json", "model.safetensors", "vocab.json", "merges.txt"}
    theirs, ours = load_file(str(FOLDER / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(ours) == set(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name])
    again, tok2 = import_hf(tmp_path / "out")
    assert again.describe() == model.describe() and tok2.to_dict() == tok.to_dict()


def _copy(tmp_path, edit_config=None, edit_tensors=None):
    folder = tmp_path / "folder"
    shutil.copytree(FOLDER, folder)
    if edit_config:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    if edit_tensors:
        tensors = load_file(str(folder / "model.safetensors"))
        edit_tensors(tensors)
        save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("edit_config, edit_tensors, message", [
    (lambda c: c.update(model_type="t5"), None, r"model_type 't5' cannot be imported; supported: \['bert', 'gpt2'\]"),
    (lambda c: c.update(activation_function="silu"), None, "activation_function='silu' is not supported"),
    (lambda c: c.update(scale_attn_by_inverse_layer_idx=True), None, "scale_attn_by_inverse_layer_idx"),
    (lambda c: c.update(n_layer=3), None, r"missing, e.g. \['h.2.ln_1.weight'"),
    (lambda c: c.update(vocab_size=401), None, r"shape"),                  # the table has 400 rows
    (lambda c: c.update(vocab_size=399),
     lambda t: t.update({"transformer.wte.weight": t["transformer.wte.weight"][:399].copy()}),
     "the tokenizer has 400 tokens but the model's vocab_size is only 399"),
    (None, lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"), r"missing, e.g. \['h.1.mlp.c_fc.bias'\]"),
    (None, lambda t: t.update({"transformer.h.0.attn.extra": np.zeros(3, np.float32)}), "unexpected tensor"),
    (None, lambda t: t.update({"lm_head.weight": np.ones((400, 32), np.float32)}), "untied head"),
    (None, lambda t: t.update({"transformer.h.0.attn.c_attn.weight": np.zeros((96, 32), np.float32)}), "shape"),
])
def test_bad_folders_are_refused(tmp_path, edit_config, edit_tensors, message):
    with pytest.raises(ValueError, match=message):
        import_hf(_copy(tmp_path, edit_config, edit_tensors))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        import_hf(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no model.safetensors; found \['pytorch_model.bin'\]"):
        import_hf(tmp_path)


def test_models_without_a_gpt2_layout_are_not_exported(tmp_path):
    for field in ({"norm": "post"}, {"positional": "sinusoidal"}, {"bias": False}):
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8, **field))
        with pytest.raises(ValueError, match=f"{next(iter(field))}=.* has no GPT-2 equivalent"):
            export_hf(model, None, tmp_path / "x")
    from minitransformer.compress.quantize import quantize_model
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8))
    quantize_model(model, "int8")
    with pytest.raises(ValueError, match="QuantizedLinear; only plain Linear"):
        export_hf(model, None, tmp_path / "x")


# -- live against transformers ------------------------------------------------------------------
def test_live_transformers_reads_the_fixture_like_we_do():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref = transformers.GPT2LMHeadModel.from_pretrained(str(FOLDER)).eval()
    ids = np.random.default_rng(1).integers(0, 400, (3, 17))
    with torch.no_grad():
        theirs = ref(torch.from_numpy(ids)).logits.numpy()
    model, _ = import_hf(FOLDER)
    np.testing.assert_allclose(logits_of(model, ids), theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_live_our_export_loads_in_transformers(tmp_path, activation):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, tok = import_hf(FOLDER)
    model = GPT(GPTConfig(vocab_size=400, block_size=16, n_layer=2, n_head=4, d_model=32, d_ff=48,
                          activation=activation, norm_eps=1e-6), seed=7)
    rng = np.random.default_rng(2)
    for p in model.parameters():                                   # not the initial zeros and ones
        p.data = (p.data + rng.standard_normal(p.shape) * 0.2).astype(np.float32)
    export_hf(model, tok, tmp_path / "hf")
    ref = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    ids = rng.integers(0, 400, (2, 16))
    with torch.no_grad():
        theirs = ref(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(logits_of(model, ids), theirs, rtol=0, atol=1e-5)
    their_tok = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "It's 2024: café 東京  spaces"
    assert their_tok(text)["input_ids"] == tok.encode(text).tolist()


def test_norm_eps_reaches_every_layernorm_and_is_checked():
    from minitransformer.nn.layernorm import LayerNorm
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8, norm_eps=1e-3))
    eps = [m.eps for m in model.modules() if isinstance(m, LayerNorm)]
    assert eps == [1e-3] * 5                                        # 2 per block + the final one
    for bad in (0, -1e-5, float("nan"), float("inf"), True, "1e-5"):
        with pytest.raises(ValueError, match="norm_eps must be a finite number > 0"):
            GPTConfig(norm_eps=bad)


def test_fixture_parity_needs_neither_torch_nor_transformers():
    """What CI runs without the hf extra: import and ONNX export with torch and transformers blocked."""
    import subprocess
    import sys
    code = ("import sys; sys.modules.update(torch=None, transformers=None, tokenizers=None)\n"
            "import numpy as np\n"
            "from minitransformer.interop.hf_import import import_hf\n"
            f"model, tok = import_hf({str(FOLDER)!r})\n"
            f"e = np.load({str(FOLDER / 'expected.npz')!r})\n"
            "model.eval()\n"
            "print(float(np.abs(model.forward(e['input_ids'])[0] - e['logits']).max()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert float(out.stdout) < 1e-5


def test_merged_lora_adapters_export_unmerged_ones_are_refused(tmp_path):
    from minitransformer.compress.lora import apply_lora, lora_layers, merge_lora
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8), seed=1)
    apply_lora(model, rank=2)
    for layer in lora_layers(model):
        layer.lora_b.data = np.full(layer.lora_b.shape, 0.1, np.float32)
    with pytest.raises(ValueError, match="LoRALinear; only plain Linear .* --merge"):
        export_hf(model, None, tmp_path / "x")
    merge_lora(model)
    export_hf(model, None, tmp_path / "x")
    again, _ = import_hf(tmp_path / "x")
    ids = np.arange(8)[None] % 11
    np.testing.assert_allclose(logits_of(again, ids), logits_of(model, ids), rtol=0, atol=1e-6)
