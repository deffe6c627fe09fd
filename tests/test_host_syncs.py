"""Host syncs of the training step, counted on the CPU.

On a GPU every conversion of a device value to a Python value (`float(x)`, `int(x)`, `if x > 0:`,
`x.item()`, a copy to the host, a boolean-mask index whose size is unknown until the mask is counted)
makes the host wait for all queued GPU work. To count these without a GPU, `DeviceArray` plays the
part of a device array: a NumPy array whose every result, 0-d reductions included, stays a
`DeviceArray` (CuPy's reductions return 0-d device arrays, not host scalars), and whose every
conversion to a host value adds one to `DeviceArray.syncs`. `backend.to_numpy` of one counts too.
"""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.nn import checks
from minitransformer.optim import AdamW, clip_grad_norm, decay_groups


def _unwrap(x):
    if isinstance(x, DeviceArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(a) for a in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return x.view(DeviceArray)
    if isinstance(x, np.generic):                       # a host scalar: keep it "on the device", 0-d
        return np.asarray(x).view(DeviceArray)
    if isinstance(x, tuple):
        return tuple(_wrap(a) for a in x)
    return x


class DeviceArray(np.ndarray):
    """A NumPy array standing in for a CuPy one: counts every transfer of its values to the host."""

    syncs = 0

    def _sync(self):
        DeviceArray.syncs += 1
        return self.view(np.ndarray)

    def __float__(self):
        return float(self._sync())

    def __int__(self):
        return int(self._sync())

    def __index__(self):
        return self._sync().__index__()

    def __bool__(self):
        return bool(self._sync())

    def __complex__(self):
        return complex(self._sync())

    def item(self, *args):
        return self._sync().item(*args)

    def tolist(self):
        return self._sync().tolist()

    def tobytes(self, *args, **kwargs):
        return self._sync().tobytes(*args, **kwargs)

    def __format__(self, spec):
        return format(self._sync(), spec)

    def __getitem__(self, key):
        if isinstance(key, np.ndarray) and key.dtype == bool:
            DeviceArray.syncs += 1                      # the result's size needs the mask's count
        return _wrap(self.view(np.ndarray)[_unwrap(key)])

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if out is not None:                             # written in place: hand back the same objects
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))


@pytest.fixture
def syncs(monkeypatch):
    """Count host syncs; `syncs()` gives the count so far."""
    to_numpy = backend.to_numpy

    def counting_to_numpy(array):
        if isinstance(array, DeviceArray):
            DeviceArray.syncs += 1
            return array.view(np.ndarray).copy()
        return to_numpy(array)

    monkeypatch.setattr(backend, "to_numpy", counting_to_numpy)
    DeviceArray.syncs = 0
    return lambda: DeviceArray.syncs


def on_device(x):
    return np.asarray(x).view(DeviceArray)


def test_the_counter_sees_the_syncs_of_the_old_clip(syncs):
    """The counter can fail: the old clip_grad_norm, one float() per parameter, counts one each."""
    grads = [on_device(np.ones(n)) for n in (3, 4, 5)]
    total = sum(float(np.vdot(g.ravel(), g.ravel())) for g in grads)
    assert total == 12.0 and syncs() == 3
    lo, hi = int(grads[0].min()), int(grads[0].max())
    assert (lo, hi) == (1, 1) and syncs() == 5
    assert isinstance(grads[0].sum(), DeviceArray)            # reductions stay on the "device"
    used = grads[1][grads[1] > 0]                             # boolean mask: one more
    assert used.size == 4 and syncs() == 6


def _model_and_grads():
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=6, n_head=2, d_model=16)
    model = GPT(cfg, seed=0)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.grad = rng.standard_normal(p.shape) * 3.0           # norm well above the clip of 1
    return model


def _train_step(model):
    norm = clip_grad_norm(model.parameters(), 1.0)
    opt = AdamW(decay_groups(model.named_parameters(), 0.1), lr=1e-3, betas=(0.9, 0.99))
    opt.step()
    opt.step()
    return norm


def test_clip_and_adamw_step_make_no_host_sync(syncs):
    reference = _model_and_grads()
    expected_norm = _train_step(reference)

    model = _model_and_grads()
    params = model.parameters()
    assert len(params) >= 50                                   # many parameters, many chances to sync
    for p in params:
        p.data, p.grad = on_device(p.data), on_device(p.grad)
    norm = _train_step(model)
    assert syncs() == 0
    assert isinstance(norm, DeviceArray) and norm.ndim == 0    # the norm stays on the device
    assert float(norm) == pytest.approx(float(expected_norm), rel=1e-12)
    assert syncs() == 1                                        # the caller's float() is the one sync
    for p, q in zip(params, reference.parameters()):
        np.testing.assert_allclose(p.data.view(np.ndarray), q.data, rtol=1e-12)


def test_device_token_id_check_costs_one_sync(syncs):
    idx = on_device(np.array([[0, 3, 9], [2, 2, 1]]))
    checks.check_token_ids(idx, "ids", vocab_size=10)
    assert syncs() == 1
    with pytest.raises(ValueError, match=r"got values in \[0, 9\]"):
        checks.check_token_ids(idx, "ids", vocab_size=9)
    assert syncs() == 2


@pytest.mark.parametrize("targets, n_classes, message", [
    ([[0, -1, 4], [-1, 2, 3]], 5, None),
    ([[0, -1, 7], [-1, 2, 3]], 5, r"got values in \[0, 7\]"),       # -1 (ignored) is not reported
    ([[-1, -1, -1], [-1, -1, -1]], 5, None),                           # all ignored: nothing to check
    ([[-3, -1, 1], [-1, 2, 3]], 5, r"got values in \[-3, 3\]"),
])
def test_device_target_check_costs_one_sync(syncs, targets, n_classes, message):
    t = on_device(np.array(targets))
    if message is None:
        checks.check_targets(t, "targets", n_classes, ignore_index=-1, shape=(2, 3))
    else:
        with pytest.raises(ValueError, match=message):
            checks.check_targets(t, "targets", n_classes, ignore_index=-1, shape=(2, 3))
    assert syncs() == 1


def test_values_checked_on_the_host_cost_no_sync(syncs):
    """A trusted caller checks the host batch (no sync) and vouches for its device copy."""
    x, y = np.array([[1, 2, 3]]), np.array([[2, 3, -1]])
    checks.check_token_ids(x, "ids", vocab_size=4)
    checks.check_targets(y, "targets", 4, ignore_index=-1, shape=(1, 3))
    with checks.values_checked_on_host():
        checks.check_token_ids(on_device(x), "ids", vocab_size=4)
        checks.check_targets(on_device(y), "targets", 4, ignore_index=-1, shape=(1, 3))
        with pytest.raises(ValueError, match="dimensions"):         # shapes are still checked
            checks.check_token_ids(on_device(x[0]), "ids", vocab_size=4)
    assert syncs() == 0
    with pytest.raises(ValueError, match="token ids must lie"):    # and values again outside
        checks.check_token_ids(on_device(x), "ids", vocab_size=3)
