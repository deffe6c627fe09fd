"""Data parallelism over threads: the summed gradient of the shards equals the whole batch's."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.optim import AdamW
from minitransformer.thread_parallel import ThreadParallel, shard_bounds

CFG = GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8)


def _batch(B, seed=0, ignored=()):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 9, (B, 8)), rng.integers(0, 9, (B, 8))
    for row, col in ignored:
        y[row, col] = -100                                 # IGNORE_INDEX
    return x, y


def test_shard_bounds_cover_the_batch():
    assert shard_bounds(5, 2) == [(0, 3), (3, 5)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2)]           # never an empty shard
    assert shard_bounds(12, 1) == [(0, 12)]


@pytest.mark.parametrize("n_threads, B", [(2, 4), (3, 5)])
def test_threads_match_one_thread(n_threads, B):
    # uneven shards and ignored targets: each shard is weighted by the targets it counts
    x, y = _batch(B, ignored=[(0, 1), (0, 2), (0, 3), (B - 1, 7)])
    single = GPT(CFG, seed=5).to("cpu", "float64")
    _, loss = single.forward(x, y)
    single.backward(dloss=0.5)
    model = GPT(CFG, seed=5).to("cpu", "float64")
    with ThreadParallel(model, n_threads) as tp:
        loss_tp = tp.forward_backward((x, y), dloss=0.5)
    assert loss_tp == pytest.approx(float(loss), rel=1e-12)
    for (name, p), (_, q) in zip(single.named_parameters(), model.named_parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-9, atol=1e-14, err_msg=name)


def test_gradients_accumulate_and_replicas_follow_the_weights():
    x, y = _batch(4)
    model = GPT(CFG, seed=5).to("cpu", "float64")
    opt = AdamW(model.parameters(), lr=1e-2)
    with ThreadParallel(model, 2) as tp:
        tp.forward_backward((x, y))
        once = [p.grad.copy() for p in model.parameters()]
        tp.forward_backward((x, y))                          # a second micro-batch adds up (+=)
        for p, g in zip(model.parameters(), once):
            np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-12)
        opt.step()                                         # in place: the replicas see it
        opt.zero_grad()
        assert tp.forward_backward((x, y)) == pytest.approx(float(model.forward(x, y)[1]), rel=1e-12)
        model.load_state_dict(GPT(CFG, seed=7).to("cpu", "float64").state_dict())   # new arrays
        opt.zero_grad()
        assert tp.forward_backward((x, y)) == pytest.approx(float(model.forward(x, y)[1]), rel=1e-12)


def test_each_replica_draws_its_own_dropout_masks():
    cfg = GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8, dropout=0.5)
    x, y = _batch(1)
    x, y = np.repeat(x, 2, axis=0), np.repeat(y, 2, axis=0)   # one identical sequence per thread
    grads = []
    for _ in range(2):
        model = GPT(cfg, seed=5).to("cpu", "float64")
        with ThreadParallel(model, 2) as tp:
            tp.forward_backward((x, y))
            masks = [backend.to_numpy(replica.drop.cache.mask) for replica in tp.replicas]
        assert not np.array_equal(masks[0], masks[1])
        grads.append(model.wte.weight.grad.copy())
    np.testing.assert_array_equal(grads[0], grads[1])      # and yet deterministic, from the seed


def test_bad_input_and_errors_in_a_thread():
    model = GPT(CFG, seed=5)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        ThreadParallel(model, 0)
    x, y = _batch(4)
    with ThreadParallel(model, 2) as tp:
        with pytest.raises(ValueError, match="share the batch size"):
            tp.forward_backward((x, y[:3]))
        x_bad = x.copy()
        x_bad[3, 0] = 40                                   # out of the vocabulary, in the second shard
        with pytest.raises(ValueError, match="token ids must lie"):
            tp.forward_backward((x_bad, y))
        model.zero_grad()                                  # nothing of the failed shards is left over
        tp.forward_backward((x, y))
        reference = GPT(CFG, seed=5)
        reference.forward(x, y)
        reference.backward()
        for p, q in zip(reference.parameters(), model.parameters()):
            np.testing.assert_allclose(q.grad, p.grad, rtol=2e-4, atol=1e-6)


def test_blas_threads_are_limited_then_restored():
    before = backend.host_blas_threads()
    if before is None:
        pytest.skip("the host BLAS's thread count cannot be read on this machine")
    with backend.host_blas_threads_limited(1) as limited:
        assert limited and backend.host_blas_threads() == 1
    assert backend.host_blas_threads() == before


def test_cuda_model_is_refused(device):
    if device != "cuda":
        pytest.skip("needs --device cuda")
    with pytest.raises(ValueError, match="runs on the CPU"):
        ThreadParallel(GPT(CFG, seed=5).to(device), 2)


def test_training_with_threads_matches_one_thread(tmp_path):
    from minitransformer.presets import start_run
    from minitransformer.train import TrainConfig
    path = tmp_path / "text.txt"
    path.write_text("abcdefgh, hgfedcba. " * 50)
    cfg = dict(steps=4, batch_size=4, eval_interval=4, eval_iters=2, num_samples=0, dtype="float64")
    model = GPTConfig(block_size=8, n_layer=1, n_head=2, d_model=8)
    quiet = dict(progress=False, log=lambda *a: None)
    one = start_run("gpt", model, TrainConfig(**cfg, threads=1), data=path, **quiet)
    three = start_run("gpt", model, TrainConfig(**cfg, threads=3), data=path, **quiet)
    assert three["history"][-1]["val_loss"] == pytest.approx(one["history"][-1]["val_loss"], rel=1e-9)
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        TrainConfig(threads=-1)
    with pytest.raises(TypeError, match="workers"):              # the process pool is gone (MPI now)
        TrainConfig(batch_size=4, workers=2)


def test_auto_threads_stay_within_cores_batch_cap_and_size(monkeypatch):
    import minitransformer.thread_parallel as tp_module
    monkeypatch.setattr(tp_module, "available_cores", lambda: 16)
    assert tp_module.auto_threads(12, 256, 384) == tp_module.MAX_AUTO_THREADS
    assert tp_module.auto_threads(2, 256, 384) == 2            # one sequence per thread at most
    assert tp_module.auto_threads(12, 64, 128) == 3            # 98,304 elements: 3 threads' worth
    assert tp_module.auto_threads(8, 32, 32) == 1              # a tiny model stays on one thread
    monkeypatch.setattr(tp_module, "available_cores", lambda: 1)
    assert tp_module.auto_threads(12, 256, 384) == 1
