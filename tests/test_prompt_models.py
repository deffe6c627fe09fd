"""The models of the prompting chapter (attention-only GPT, vector GPT) and `train --task` on the CLI.
Their float64 gradient checks (models.GPT(ffn=False), blocks.AttentionOnlyBlock, models.VectorGPT,
nn.functional.squared_error) run with every registered case in test_gradcheck_registry.py."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.cli import main
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.models.gpt_vector import VectorGPT, VectorGPTConfig
from minitransformer.nn.functional.squared_error import squared_error_backward, squared_error_forward


def test_attention_only_gpt_has_no_feed_forward(device):
    full = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=2, n_head=2, d_model=8), seed=0)
    bare = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=2, n_head=2, d_model=8, ffn=False), seed=0)
    names = [n for n, _ in bare.named_parameters()]
    assert not any(".ffn." in n or ".ln2." in n for n in names)
    assert any(".ln1." in n for n in names) and "ln_f.weight" in names     # LayerNorm kept
    assert bare.num_parameters() < full.num_parameters()
    bare = bare.to(device)
    idx = backend.to_device(np.array([[1, 2, 3, 4]]), device)
    logits, _ = bare.forward(idx)
    assert logits.shape == (1, 4, 7)
    with pytest.raises(ValueError, match="ffn=False"):
        GPTConfig(ffn=False, low_rank=2)


def test_squared_error_counts_only_weighted_positions(xp):
    pred = xp.asarray(np.array([[[1.0], [2.0], [5.0]]]))
    y = xp.asarray(np.array([[[0.0], [0.0], [0.0]]]))
    w = xp.asarray(np.array([[1.0, 1.0, 0.0]]))
    loss, cache = squared_error_forward(pred, y, w)
    assert float(loss) == pytest.approx((1 + 4) / 2)
    grad = backend.to_numpy(squared_error_backward(1.0, cache))
    np.testing.assert_allclose(grad[0, :, 0], [1.0, 2.0, 0.0])              # 2 w (pred - y) / sum w


def test_vector_gpt_checks_its_inputs(device):
    model = VectorGPT(VectorGPTConfig(n_in=3, n_out=1, block_size=4, n_layer=1, d_model=8), seed=0).to(device)
    x = backend.to_device(np.zeros((2, 4, 3), np.float32), device)
    pred, loss = model.forward(x)
    assert pred.shape == (2, 4, 1) and loss is None
    with pytest.raises(ValueError, match="last dimension|3"):
        model.forward(backend.to_device(np.zeros((2, 4, 5), np.float32), device))
    with pytest.raises(ValueError, match="exceed block_size=4"):
        model.forward(backend.to_device(np.zeros((2, 5, 3), np.float32), device))
    y = backend.to_device(np.zeros((2, 4, 1), np.float32), device)
    with pytest.raises(ValueError, match="need weights"):
        model.forward(x, y)
    with pytest.raises(ValueError, match=r"weights: expected shape \(2, 4\)"):
        model.forward(x, y, backend.to_device(np.ones((2, 3), np.float32), device))


def test_train_task_then_generate(tmp_path, capsys):
    out = tmp_path / "roles"
    assert main(["train", "--model", "gpt", "--task", "roles", "--steps", "3", "--out", str(out),
                 "--no-progress"]) == 0
    assert "task roles" in capsys.readouterr().out
    assert main(["generate", "--checkpoint", str(out), "--prompt", "[terse]abc?", "--greedy",
                 "--max-new-tokens", "3"]) == 0
    assert "[terse]abc?" in capsys.readouterr().out
    vec = tmp_path / "icl"
    assert main(["train", "--task", "icl-linear", "--steps", "2", "--out", str(vec), "--no-progress"]) == 0
    assert "gpt-vector" in capsys.readouterr().out
    assert main(["generate", "--checkpoint", str(vec)]) == 2                # a regression model cannot
    assert "cannot generate" in capsys.readouterr().err


def test_unknown_and_mismatched_tasks_are_refused(capsys):
    assert main(["train", "--task", "sorting", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'sorting'" in err and "induction" in err and "icl-linear" in err
    assert main(["train", "--model", "gpt", "--task", "icl-linear", "--no-progress"]) == 2
    assert "trains --model gpt-vector" in capsys.readouterr().err
    assert main(["train", "--task", "fewshot", "--preset", "tiny", "--no-progress"]) == 2
    assert "needs block_size >= 90" in capsys.readouterr().err
