"""The one training loop: it learns, resumes exactly, refuses foreign checkpoints and occupied
directories, stops on NaN keeping what was good, and saves on Ctrl-C; any family, any task."""
import json
import os
import signal

import numpy as np
import pytest

from minitransformer.checkpoint import BEST, LAST, CheckpointError, load_checkpoint, load_model
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.models.seq2seq import Seq2SeqConfig
from minitransformer.presets import start_run
from minitransformer.tasks import CausalLMTask
from minitransformer.train import RunExists, TrainConfig, TrainingDiverged, fit

TEXT = "the quick brown fox jumps over the lazy dog. " * 60
MODEL = GPTConfig(block_size=16, n_layer=1, n_head=2, d_model=16)
QUIET = dict(progress=False, log=lambda *a: None)


def _cfg(**kw):
    base = dict(steps=12, batch_size=4, eval_interval=6, eval_iters=2, warmup=2, sample_tokens=10,
                num_samples=1, lr=3e-3, threads=1)
    return TrainConfig(**{**base, **kw})


def _gpt_run(out, cfg=None, model=MODEL, **kw):
    return start_run("gpt", model, cfg or _cfg(), out_dir=out, **{**QUIET, **kw}, data=_text_file(out))


def _text_file(out):
    path = out.parent / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def test_trains_checkpoints_and_writes_metrics(tmp_path, device):
    result = _gpt_run(tmp_path / "run", _cfg(steps=40, eval_interval=20), device=device)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40]
    assert rows[-1]["val_loss"] < result["baseline"]
    assert (tmp_path / "run" / LAST).is_file() and (tmp_path / "run" / BEST).is_file()
    model, meta = load_model(tmp_path / "run", device)
    assert isinstance(model, GPT) and meta["step"] == 40 and meta["model"]["kind"] == "gpt"
    assert len(meta["tokenizer"]["chars"]) == model.config.vocab_size
    assert meta["best_val_loss"] == min(r["val_loss"] for r in rows)


def test_resume_with_dropout_is_bit_exact(tmp_path):
    """N steps straight equal N/2 steps, a stop, and a resume to N: the batches, the dropout masks,
    the optimizer state and the weights, bit for bit."""
    model = GPTConfig(block_size=16, n_layer=1, n_head=2, d_model=16, dropout=0.1)
    full = _gpt_run(tmp_path / "full", model=model)
    _gpt_run(tmp_path / "split", model=model, stop_after=6)                # interrupted
    resumed = _gpt_run(tmp_path / "split", model=model, resume=True)
    assert resumed["batch_losses"] == full["batch_losses"][6:]

    def losses(row):
        return {k: v for k, v in row.items() if k != "tokens_per_s"}
    assert losses(resumed["history"][-1]) == losses(full["history"][-1])
    a, oa, _ = load_checkpoint(tmp_path / "full")
    b, ob, _ = load_checkpoint(tmp_path / "split")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    for k in oa:
        np.testing.assert_array_equal(oa[k], ob[k])
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [6, 12]                                                 # no duplicate rows


def test_resume_drops_metric_rows_after_the_checkpoint_and_stale_temp_files(tmp_path):
    out = tmp_path / "run"
    _gpt_run(out, stop_after=6)
    with (out / "metrics.jsonl").open("a") as f:                           # a killed run got further
        f.write(json.dumps({"step": 9, "val_loss": 1.0}) + "\n" + '{"step": 1')
    stale = out / f"{LAST}.abc123.tmp"
    stale.write_bytes(b"\0" * 100)
    _gpt_run(out, resume=True)
    assert not stale.exists()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [6, 12]


def test_resume_refuses_another_configuration(tmp_path):
    _gpt_run(tmp_path / "run", _cfg(steps=6))
    other = GPTConfig(block_size=16, n_layer=2, n_head=2, d_model=16)
    with pytest.raises(CheckpointError, match="another model configuration"):
        _gpt_run(tmp_path / "run", model=other, resume=True)


def test_an_occupied_directory_is_refused_unless_overwrite(tmp_path):
    _gpt_run(tmp_path / "run", _cfg(steps=6))
    with pytest.raises(RunExists, match="already holds a training run.*--overwrite"):
        _gpt_run(tmp_path / "run", _cfg(steps=6))
    _gpt_run(tmp_path / "run", _cfg(steps=6, seed=5), overwrite=True)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1                                                  # the old run's rows are gone


