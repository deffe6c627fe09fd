"""Transformer-XL: the relative shift entry by entry, the four score terms against a direct sum,
memory equal to one long forward, the stop-gradient, sliding-cache decoding, the segment tasks and
training with memory through train.fit, and clear errors."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention.relative_xl import (rel_shift, rel_shift_backward, rel_shift_reference,
                                                   relative_scores)
from minitransformer.gradcheck import registered
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.models.transformer_xl import TransformerXL, TransformerXLConfig
from minitransformer.tasks.segments import MemoryRecallTask, SegmentLMTask
from minitransformer.train import TrainConfig, fit


def _xl(device, **kw):
    cfg = TransformerXLConfig(**{"vocab_size": 13, "segment_len": 4, "mem_len": 4, "n_layer": 2, "n_head": 2,
                                 "d_model": 16, **kw})
    model = TransformerXL(cfg, seed=0).to(device, "float64")
    rng = backend.host_rng(1)
    for p in model.parameters():                     # weights large enough that every term matters
        p.data = backend.to_device(rng.standard_normal(p.shape) * 0.3, device)
    return model


def _ids(device, shape, seed=0, vocab=13):
    return backend.to_device(np.random.default_rng(seed).integers(0, vocab, shape), device)


@pytest.mark.parametrize("T,K", [(4, 4), (3, 7), (1, 5), (5, 6)])
def test_rel_shift_matches_every_causal_entry(device, T, K):
    x = backend.to_device(np.random.default_rng(0).standard_normal((2, 3, T, K)), device)
    out, ref = backend.to_numpy(rel_shift(x)), backend.to_numpy(rel_shift_reference(x))
    host = backend.to_numpy(x)
    M = K - T
    for i in range(T):
        for j in range(K):
            if j <= i + M:                           # out[i, j] holds distance i + M - j, column j + T - 1 - i
                np.testing.assert_array_equal(out[..., i, j], host[..., i, j + T - 1 - i])
                np.testing.assert_array_equal(out[..., i, j], ref[..., i, j])


def test_rel_shift_backward_is_its_transpose(device):
    rng = np.random.default_rng(1)
    x, d = (backend.to_device(rng.standard_normal((2, 3, 6)), device) for _ in range(2))
    lhs = float((rel_shift(x) * d).sum())
    rhs = float((x * rel_shift_backward(d)).sum())
    assert abs(lhs - rhs) < 1e-12 * max(1.0, abs(lhs))


def test_four_terms_against_a_direct_sum(device):
    """A[i, j] = q_i.k_j + q_i.r(d) + u.k_j + v.r(d), d = i + M - j, computed entry by entry."""
    rng = np.random.default_rng(2)
    B, H, T, M, D = 2, 2, 3, 4, 5
    K = M + T
    q, k = rng.standard_normal((B, H, T, D)), rng.standard_normal((B, H, K, D))
    r, u, v = rng.standard_normal((H, K, D)), rng.standard_normal((H, D)), rng.standard_normal((H, D))
    scores, _, _ = relative_scores(*(backend.to_device(a, device) for a in (q, k, r, u, v)))
    scores = backend.to_numpy(scores)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                for j in range(i + M + 1):
                    dist = i + M - j
                    rd = r[h, K - 1 - dist]          # row c of r holds distance K - 1 - c
                    direct = q[b, h, i] @ k[b, h, j] + q[b, h, i] @ rd + u[h] @ k[b, h, j] + v[h] @ rd
                    assert scores[b, h, i, j] == pytest.approx(direct, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", [n for n in registered() if "xl" in n or "rel_shift" in n])
def test_registered_gradchecks(device, name):
    for result in registered()[name](device):
        assert result.passed, str(result)


def test_memory_equals_one_long_forward(device):
    """Segment 2 read after the memory of segment 1 gives the logits of one forward over both."""
    model = _xl(device)
    idx = _ids(device, (2, 8))
    with model.no_grad():
        full, _, _ = model.forward_segment(idx, None)
        a, _, memory = model.forward_segment(idx[:, :4], None)
        b, _, _ = model.forward_segment(idx[:, 4:], memory)
        cut, _, _ = model.forward_segment(idx[:, 4:], [m[:, 2:] for m in memory])   # a shorter memory differs
    np.testing.assert_allclose(backend.to_numpy(b), backend.to_numpy(full)[:, 4:], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(full)[:, :4], rtol=1e-10, atol=1e-12)
    assert not np.allclose(backend.to_numpy(cut), backend.to_numpy(full)[:, 4:])
    assert [m.shape for m in memory] == [(2, 4, 16)] * 2


def test_memory_is_a_stop_gradient(device):
    """Backward of segment 2 leaves segment 1's memory untouched and gives the same parameter
    gradients as a segment that was handed the memory as a fixed input."""
    model = _xl(device)
    idx = _ids(device, (2, 9))
    _, _, memory = model.forward_segment(idx[:, :4], None)
    frozen = [m.copy() for m in memory]
    model.zero_grad()
    model.forward_segment(idx[:, 4:8], memory, idx[:, 5:9])
    model.backward()
    grads = [p.grad.copy() for p in model.parameters()]
    for m, f in zip(memory, frozen):
        np.testing.assert_array_equal(backend.to_numpy(m), backend.to_numpy(f))
    model.zero_grad()
    model.forward_segment(idx[:, 4:8], frozen, idx[:, 5:9])
    model.backward()
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(p.grad))


def test_longer_memory_at_evaluation(device):
    model = _xl(device, mem_len=4)
    idx = _ids(device, (1, 12))
    with model.no_grad():
        _, _, m = model.forward_segment(idx[:, :4], None, mem_len=12)
        _, _, m = model.forward_segment(idx[:, 4:8], m, mem_len=12)
        short, _, _ = model.forward_segment(idx[:, 8:], [x[:, -4:] for x in m])
        long, _, _ = model.forward_segment(idx[:, 8:], m)
    assert m[0].shape[1] == 8
    assert not np.allclose(backend.to_numpy(short), backend.to_numpy(long))


def test_sliding_cache_decoding_equals_one_token_segments(device):
    """Decoding with the key/value cache gives the logits of reading one-token segments with a
    memory of mem_len, also long after the window has started to slide."""
    model = _xl(device, mem_len=5)
    idx = _ids(device, (2, 14))
    caches = model.make_kv_caches(2)
    memory, ref, got = None, [], []
    with model.no_grad():
        for t in range(14):
            logits, _, memory = model.forward_segment(idx[:, t:t + 1], memory)
            ref.append(backend.to_numpy(logits))
            got.append(backend.to_numpy(model.forward(idx[:, t:t + 1], kv_caches=caches)[0]))
    np.testing.assert_allclose(np.concatenate(got, 1), np.concatenate(ref, 1), rtol=1e-9, atol=1e-11)
    assert caches[0].length == 5


def test_prefill_then_decode_equals_full_forward(device):
    from minitransformer.generate import generate
    model = _xl(device, mem_len=16)
    idx = _ids(device, (2, 10))
    caches = model.make_kv_caches(2)
    with model.no_grad():
        full, _ = model.forward(idx)
        pre, _ = model.forward(idx[:, :6], kv_caches=caches)
        rest = [model.forward(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(6, 10)]
    cached = np.concatenate([backend.to_numpy(pre)] + [backend.to_numpy(r) for r in rest], axis=1)
    np.testing.assert_allclose(cached, backend.to_numpy(full), rtol=1e-9, atol=1e-11)
    out = generate(model, idx[:, :3], 25, greedy=True)              # well past block_size = 20
    assert out.shape == (2, 28)


def test_training_segments_are_consecutive_and_memory_is_carried():
    text = "".join(chr(97 + i % 26) for i in range(2000))
    task = SegmentLMTask.from_text(text, segment_len=8, val_fraction=0.2)
    x0, y0, s0 = task.train_batch(0, 3, None)
    x1, _, s1 = task.train_batch(1, 3, None)
    np.testing.assert_array_equal(x1[:, 0], y0[:, -1])             # row b continues row b
    assert (s0 == 0).all() and (s1 == 1).all()
    wrap = task.segments_per_pass(3)
    assert (task.train_batch(wrap, 3, None)[2] == 0).all()

    model = TransformerXL(task.adapt(TransformerXLConfig(segment_len=8, mem_len=8, n_layer=1, n_head=1,
                                                         d_model=8)), seed=0)
    seen = []
    original = model.forward_segment

    def spy(idx, memory=None, *args, **kw):
        seen.append(None if memory is None else memory[0].shape[1])
        return original(idx, memory, *args, **kw)

    model.forward_segment = spy
    cfg = TrainConfig(steps=3, batch_size=3, grad_accum=2, eval_interval=100, eval_iters=1, num_samples=0,
                      warmup=0)
    fit(model, task, cfg, progress=False, log=lambda *_: None)
    assert seen[:6] == [None, 8, 8, 8, 8, 8]                        # empty at the start, then carried
    seen.clear()
    fit(model, task, cfg, progress=False, log=lambda *_: None)
    assert seen[0] is None                                          # begin_training reset it
    # a batch that does not follow the memory's segment starts from an empty memory
    seen.clear()
    task.forward_backward(model, task.train_batch(5, 3, None))
    assert seen == [None]


def test_xl_learns_what_only_memory_can_solve():
    """Recall at a distance of one segment: XL well above chance, a GPT whose context is one
    segment at chance (the full measurement is benchmarks/transformer_xl.py)."""
    task = MemoryRecallTask(segment_len=8, lag=1, n_values=4, n_filler=2, stride=4)
    cfg = TrainConfig(steps=120, batch_size=16, lr=5e-3, warmup=10, eval_interval=1000, eval_iters=1,
                      num_samples=0, weight_decay=0.0, threads=1)
    xl = TransformerXL(task.adapt(TransformerXLConfig(segment_len=8, mem_len=8, n_layer=1, n_head=2, d_model=32)))
    gpt = GPT(task.adapt(GPTConfig(block_size=8, n_layer=1, n_head=2, d_model=32)))
    with backend.host_blas_threads_limited(1):                     # tiny matrices: one BLAS thread is fastest
        fit(xl, task, cfg, progress=False, log=lambda *_: None)
        fit(gpt, task, cfg, progress=False, log=lambda *_: None)
    assert task.accuracy(xl, batches=2) > 0.9
    assert task.accuracy(gpt, batches=2) < 0.45                     # chance is 0.25


def test_bad_input_is_refused(device):
    model = _xl(device)
    idx = _ids(device, (2, 4))
    with pytest.raises(ValueError, match="memory must be a list of 2"):
        model.forward_segment(idx, [backend.xp_for(device).zeros((2, 3, 16))])
    with pytest.raises(ValueError, match=r"expected \(B=2"):
        model.forward_segment(idx, [backend.xp_for(device).zeros((3, 3, 16))] * 2)
    with pytest.raises(ValueError, match="mem_len must be an int >= 0"):
        model.forward_segment(idx, None, mem_len=-1)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 13\)"):
        model.forward_segment(idx + 20, None)
    with pytest.raises(ValueError, match="mem_len must be an integer >= 0"):
        TransformerXLConfig(mem_len=-2)
    with pytest.raises(ValueError, match="not divisible"):
        TransformerXLConfig(d_model=10, n_head=4)
    task = MemoryRecallTask(segment_len=4)
    cfg = TrainConfig(steps=1, batch_size=2, threads=2, num_samples=0)
    with pytest.raises(ValueError, match="cannot split its batches"):
        fit(TransformerXL(task.adapt(TransformerXLConfig(segment_len=4, d_model=8, n_head=1))), task, cfg,
            progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="stride=9 exceeds segment_len=4"):
        MemoryRecallTask(segment_len=4, stride=9)


@pytest.mark.parametrize("family", ["xl", "compressive"])
def test_cli_trains_resumes_and_generates(tmp_path, capsys, family):
    from minitransformer.cli import main
    data = tmp_path / "text.txt"
    data.write_text("hola mundo, adiós mundo. " * 200, encoding="utf-8")
    out = tmp_path / "run"
    common = ["train", "--model", family, "--preset", "tiny", "--data", str(data), "--out", str(out), "--no-progress"]
    assert main(common + ["--steps", "4"]) == 0                     # tiny's eval_interval 30: the last step saves
    assert main(common + ["--steps", "6", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resuming from step 4" in printed and "--- sample 1 ---" in printed
    assert main(["generate", "--checkpoint", str(out), "--prompt", "hola", "--max-new-tokens", "40"]) == 0
    assert "hola" in capsys.readouterr().out


def test_a_window_trains_segment_by_segment_with_memory(device):
    """forward_backward on a window (x, y) of two segments: the loss is the mean over both, and the
    gradient that of reading them in order with memory, each segment weighted by its share."""
    text = "".join(chr(97 + (i * 7) % 26) for i in range(600))
    task = SegmentLMTask.from_text(text, segment_len=4, val_fraction=0.2, eval_segments=2)
    model = TransformerXL(task.adapt(TransformerXLConfig(segment_len=4, mem_len=4, n_layer=1, n_head=1,
                                                         d_model=8)), seed=1).to(device, "float64")
    x, y = task.windows("train", 2, np.random.default_rng(0))
    model.zero_grad()
    loss = task.forward_backward(model, (x, y))
    got = [backend.to_numpy(p.grad).copy() for p in model.parameters()]
    model.zero_grad()
    xd, yd = backend.to_device(x, device), backend.to_device(y, device)
    _, l1, memory = model.forward_segment(xd[:, :4], None, yd[:, :4])
    model.backward(dloss=0.5)
    _, l2, _ = model.forward_segment(xd[:, 4:], memory, yd[:, 4:])
    model.backward(dloss=0.5)
    assert loss == pytest.approx((float(l1) + float(l2)) / 2, rel=1e-12)
    for g, p in zip(got, model.parameters()):
        np.testing.assert_allclose(g, backend.to_numpy(p.grad), rtol=1e-10, atol=1e-14)
