"""The training loop: it learns, resumes exactly, refuses foreign checkpoints, stops on NaN."""
import json

import numpy as np
import pytest

from minitransformer.checkpoint import CheckpointError, load_checkpoint
from minitransformer.models.gpt import GPTConfig, load_gpt
from minitransformer.train import TrainConfig, TrainingDiverged, train

TEXT = "the quick brown fox jumps over the lazy dog. " * 60
MODEL = GPTConfig(block_size=16, n_layer=1, n_head=2, d_model=16)


def _cfg(**kw):
    base = dict(steps=12, batch_size=4, eval_interval=6, eval_iters=2, warmup=2, sample_tokens=10,
                num_samples=1, lr=3e-3)
    return TrainConfig(**{**base, **kw})


def test_trains_checkpoints_and_writes_metrics(tmp_path, device):
    result = train(MODEL, _cfg(steps=40, eval_interval=20), TEXT, out_dir=tmp_path, device=device, progress=False,
                   log=lambda *a: None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40]
    assert rows[-1]["val_loss"] < result["unigram_baseline"]
    assert len(result["samples"]) == 1 and len(result["samples"][0]) == 10
    model, tokenizer, meta = load_gpt(tmp_path, device)
    assert meta["step"] == 40 and tokenizer.vocab_size == model.config.vocab_size


def test_resume_continues_with_the_same_losses(tmp_path):
    quiet = dict(progress=False, log=lambda *a: None)
    full = train(MODEL, _cfg(), TEXT, out_dir=tmp_path / "full", **quiet)
    train(MODEL, _cfg(), TEXT, out_dir=tmp_path / "split", stop_after=6, **quiet)   # interrupted
    resumed = train(MODEL, _cfg(), TEXT, out_dir=tmp_path / "split", resume=True, **quiet)
    assert [r["step"] for r in resumed["history"]] == [12]

    def losses(row):
        return {k: v for k, v in row.items() if k != "tokens_per_s"}
    assert losses(resumed["history"][-1]) == losses(full["history"][-1])
    a, _, _ = load_checkpoint(tmp_path / "full")
    b, _, _ = load_checkpoint(tmp_path / "split")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_resume_refuses_another_configuration(tmp_path):
    quiet = dict(progress=False, log=lambda *a: None)
    train(MODEL, _cfg(steps=6), TEXT, out_dir=tmp_path, **quiet)
    other = GPTConfig(block_size=16, n_layer=2, n_head=2, d_model=16)
    with pytest.raises(CheckpointError, match="another model configuration"):
        train(other, _cfg(), TEXT, out_dir=tmp_path, resume=True, **quiet)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    quiet = dict(progress=False, log=lambda *a: None)
    train(MODEL, _cfg(), TEXT, out_dir=tmp_path, stop_after=6, **quiet)
    good = (tmp_path / "checkpoint.safetensors").read_bytes()

    from minitransformer.models import gpt
    original = gpt.GPT.forward

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = original(self, idx, targets, **kw)
        return logits, (loss * np.nan if loss is not None else None)
    monkeypatch.setattr(gpt.GPT, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="the training loss became nan at step 6.*last good checkpoint"):
        train(MODEL, _cfg(), TEXT, out_dir=tmp_path, resume=True, **quiet)
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == good


def test_text_too_short():
    with pytest.raises(ValueError, match="fewer than block_size"):
        train(MODEL, _cfg(), "abc" * 5, progress=False, log=lambda *a: None)


def test_unknown_train_option():
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig(optimizer="lion")


def test_gradient_accumulation_equals_one_big_batch(device):
    """Two micro-batches of 4 with dloss = 1/2 give the gradient of one batch of 8."""
    from minitransformer import backend
    from minitransformer.models.gpt import GPT
    cfg = GPTConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, d_model=8)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 9, (8, 8)), rng.integers(0, 9, (8, 8))
    big = GPT(cfg).to(device, "float64")
    big.forward(backend.to_device(x, device), backend.to_device(y, device))
    big.backward()
    acc = GPT(cfg).to(device, "float64")
    for half in (slice(0, 4), slice(4, 8)):
        acc.forward(backend.to_device(x[half], device), backend.to_device(y[half], device))
        acc.backward(dloss=0.5)
    for (name, p), (_, q) in zip(big.named_parameters(), acc.named_parameters()):
        np.testing.assert_allclose(backend.to_numpy(q.grad), backend.to_numpy(p.grad), rtol=1e-10,
                                   atol=1e-14, err_msg=name)


def test_noam_schedule_peaks_at_the_configured_lr():
    from minitransformer.train import learning_rate
    cfg = TrainConfig(schedule="noam", warmup=100, lr=1e-3)
    rates = [learning_rate(s, cfg, 128) for s in range(1000)]
    assert max(rates) == pytest.approx(1e-3) and rates.index(max(rates)) == 99
