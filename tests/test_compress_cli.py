"""`minitransformer compress` on a tiny GPT checkpoint: every method runs, reloads (and generates),
shows its training progress; every bad setting fails clearly, naming its flag, before anything is written."""
import json

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.checkpoint import load_checkpoint, save_checkpoint
from minitransformer.cli import main
from minitransformer.compress.finetune import evaluate
from minitransformer.compress.io import load_compressed
from minitransformer.compress.lora import LoRALinear
from minitransformer.compress.lowrank import LowRankLinear
from minitransformer.compress.quantize import QuantizedLinear
from minitransformer.data.tokenizer import CharTokenizer
from minitransformer.models.gpt import GPT, GPTConfig

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    tok = CharTokenizer.from_text(TEXT)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, d_model=16)
    model = GPT(cfg, seed=0)
    meta = {"model": model.describe(), "tokenizer": tok.to_dict(),
            "train_config": {"dtype": "float32", "val_fraction": 0.1}, "step": 0}
    save_checkpoint(root / "run", model.state_dict(), meta)
    (root / "text.txt").write_text(TEXT)
    return root


def _run(ckpt, *extra):
    return main(["compress", str(ckpt / "run"), "--data", str(ckpt / "text.txt"), "--eval-iters", "2",
                 "--batch-size", "4", *extra])


@pytest.mark.parametrize("method,extra,kind", [
    ("svd", ["--rank", "4"], LowRankLinear),
    ("lowrank-finetune", ["--budget", "0.5", "--steps", "2"], LowRankLinear),
    ("int8", [], QuantizedLinear),
    ("int8-dynamic", [], QuantizedLinear),
    ("fp16", [], QuantizedLinear),
    ("prune-finetune", ["--sparsity", "0.5", "--steps", "2"], None),
    ("heads", ["--sparsity", "0.5", "--steps", "1"], None),
])
def test_methods_write_loadable_checkpoints(ckpt, capsys, method, extra, kind):
    out = ckpt / f"out-{method}"
    assert _run(ckpt, "--method", method, "--out", str(out), *extra) == 0
    printed = capsys.readouterr().out
    assert "| original |" in printed and f"| {method} |" in printed and "validation loss" in printed
    model, meta = load_compressed(out)
    tok = CharTokenizer.from_dict(meta["tokenizer"])
    assert meta["compression"]["method"] == method
    if kind is not None:
        assert isinstance(model.blocks[0].attn.qkv, kind)
    ids = tok.encode(TEXT)
    loss = evaluate(model, ids, 4, 2)
    assert np.isfinite(loss)
    config = json.loads((out / "config.json").read_text())
    assert config["compression"]["method"] == method


def test_prune_keeps_sparsity_after_finetune(ckpt):
    out = ckpt / "pruned"
    assert _run(ckpt, "--method", "prune-finetune", "--sparsity", "0.6", "--steps", "3", "--out", str(out)) == 0
    model, _ = load_compressed(out)
    w = backend.to_numpy(model.blocks[0].ffn.fc1.weight.data)
    assert (w == 0).mean() == pytest.approx(0.6, abs=0.01)


def _generates(out, capsys):
    """`minitransformer generate` loads the written checkpoint and samples from it."""
    assert main(["generate", "--checkpoint", str(out), "--prompt", "the", "--max-new-tokens", "8"]) == 0
    assert "--- sample 1 ---\nthe" in capsys.readouterr().out


def test_distill_writes_a_smaller_plain_student(ckpt, capsys):
    out = ckpt / "out-distill"
    assert _run(ckpt, "--method", "distill", "--student-layers", "1", "--student-width", "8",
                "--steps", "3", "--temperature", "3", "--alpha", "0.7", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "| distill |" in captured.out and "distillation (T=3.0, alpha=0.7)" in captured.out
    assert "3/3" in captured.err                                     # fit's progress bar
    student, meta = load_compressed(out)
    assert meta["model"]["kind"] == "gpt" and meta["model"]["config"]["d_model"] == 8
    assert meta["compression"]["method"] == "distill" and meta["compression"]["layers"] == {}
    assert meta["compression"]["details"]["teacher"]["config"]["d_model"] == 16
    teacher, _ = load_compressed(ckpt / "run")
    assert student.num_parameters() < teacher.num_parameters()
    assert student.blocks[0].attn.qkv.weight.shape == (8, 24)
    assert np.isfinite(evaluate(student, CharTokenizer.from_dict(meta["tokenizer"]).encode(TEXT), 4, 2))
    _generates(out, capsys)


@pytest.mark.parametrize("merge", [False, True])
def test_lora_adapters_train_and_reload(ckpt, capsys, merge):
    out = ckpt / f"out-lora-{merge}"
    extra = ["--merge"] if merge else []
    assert _run(ckpt, "--method", "lora", "--rank", "2", "--alpha", "4", "--steps", "3", "--lr", "1e-2",
                "--out", str(out), *extra) == 0
    captured = capsys.readouterr()
    assert "| lora |" in captured.out and "3/3" in captured.err
    model, meta = load_compressed(out)
    assert meta["compression"]["layers"]["blocks.0.attn.qkv"] == {"kind": "lora", "rank": 2, "alpha": 4.0,
                                                                 "merged": merge}
    layer = model.blocks[0].ffn.fc1
    assert isinstance(layer, LoRALinear) and layer.merged == merge
    assert np.abs(backend.to_numpy(layer.lora_b.data)).max() > 0       # the adapters trained
    w0 = load_checkpoint(ckpt / "run")[0]["blocks.0.ffn.fc1.weight"]
    w = backend.to_numpy(layer.weight.data)
    expected = w0 + backend.to_numpy(layer.delta()) if merge else w0   # frozen unless merged
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)
    _generates(out, capsys)


