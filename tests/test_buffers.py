"""Buffers are state: arrays that are not trained but change the output (Performer's random
features, Reformer's rotations, ...) travel with the weights through a checkpoint. For every
registered attention kernel, a model saved and loaded into one built with another seed gives
identical outputs in eval mode."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.blocks import Encoder
from minitransformer.checkpoint import load_model, save_checkpoint
from minitransformer.models.gpt import GPT, GPTConfig
from test_kernels_in_models import BIDIRECTIONAL, CAUSAL, KERNELS, OPTIONS, T


def _ids(device, seed=0):
    return backend.to_device(np.random.default_rng(seed).integers(0, 6, (2, T)), device)


@pytest.mark.parametrize("name", CAUSAL)
def test_gpt_checkpoint_round_trip_is_exact_for_every_causal_kernel(name, tmp_path, device):
    cfg = GPTConfig(vocab_size=6, block_size=T, n_layer=2, n_head=2, d_model=16, attention=name,
                    attention_options=OPTIONS.get(name, {}))
    model = GPT(cfg, seed=0).to(device)
    model.forward(_ids(device, 1), _ids(device, 2))      # a training pass: random kernels redraw
    model.eval()
    expected, _ = model.forward(_ids(device))
    save_checkpoint(tmp_path, model.state_dict(), {"model": model.describe()})
    loaded, _ = load_model(tmp_path, device)             # built afresh (seed 0 by default) ...
    other = GPT(cfg, seed=123).to(device)                # ... and into a model of another seed
    other.load_state_dict(model.state_dict())
    for m in (loaded, other):
        m.eval()
        got, _ = m.forward(_ids(device))
        np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(expected))


@pytest.mark.parametrize("name", sorted(set(BIDIRECTIONAL) - set(CAUSAL)))
def test_encoder_state_round_trip_is_exact_for_the_other_kernels(name, device):
    """Kernels that cannot mask causally (so no GPT can use them) in a bidirectional encoder."""
    def build(seed):
        return Encoder(1, 16, 2, attention=name, attention_options=OPTIONS.get(name, {}), max_len=T,
                       rng=backend.host_rng(seed)).to(device)
    x = backend.to_device(np.random.default_rng(0).standard_normal((2, T, 16)).astype(np.float32), device)
    model = build(0)
    model.forward(x)
    model.eval()
    expected = model.forward(x)
    other = build(99)
    other.load_state_dict(model.state_dict())
    other.eval()
    np.testing.assert_array_equal(backend.to_numpy(other.forward(x)), backend.to_numpy(expected))


def test_every_kernel_is_covered_by_a_round_trip():
    assert set(CAUSAL) | set(BIDIRECTIONAL) == set(KERNELS)


def test_the_kernels_with_random_state_save_it():
    """The test above can only fail where a kernel has random state: make sure those list it."""
    for name, buffer in (("performer", "omega"), ("reformer", "rotations")):
        cfg = GPTConfig(vocab_size=6, block_size=T, n_layer=1, n_head=2, d_model=16, attention=name,
                        attention_options=OPTIONS.get(name, {}))
        assert any(key.endswith(f"kernel.{buffer}") for key in GPT(cfg).state_dict()), name
