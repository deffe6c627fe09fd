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


def _edit_metadata(path, edit):
    """Rewrite a checkpoint with its metadata changed by `edit`, the digest left as it was."""
    from safetensors import safe_open
    from safetensors.numpy import save_file
    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["minitransformer"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(meta)
    save_file(tensors, str(path), metadata={"minitransformer": json.dumps(meta)})


@pytest.mark.parametrize("edit", [
    lambda m: m["model"]["config"].update(n_head=1),            # another architecture
    lambda m: m.update(tokenizer={"type": "char", "chars": "ba"}),  # another vocabulary order
    lambda m: m.update(step=99),
])
def test_edited_metadata_is_detected(tmp_path, edit):
    meta = {"model": {"kind": "gpt", "config": {"n_head": 2}}, "tokenizer": {"type": "char", "chars": "ab"},
            "step": 1}
    path = save_checkpoint(tmp_path, _state(), meta)
    load_checkpoint(tmp_path)                                     # untouched: loads
    _edit_metadata(path, edit)
    with pytest.raises(CheckpointError, match="corrupted or was edited"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("kind", ["gpt", "seq2seq"])
def test_load_model_builds_any_registered_family(tmp_path, kind, device):
    from minitransformer import backend
    from minitransformer.checkpoint import load_model
    from minitransformer.models import build_model
    from minitransformer.models.gpt import GPTConfig
    from minitransformer.models.seq2seq import Seq2SeqConfig
    config = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, d_model=8) if kind == "gpt" else \
        Seq2SeqConfig(src_vocab_size=7, tgt_vocab_size=7, max_src_len=5, max_tgt_len=5, n_layer=1,
                      n_dec_layer=1, n_head=2, d_model=8)
    model = build_model(kind, config, seed=3)
    save_checkpoint(tmp_path, model.state_dict(), {"model": model.describe()})
    loaded, meta = load_model(tmp_path, device)
    assert type(loaded) is type(model) and loaded.config == config and loaded.device == device
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)
    assert backend.device_of(loaded.parameters()[0].data) == device
