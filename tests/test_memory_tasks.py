"""The memory tasks of chapters 1 and 37 (copy, retrieval with the question last), their memoryless
baseline, and the helpers of the extrapolation benchmark."""
from functools import partial

import numpy as np
import pytest

from minitransformer.benchmarking.extrapolation import NotExtrapolable, longer_context, loss_by_position
from minitransformer.data.copy_task import (BLANK, GO, CopyTask, copy_batch, memoryless_accuracy,
                                            retrieval_question_last_batch)
from minitransformer.data.long_range import CLS, RetrievalTask
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.nn.loss import IGNORE_INDEX


def test_copy_batch_layout():
    task = CopyTask(n_symbols=4, length=3, delay=2)
    x, y = copy_batch(task, 5, np.random.default_rng(0))
    assert x.shape == y.shape == (5, task.seq_len) == (5, 8)
    K, G = 3, 2
    assert ((x[:, :K] >= 2) & (x[:, :K] < task.vocab_size)).all()
    assert (x[:, K:K + G] == BLANK).all() and (x[:, K + G] == GO).all() and (x[:, K + G + 1:] == BLANK).all()
    np.testing.assert_array_equal(y[:, K + G:], x[:, :K])                 # asked K + G steps later
    assert (y[:, :K + G] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="n_symbols >= 2"):
        copy_batch(CopyTask(n_symbols=1), 1, np.random.default_rng(0))


def test_retrieval_question_last():
    task = RetrievalTask(seq_len=10, min_distance=2, max_distance=9)
    x, y = retrieval_question_last_batch(task, 6, np.random.default_rng(1))
    assert (x[:, -1] == CLS).all()
    assert (y[:, :-1] == IGNORE_INDEX).all()
    values = (x >= 1) & (x <= task.n_classes)
    assert (values.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(x[values], y[:, -1])                    # the target names the value
    d = 9 - values.argmax(axis=1)
    assert ((d >= 2) & (d <= 9)).all()


def test_memoryless_baseline_is_chance_on_both():
    copy = memoryless_accuracy(partial(copy_batch, CopyTask(n_symbols=4, length=3, delay=1)), 4, 4)
    assert abs(copy - 1 / 4) < 0.05
    ret = memoryless_accuracy(partial(retrieval_question_last_batch, RetrievalTask(seq_len=12, max_distance=11,
                                                                                   min_distance=1)), 4, 4)
    assert abs(ret - 1 / 8) < 0.04


def test_memoryless_baseline_finds_a_current_token_rule():
    """When the target is a function of the current token, the memoryless predictor is perfect."""
    def echo(B, rng):
        x = rng.integers(0, 5, (B, 6))
        return x, (x + 1) % 5
    assert memoryless_accuracy(echo, 2, 2) == 1.0


@pytest.mark.parametrize("positional", ["sinusoidal", "rope", "alibi"])
def test_longer_context_keeps_the_function(positional):
    model = GPT(GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8, positional=positional),
                seed=2).to("cpu", "float64")
    longer = longer_context(model, 20)
    assert longer.config.block_size == 20
    x = np.random.default_rng(3).integers(0, 9, (2, 8))
    np.testing.assert_allclose(longer.forward(x)[0], model.forward(x)[0], rtol=1e-12, atol=1e-12)
    assert longer.forward(np.random.default_rng(4).integers(0, 9, (1, 20)))[0].shape == (1, 20, 9)
    with pytest.raises(ValueError, match="positions exceed"):
        model.forward(np.zeros((1, 9), np.int64))


def test_learned_positions_do_not_extrapolate():
    model = GPT(GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8))
    with pytest.raises(NotExtrapolable, match="rows for positions 0..7"):
        longer_context(model, 16)


def test_loss_by_position():
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, d_model=4, positional="alibi"))
    ids = np.random.default_rng(5).integers(0, 5, 200)
    losses = loss_by_position(model, ids, 8, windows=6, batch_size=4)
    assert losses.shape == (8,)
    assert np.all(np.abs(losses - np.log(5)) < 0.2)                       # an untrained model: ~ log V


def test_gradient_by_distance_reads_positions_backwards():
    """An identity layer sends the last output's unit gradient to the last input only: norm 1 at
    distance 0; a layer that shifts by one step moves it to distance 1."""
    from minitransformer.benchmarking.recurrence import gradient_by_distance
    identity = gradient_by_distance(lambda x, dy: dy, T=5, C=3, batch_size=2)
    np.testing.assert_allclose(identity, [1, 0, 0, 0, 0], atol=1e-12)

    def shift(x, dy):                      # y_t = x_{t-1}  =>  dx_{t-1} = dy_t
        dx = np.zeros_like(dy)
        dx[:, :-1] = dy[:, 1:]
        return dx
    np.testing.assert_allclose(gradient_by_distance(shift, T=5, C=3, batch_size=2), [0, 1, 0, 0, 0], atol=1e-12)


def test_sparse_targets_task_trains_both_families():
    from minitransformer.benchmarking.recurrence import SparseTargetsTask, target_hits, train_on
    from minitransformer.models.lstm import LSTMConfig
    task_def = CopyTask(n_symbols=3, length=2, delay=0)
    make = partial(copy_batch, task_def)
    task = SparseTargetsTask(make, task_def.vocab_size, task_def.seq_len)
    for kind, cfg in (("lstm", LSTMConfig(n_layer=1, d_model=8)),
                      ("gpt", GPTConfig(n_layer=1, n_head=1, d_model=8))):
        model, losses = train_on(kind, cfg, task, steps=3, batch_size=4)
        assert model.config.block_size == 4 and model.config.vocab_size == 5 and len(losses) == 3
        hits, x, y = target_hits(model, make, batches=1, batch_size=8)
        assert hits.shape == x.shape == (8, 4) and not hits[y == IGNORE_INDEX].any()
