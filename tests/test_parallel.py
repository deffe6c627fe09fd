"""Data-parallel training: the averaged gradient of R shards equals the whole batch's gradient."""
import functools

import numpy as np
import pytest

from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.optim import AdamW
from minitransformer.parallel import DataParallel, flatten, unflatten

CFG = GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8)


def _build(dtype):
    return GPT(CFG, seed=5).to("cpu", dtype)


def test_flatten_round_trip():
    arrays = [np.arange(6.0).reshape(2, 3), np.ones(4)]
    flat = flatten(arrays)
    targets = [np.zeros((2, 3)), np.zeros(4)]
    unflatten(flat, targets)
    np.testing.assert_array_equal(targets[0], arrays[0])


def test_two_workers_match_single_process():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 9, (8, 8)), rng.integers(0, 9, (8, 8))
    single = _build("float64")
    single.forward(x, y)
    single.backward()
    parent = GPT(CFG, seed=99).to("cpu", "float64")        # other init: the workers get its weights
    parent.load_state_dict(single.state_dict())
    with DataParallel(parent, functools.partial(_build, "float64"), n_workers=2) as dp:
        opt = AdamW(parent.parameters(), lr=1e-2)
        dp.forward_backward((x, y))
        for (name, p), (_, q) in zip(single.named_parameters(), parent.named_parameters()):
            np.testing.assert_allclose(q.grad, p.grad, rtol=1e-9, atol=1e-13, err_msg=name)
        opt.step()
        opt.zero_grad()
        loss_a = dp.forward_backward((x, y))                   # a second step uses the updated weights
    _, loss_b = parent.forward(x, y)
    assert loss_a == pytest.approx(float(loss_b), rel=1e-9)
    with pytest.raises(ValueError, match="not divisible"):
        with DataParallel(parent, functools.partial(_build, "float64"), n_workers=3) as dp:
            dp.forward_backward((x, y))


def test_training_with_workers_matches_single_process(tmp_path):
    from minitransformer.presets import start_run
    from minitransformer.train import TrainConfig
    path = tmp_path / "text.txt"
    path.write_text("abcdefgh, hgfedcba. " * 50)
    cfg = dict(steps=4, batch_size=4, eval_interval=4, eval_iters=2, num_samples=0, dtype="float64")
    model = GPTConfig(block_size=8, n_layer=1, n_head=2, d_model=8)
    quiet = dict(progress=False, log=lambda *a: None)
    one = start_run("gpt", model, TrainConfig(**cfg), data=path, **quiet)
    two = start_run("gpt", model, TrainConfig(**cfg, workers=2), data=path, **quiet)
    assert two["history"][-1]["val_loss"] == pytest.approx(one["history"][-1]["val_loss"], rel=1e-9)
    with pytest.raises(ValueError, match="divide batch_size"):
        TrainConfig(batch_size=5, workers=2)
