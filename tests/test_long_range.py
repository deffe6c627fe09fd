"""The long-range retrieval task: a local window cannot see beyond W; global tokens, linear attention
and dense attention can. A small version of benchmarks/long_range.py that runs in seconds."""
import numpy as np
import pytest

from minitransformer.benchmarking.long_range import train_retrieval
from minitransformer.data.long_range import CLS, RetrievalTask, retrieval_batch

W = 3
FAR = RetrievalTask(seq_len=24, n_classes=4, n_noise=8, min_distance=2 * W, max_distance=23)
NEAR = RetrievalTask(seq_len=24, n_classes=4, n_noise=8, min_distance=1, max_distance=W)


def test_batch_layout():
    tokens, labels = retrieval_batch(FAR, 64, np.random.default_rng(0))
    assert tokens.shape == (64, 24) and labels.shape == (64,)
    assert (tokens[:, 0] == CLS).all()
    values = (tokens >= 1) & (tokens <= FAR.n_classes)
    assert (values.sum(axis=1) == 1).all()                      # exactly one value token
    pos = values.argmax(axis=1)
    assert (pos >= FAR.min_distance).all() and (pos <= FAR.max_distance).all()
    assert (tokens[np.arange(64), pos] == labels + 1).all()
    with pytest.raises(ValueError, match="min_distance"):
        retrieval_batch(RetrievalTask(seq_len=8, min_distance=3, max_distance=8), 2, np.random.default_rng(0))


def _train(task, name, opts, device):
    return train_retrieval(task, name, opts, steps=60, batch_size=32, lr=1e-2, eval_batches=2, device=device)


@pytest.mark.parametrize("name,opts", [("dense", {}), ("linear", {}),
                                       ("longformer", {"window": W, "global_tokens": [0]})])
def test_global_views_retrieve_far_tokens(device, name, opts):
    result = _train(FAR, name, opts, device)
    assert result["accuracy"] > 0.9, result


def test_sliding_window_cannot_see_beyond_w(device):
    far = _train(FAR, "sliding_window", {"window": W}, device)
    assert far["accuracy"] < 0.45, far                          # chance is 0.25
    near = _train(NEAR, "sliding_window", {"window": W}, device)
    assert near["accuracy"] > 0.9, near                         # the same model learns when d <= W