def test_nan_stops_training_and_keeps_the_checkpoints(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _gpt_run(out, stop_after=6)
    good = {name: (out / name).read_bytes() for name in (LAST, BEST)}

    from minitransformer.models import gpt
    original = gpt.GPT.forward

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = original(self, idx, targets, **kw)
        return logits, (loss * np.nan if loss is not None else None)
    monkeypatch.setattr(gpt.GPT, "forward", poisoned)
    # the first resumed step is step 7, as the progress lines count
    with pytest.raises(TrainingDiverged, match="the training loss became nan at step 7.*intact"):
        _gpt_run(out, resume=True)
    assert {name: (out / name).read_bytes() for name in (LAST, BEST)} == good


def test_nan_before_any_checkpoint_names_none(tmp_path, monkeypatch):
    from minitransformer.models import gpt
    original = gpt.GPT.forward
    monkeypatch.setattr(gpt.GPT, "forward", lambda self, i, t=None, **kw: (original(self, i, t, **kw)[0], np.inf))
    with pytest.raises(TrainingDiverged, match="at step 1; stopping. No checkpoint had been written yet"):
        _gpt_run(tmp_path / "run")


def test_an_exploded_but_finite_validation_does_not_replace_best(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _gpt_run(out, stop_after=6)
    best = (out / BEST).read_bytes()
    from minitransformer import train as train_module
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: 1e6)      # a finite blow-up
    _gpt_run(out, resume=True)
    assert (out / BEST).read_bytes() == best                                # best kept
    assert load_checkpoint(out, "last")[2]["val_loss"] == 1e6               # last moved on


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    task = CausalLMTask.from_text(TEXT, 16)
    model = GPT(task.adapt(MODEL), seed=1337)
    logs = []

    def interrupt(step, model):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)                              # as a user's Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        fit(model, task, _cfg(), out, progress=False, log=logs.append, callback=interrupt)
    assert load_checkpoint(out)[2]["step"] == 4
    assert any("interrupted after step 4" in line and "--resume" in line for line in logs)
    full = fit(GPT(task.adapt(MODEL), seed=1337), task, _cfg(), tmp_path / "full", **QUIET)
    resumed = fit(GPT(task.adapt(MODEL), seed=1337), task, _cfg(), out, resume=True, **QUIET)
    assert resumed["batch_losses"] == full["batch_losses"][4:]


def test_seq2seq_trains_checkpoints_and_resumes_through_the_same_loop(tmp_path):
    cfg = TrainConfig(steps=8, batch_size=8, eval_interval=4, eval_iters=1, warmup=1, lr=3e-3, weight_decay=0.0)
    small = Seq2SeqConfig(n_layer=1, n_dec_layer=1, n_head=2, d_model=16, dropout=0.1)
    full = start_run("seq2seq", small, cfg, out_dir=tmp_path / "full", **QUIET)
    start_run("seq2seq", small, cfg, out_dir=tmp_path / "split", stop_after=4, **QUIET)
    resumed = start_run("seq2seq", small, cfg, out_dir=tmp_path / "split", resume=True, **QUIET)
    assert resumed["batch_losses"] == full["batch_losses"][4:]
    assert "exact_match" in full["history"][-1]
    model, meta = load_model(tmp_path / "split")
    assert meta["model"]["kind"] == "seq2seq" and meta["task"]["name"] == "seq2seq-reverse"
    assert model.greedy_decode(np.array([[2, 3, 4]]), 1, 3).shape == (1, 3)


def test_text_too_short(tmp_path):
    with pytest.raises(ValueError, match="fewer than block_size"):
        CausalLMTask.from_text("abc" * 5, 16)


@pytest.mark.parametrize("key, value, message", [
    ("optimizer", "lion", "unknown"),
    ("steps", "100", "steps must be an integer >= 1, got '100'"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("lr", -1e-3, "lr must be a finite number >= 0"),
    ("min_lr", float("nan"), "min_lr must be a finite number"),
    ("weight_decay", -0.1, "weight_decay"),
    ("beta2", 1.0, r"beta2 must be a finite number in \[0, 1\)"),
    ("warmup", -1, "warmup must be an integer >= 0"),
    ("grad_clip", -1.0, "grad_clip"),
    ("temperature", 0.0, "temperature must be a finite number > 0"),
    ("eval_iters", 0, "eval_iters"),
    ("dtype", "float16", "float16 training is not supported.*loss scaling"),
    ("dtype", "int8", "dtype must be one of"),
])
def test_settings_are_checked_at_the_door(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{key: value})


def test_gradient_accumulation_equals_one_big_batch(device):
    """Two micro-batches of 4 with dloss = 1/2 give the gradient of one batch of 8."""
    from minitransformer import backend
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


def test_resume_with_dropout_split_over_threads_is_bit_exact(tmp_path):
    """The replicas of a threaded run draw their own dropout masks: their generators are saved too."""
    model = GPTConfig(block_size=16, n_layer=1, n_head=2, d_model=16, dropout=0.1)
    cfg = _cfg(threads=2)
    full = _gpt_run(tmp_path / "full", cfg, model=model)
    _gpt_run(tmp_path / "split", cfg, model=model, stop_after=6)
    resumed = _gpt_run(tmp_path / "split", cfg, model=model, resume=True)
    assert resumed["batch_losses"] == full["batch_losses"][6:]
    assert len(load_checkpoint(tmp_path / "split")[2]["rng"]["replicas"]) == 1
