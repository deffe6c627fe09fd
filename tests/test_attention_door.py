"""One door for every attention kernel: the same bad input gets the same error from each."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention import make_kernel
from minitransformer.attention.multi_head import MultiHeadAttention
from test_kernels_in_models import KERNELS, OPTIONS, T


def _kernel(name, device):
    return make_kernel(name, 2, 8, max_len=T, **OPTIONS.get(name, {})).to(device, "float32")


def _qkv(device, dv=8):
    rng = np.random.default_rng(0)
    q, k = (backend.to_device(rng.standard_normal((2, 2, T, 8)), device, "float32") for _ in range(2))
    return q, k, backend.to_device(rng.standard_normal((2, 2, T, dv)), device, "float32")


def _causal(kern):
    return getattr(kern, "requires_causal", False)


@pytest.mark.parametrize("name", KERNELS)
def test_every_kernel_refuses_the_same_inputs_the_same_way(name, device):
    kern = _kernel(name, device)
    q, k, v = _qkv(device)
    causal = _causal(kern)
    with pytest.raises(ValueError, match=r"v must have shape \(B, H, S, D\)"):
        kern.forward(q, k, _qkv(device, dv=4)[2], causal=causal)          # Dv != D: refused by all
    with pytest.raises(TypeError, match="key_padding_mask: expected a boolean"):
        kern.forward(q, k, v, causal=causal, key_padding_mask=backend.to_device(np.zeros((2, T), np.int64), device))
    with pytest.raises(ValueError, match=r"key_padding_mask: expected shape \(B, S\)"):
        kern.forward(q, k, v, causal=causal, key_padding_mask=backend.to_device(np.zeros((1, T), bool), device))
    with pytest.raises(ValueError, match="every key of every sequence as padding"):
        kern.forward(q, k, v, causal=causal, key_padding_mask=backend.to_device(np.ones((2, T), bool), device))
    with pytest.raises(TypeError, match="floating-point"):
        kern.forward(q.astype("int64"), k, v, causal=causal)
    with pytest.raises(TypeError, match="share one dtype"):
        kern.forward(q, k.astype("float64"), v, causal=causal)
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        kern.forward(q[0], k, v, causal=causal)


@pytest.mark.parametrize("name", KERNELS)
def test_padding_is_true_on_padding_for_every_kernel(name, device):
    """PyTorch's polarity: True marks padding. Padding the last keys of a sequence changes its
    output; marking them False (real) leaves it as without a mask."""
    kern = _kernel(name, device).eval()
    if not kern.supports_padding:
        pytest.skip(f"{name} takes no padding mask")
    q, k, v = _qkv(device)
    causal = _causal(kern)
    pad = np.zeros((2, T), bool)
    pad[1, -4:] = True                                                       # sequence 1: 4 padding keys
    plain = backend.to_numpy(kern.forward(q, k, v, causal=causal))
    none_padded = backend.to_numpy(kern.forward(q, k, v, causal=causal,
                                                key_padding_mask=backend.to_device(np.zeros((2, T), bool), device)))
    padded = backend.to_numpy(kern.forward(q, k, v, causal=causal, key_padding_mask=backend.to_device(pad, device)))
    np.testing.assert_allclose(none_padded, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(padded[0], plain[0], rtol=1e-5, atol=1e-6)   # sequence 0 untouched
    assert not np.allclose(padded[1], plain[1])


def test_multi_head_attention_passes_the_mask_through_the_door(device):
    mha = MultiHeadAttention(16, 2, rng=backend.host_rng(0)).to(device)
    x = backend.to_device(np.random.default_rng(1).standard_normal((2, 5, 16)), device, "float32")
    with pytest.raises(TypeError, match="key_padding_mask: expected a boolean"):
        mha.forward(x, key_padding_mask=backend.to_device(np.ones((2, 5), np.int64), device))
