"""Checkpoints: exact round trip, atomic writes, corruption and mismatch detection."""
import json

import numpy as np
import pytest

from minitransformer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state():
    rng = np.random.default_rng(0)
    return {"a.weight": rng.standard_normal((3, 4)).astype(np.float32), "a.bias": np.zeros(4, np.float32)}


def test_round_trip_exact(tmp_path):
    state = _state()
    opt = {"m.0": np.ones((3, 4), np.float32)}
    save_checkpoint(tmp_path, state, {"step": 7, "note": "x"}, opt)
    loaded, opt2, meta = load_checkpoint(tmp_path)
    for k in state:
        np.testing.assert_array_equal(loaded[k], state[k])
        assert loaded[k].dtype == state[k].dtype
    np.testing.assert_array_equal(opt2["m.0"], opt["m.0"])
    assert meta["step"] == 7
    assert json.loads((tmp_path / "config.json").read_text())["step"] == 7
    assert not list(tmp_path.glob("*.tmp"))          # no temporary files left behind


def test_corruption_is_detected(tmp_path):
    path = save_checkpoint(tmp_path, _state(), {"step": 1})
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF                                   # flip bits inside the tensor data
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path)


def test_truncated_and_missing(tmp_path):
    path = save_checkpoint(tmp_path, _state(), {"step": 1})
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="unreadable or corrupted"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _state(), {"step": 1})
    import safetensors.numpy

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, _state(), {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)[2]["step"] == 1
    assert not list(tmp_path.glob("*.tmp"))
