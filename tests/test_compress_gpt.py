"""Compression on the real GPT: low-rank config, SVD, LoRA fine-tuning and merging, int8, head
pruning and distillation, end to end on a tiny model."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.compress.distill import distill
from minitransformer.compress.finetune import evaluate, finetune
from minitransformer.compress.lora import apply_lora, lora_layers, merge_lora, parameter_counts, unmerge_lora
from minitransformer.compress.lowrank import LowRankLinear
from minitransformer.compress.prune import PruningMask, head_importance, head_mask
from minitransformer.compress.quantize import quantize_model
from minitransformer.compress.svd import svd_compress
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.tasks import CausalLMTask
from minitransformer.train import TrainConfig

V = 13


def _gpt(device, dtype="float64", **kw):
    cfg = GPTConfig(vocab_size=V, block_size=8, n_layer=2, n_head=2, d_model=16, **kw)
    return GPT(cfg, seed=1).to(device, dtype)


def _batch(device, seed=0, B=3, T=8):
    rng = np.random.default_rng(seed)
    return (backend.to_device(rng.integers(0, V, (B, T)), device),
            backend.to_device(rng.integers(0, V, (B, T)), device))


def _ids(seed=0, n=400):
    return np.random.default_rng(seed).integers(0, V, n)


def test_low_rank_config_builds_and_trains(device):
    dense, low = _gpt(device), _gpt(device, low_rank=2)
    assert isinstance(low.blocks[0].ffn.fc1, LowRankLinear) and low.num_parameters() < dense.num_parameters()
    losses = finetune(low, _ids(), 5, batch_size=4, lr=1e-2)
    assert all(np.isfinite(losses))


def test_full_rank_svd_keeps_logits(device):
    model = _gpt(device)
    idx, _ = _batch(device)
    before = backend.to_numpy(model.forward(idx)[0])
    svd_compress(model, ["attn.proj"], rank=16)      # 16x16: full rank
    np.testing.assert_allclose(backend.to_numpy(model.forward(idx)[0]), before, atol=1e-10)


def test_lora_finetune_merge_unmerge(device):
    model = _gpt(device)
    idx, _ = _batch(device)
    w0 = {n: backend.to_numpy(p.data).copy() for n, p in model.named_parameters()}
    base_logits = backend.to_numpy(model.forward(idx)[0])
    apply_lora(model, ["attn.qkv", "attn.proj", "ffn"], rank=2, alpha=4)
    np.testing.assert_allclose(backend.to_numpy(model.forward(idx)[0]), base_logits, atol=1e-12)  # B = 0
    counts = parameter_counts(model)
    assert 0 < counts["trainable"] < 0.5 * counts["total"]
    finetune(model, _ids(1), 4, batch_size=4, lr=1e-2)
    for n, p in model.named_parameters():
        if n in w0:                                  # every pretrained tensor is untouched
            np.testing.assert_array_equal(backend.to_numpy(p.data), w0[n])
    assert any(float(abs(l.lora_b.data).sum()) > 0 for l in lora_layers(model))
    adapted = backend.to_numpy(model.forward(idx)[0])
    assert np.abs(adapted - base_logits).max() > 1e-6
    merge_lora(model)
    np.testing.assert_allclose(backend.to_numpy(model.forward(idx)[0]), adapted, atol=1e-10)
    unmerge_lora(model)
    for n, p in model.named_parameters():
        if n in w0:
            np.testing.assert_allclose(backend.to_numpy(p.data), w0[n], rtol=0, atol=1e-14)


def test_int8_gpt_close_and_inference_only(device):
    model = _gpt(device, "float32")
    idx, y = _batch(device)
    ref, _ = model.forward(idx)
    quantize_model(model, "int8")
    out, loss = model.forward(idx, y)
    assert np.abs(backend.to_numpy(out) - backend.to_numpy(ref)).max() < 0.02 * np.abs(backend.to_numpy(ref)).max() + 1e-3
    with pytest.raises(RuntimeError, match="inference-only"):
        model.backward()


def test_head_pruning_on_gpt(device):
    model = _gpt(device)
    idx, y = _batch(device)
    model.forward(idx, y)
    model.backward()
    scores = head_importance(model, 2, "gradient")
    assert set(scores) == {"blocks.0.attn", "blocks.1.attn"}
    mask = head_mask(model, 2, scores, 0.5)
    mask.apply(model)
    model.forward(idx, y)
    for name, heads in mask.pruned_heads.items():
        block = model.blocks[int(name.split(".")[1])]
        o = backend.to_numpy(block.attn.proj.cache.x).reshape(-1, 2, 8)     # (N, H, D) head outputs
        for h in heads:
            assert np.all(o[:, h] == 0)
    finetune(model, _ids(2), 3, batch_size=4, lr=1e-2, hooks=[mask.apply])
    w = backend.to_numpy(model.blocks[0].attn.proj.weight.data).reshape(2, 8, 16)
    assert all(np.all(w[h] == 0) for h in mask.pruned_heads["blocks.0.attn"])


def test_magnitude_mask_through_finetune(device):
    model = _gpt(device)
    mask = PruningMask.magnitude(model, 0.75, ["ffn"], scope="global")
    mask.apply(model)
    finetune(model, _ids(3), 3, batch_size=4, lr=1e-2, hooks=[mask.apply])
    for name, keep in mask.masks.items():
        p = dict(model.named_parameters())[name]
        assert np.all(backend.to_numpy(p.data)[~backend.to_numpy(keep)] == 0)


def test_distill_student_learns(device):
    ids = (np.arange(400) * 5) % V                  # a predictable sequence: something to learn
    teacher = _gpt(device)
    finetune(teacher, ids, 30, batch_size=8, lr=3e-2)
    cfg = GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, d_model=8)
    student = GPT(cfg, seed=2).to(device, "float64")
    t_before = {n: backend.to_numpy(p.data).copy() for n, p in teacher.named_parameters()}
    before = evaluate(student, ids, 8, 4)
    cfg = TrainConfig(steps=20, batch_size=8, lr=3e-2, min_lr=3e-2, warmup=0, weight_decay=0.0,
                      threads=1, dtype="float64")
    result = distill(student, teacher, CausalLMTask(ids[:320], ids[320:], 8), cfg, temperature=2.0, alpha=0.7)
    losses = result["batch_losses"]
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert len(result["history"]) == 1                   # validated through the loop at the last step
    assert evaluate(student, ids, 8, 4) < before
    for n, p in teacher.named_parameters():
        np.testing.assert_array_equal(backend.to_numpy(p.data), t_before[n])