def test_no_progress_hides_the_bar(ckpt, capsys):
    out = ckpt / "out-quiet"
    assert _run(ckpt, "--method", "lora", "--steps", "2", "--no-progress", "--out", str(out)) == 0
    assert "2/2" not in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--method", "zip"], "unknown compression method"),
    (["--method", "svd", "--rank", "17"], r"--rank 17: rank must lie in \[1, min\(m, n\)\] = \[1, 16\]"),
    (["--method", "svd"], "exactly one of"),
    (["--method", "prune", "--sparsity", "1.0"], r"--sparsity must be a fraction in \[0, 1\), got 1.0"),
    (["--method", "prune", "--sparsity", "-0.5"], r"--sparsity must be a fraction in \[0, 1\), got -0.5"),
    (["--method", "int8", "--batch-size", "0"], "--batch-size must be an integer >= 1 .*, got 0"),
    (["--method", "int8", "--batch-size", "-3"], "--batch-size must be an integer >= 1 .*, got -3"),
    (["--method", "int8", "--eval-iters", "0"], "--eval-iters must be an integer >= 1 .*, got 0"),
    (["--method", "prune-finetune", "--steps", "-1"], "--steps must be an integer >= 0, got -1"),
    (["--method", "prune-finetune", "--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--method", "prune-finetune", "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--method", "svd", "--rank", "0"], "--rank must be an integer >= 1 .*, got 0"),
    (["--method", "svd", "--energy", "0"], r"--energy must be a fraction in \(0, 1\] .*, got 0.0"),
    (["--method", "svd", "--energy", "1.5"], r"--energy must be a fraction in \(0, 1\] .*, got 1.5"),
    (["--method", "svd", "--budget", "0"], r"--budget must be a fraction in \(0, 1\] .*, got 0.0"),
    (["--method", "int8", "--bits", "1"], r"--bits must be an integer in \[2, 8\] .*, got 1"),
    (["--method", "int8", "--bits", "9"], r"--bits must be an integer in \[2, 8\] .*, got 9"),
    (["--method", "int8", "--targets", ","], "--targets names no layer"),
    (["--method", "int8", "--targets", "attn.nope"], "--targets: 'attn.nope' matches no Linear"),
    (["--method", "distill", "--temperature", "0"], "--temperature must be a finite number > 0, got 0.0"),
    (["--method", "distill", "--temperature", "inf"], "--temperature must be a finite number > 0, got inf"),
    (["--method", "distill", "--alpha", "1.5"], r"--alpha must be a number in \[0, 1\] .*, got 1.5"),
    (["--method", "distill", "--steps", "0"], "--steps must be an integer >= 1 for --method distill"),
    (["--method", "distill", "--student-layers", "0"], "--student-layers must be an integer >= 1, got 0"),
    (["--method", "distill", "--student-width", "-8"], "--student-width must be an integer >= 1, got -8"),
    (["--method", "distill", "--student-width", "10", "--student-heads", "4"],
     "--student-width 10 must be divisible by --student-heads 4"),
    (["--method", "lora", "--alpha", "0"], "--alpha must be a finite number > 0 for --method lora"),
    (["--method", "lora", "--rank", "17"], r"--rank 17: rank must lie in \[1, min\(m, n\)\] = \[1, 16\]"),
    (["--method", "lora", "--steps", "0"], "--steps must be an integer >= 1 for --method lora"),
])
def test_bad_arguments(ckpt, capsys, tmp_path, extra, message):
    import re
    out = tmp_path / "never-written"
    assert _run(ckpt, "--out", str(out), *extra) == 2
    captured = capsys.readouterr()
    assert re.search(message, captured.err), captured.err
    assert not out.exists()                                           # checked before any work
    assert "| original |" not in captured.out


def test_checkpoint_of_another_model(tmp_path, capsys):
    from minitransformer.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
    seq2seq = Seq2SeqTransformer(Seq2SeqConfig(n_layer=1, n_dec_layer=1, n_head=2, d_model=8))
    save_checkpoint(tmp_path / "s2s", seq2seq.state_dict(), {"model": seq2seq.describe()})
    assert main(["compress", str(tmp_path / "s2s"), "--method", "int8"]) == 2
    assert "holds a 'seq2seq' model" in capsys.readouterr().err
    save_checkpoint(tmp_path / "unknown", {"w": np.zeros(3, np.float32)},
                    {"model": {"kind": "no-such-family", "config": {"n_layer": 1}},
                     "tokenizer": {"type": "char", "chars": "ab"}})
    assert main(["compress", str(tmp_path / "unknown"), "--method", "int8"]) == 2
    assert "unknown model family 'no-such-family'" in capsys.readouterr().err
    save_checkpoint(tmp_path / "other", {"w": np.zeros(3, np.float32)},
                    {"model": {"kind": "gpt", "config": {"n_layer": 1, "vision_patch": 4}}})
    assert main(["compress", str(tmp_path / "other"), "--method", "int8"]) == 2
    assert "unknown key(s) ['vision_patch']" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "missing"), "--method", "int8"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
