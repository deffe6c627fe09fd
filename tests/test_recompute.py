"""Activation checkpointing: a recomputed block gives the gradients of the ordinary one, dropout
included (the recomputation draws the same masks), keeps no activations between its forward and
backward, and leaves names and state unchanged; fit with checkpoint_activations trains the same."""
import copy

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.distributed.recompute import RecomputedBlock, checkpoint_blocks
from minitransformer.models.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, d_model=16, dropout=0.2)


def _grads(model, x, y):
    model.zero_grad()
    _, loss = model.forward(x, y)
    model.backward()
    return float(loss), {n: backend.to_numpy(p.grad).copy() for n, p in model.named_parameters()}


def test_recomputed_blocks_give_the_same_gradients_with_dropout(device):
    rng = np.random.default_rng(0)
    x = backend.to_device(rng.integers(0, 11, (4, 8)), device)
    y = backend.to_device(rng.integers(0, 11, (4, 8)), device)
    plain = GPT(CFG, seed=2).to(device, "float64")
    checkpointed = copy.deepcopy(plain)
    assert checkpoint_blocks(checkpointed) == CFG.n_layer
    assert checkpoint_blocks(checkpointed) == CFG.n_layer          # a second call changes nothing
    assert type(checkpointed.blocks[0]).__mro__[2] is type(plain.blocks[0])
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    for _ in range(2):                                   # twice: the mask streams stay in step
        loss_a, a = _grads(plain, x, y)
        loss_b, b = _grads(checkpointed, x, y)
        assert loss_a == loss_b
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-13, err_msg=name)


def test_a_recomputed_block_keeps_only_its_input():
    model = GPT(CFG, seed=2).to("cpu", "float64")
    checkpoint_blocks(model)
    x = np.random.default_rng(1).integers(0, 11, (2, 8))
    model.forward(x, x)
    for block in model.blocks:
        assert isinstance(block, RecomputedBlock)
        assert block.attn.cache is None and block.ffn.fc1.cache is None      # nothing kept
        assert block._recompute_inputs is not None
    model.backward()
    for block in model.blocks:                     # the recomputed activations are dropped again
        assert all(getattr(m, "cache", None) is None for m in block.modules())
        assert block.attn.kernel.last_weights is None
    with pytest.raises(RuntimeError, match="no forward was kept"):
        model.blocks[0].backward(np.zeros((2, 8, 16)))
    with pytest.raises(ValueError, match="no encoder or decoder blocks"):
        from minitransformer.nn.linear import Linear
        checkpoint_blocks(Linear(2, 2))


def test_training_with_checkpointed_activations_is_the_same_run(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent / "mpi"))
    from test_distributed import largest_difference, run_ranks
    plain, _ = run_ranks(1, tmp_path, "plain", steps=3, dtype="float64")
    recomputed, _ = run_ranks(1, tmp_path, "recomputed", steps=3, dtype="float64", recompute=True)
    assert largest_difference(plain, recomputed) < 1e-12
