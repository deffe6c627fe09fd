"""The backend: devices, array modules, moving modules, clear errors for a missing GPU."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.nn.linear import Linear


def test_array_module_and_round_trip(device, xp):
    a = backend.to_device(np.arange(6.0).reshape(2, 3), device)
    assert backend.get_array_module(a) is xp
    assert backend.device_of(a) == device
    np.testing.assert_array_equal(backend.to_numpy(a), np.arange(6.0).reshape(2, 3))
    assert backend.to_device(a, device, "float32").dtype == np.float32


def test_unknown_device_and_dtype():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backend.check_device("tpu")
    with pytest.raises(TypeError, match="expected float16, float32 or float64"):
        backend.check_float_dtype("int32")


def test_cuda_unavailable_says_why():
    if backend.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(backend.DeviceError, match="CuPy|GPU"):
        backend.check_device("cuda")
    with pytest.raises(backend.DeviceError):
        Linear(2, 2).to("cuda")


def test_module_to_moves_and_casts(device):
    layer = Linear(3, 2).to(device, "float64")
    assert layer.weight.device == device and layer.weight.dtype == np.float64
    assert layer.weight.grad.dtype == np.float64


def test_wrong_device_or_dtype_input_is_named(device):
    layer = Linear(3, 2).to(device)
    with pytest.raises(TypeError, match="expected dtype float32, got float64"):
        layer.forward(backend.to_device(np.zeros((1, 3)), device))
    with pytest.raises(ValueError, match=r"expected last dimension 3, got shape \(1, 4\)"):
        layer.forward(backend.to_device(np.zeros((1, 4), np.float32), device))


def test_state_dict_from_another_configuration():
    small = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, d_model=4))
    other = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, d_model=8))
    with pytest.raises(ValueError, match=r"checkpoint has shape .* model expects"):
        small.load_state_dict(other.state_dict())
    deeper = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=2, n_head=1, d_model=4))
    with pytest.raises(ValueError, match="missing"):
        deeper.load_state_dict(small.state_dict())


def test_tune_host_allocator_is_idempotent():
    first = backend.tune_host_allocator()
    assert isinstance(first, bool)
    assert backend.tune_host_allocator() == first
