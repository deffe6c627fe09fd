"""`minitransformer compress` on a tiny GPT checkpoint: every method runs, reloads, bad input fails clearly."""
import json

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.checkpoint import save_checkpoint
from minitransformer.cli import main
from minitransformer.compress.finetune import evaluate
from minitransformer.compress.io import load_compressed
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


@pytest.mark.parametrize("extra,message", [
    (["--method", "zip"], "unknown compression method"),
    (["--method", "svd", "--rank", "17"], "rank must lie in"),
    (["--method", "svd"], "exactly one of"),
    (["--method", "prune", "--sparsity", "1.0"], r"\[0, 1\)"),
    (["--method", "prune", "--sparsity", "-0.5"], r"\[0, 1\)"),
])
def test_bad_arguments(ckpt, capsys, extra, message):
    assert _run(ckpt, *extra) == 2
    import re
    assert re.search(message, capsys.readouterr().err)


def test_checkpoint_of_another_model(tmp_path, capsys):
    from minitransformer.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
    seq2seq = Seq2SeqTransformer(Seq2SeqConfig(n_layer=1, n_dec_layer=1, n_head=2, d_model=8))
    save_checkpoint(tmp_path / "s2s", seq2seq.state_dict(), {"model": seq2seq.describe()})
    assert main(["compress", str(tmp_path / "s2s"), "--method", "int8"]) == 2
    assert "holds a 'seq2seq' model" in capsys.readouterr().err
    save_checkpoint(tmp_path / "bert", {"w": np.zeros(3, np.float32)},
                    {"model": {"kind": "bert", "config": {"n_layer": 1}}, "tokenizer": {"type": "char", "chars": "ab"}})
    assert main(["compress", str(tmp_path / "bert"), "--method", "int8"]) == 2
    assert "unknown model family 'bert'" in capsys.readouterr().err
    save_checkpoint(tmp_path / "other", {"w": np.zeros(3, np.float32)},
                    {"model": {"kind": "gpt", "config": {"n_layer": 1, "vision_patch": 4}}})
    assert main(["compress", str(tmp_path / "other"), "--method", "int8"]) == 2
    assert "unknown key(s) ['vision_patch']" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "missing"), "--method", "int8"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
