"""Checkpoints of any registered model: one safetensors file holding the weights and buffers, the
optimizer state and (as metadata) the model's kind and config, the tokenizer, the task and the
training state (step, random generators, validation losses). A readable `config.json` is written
beside it.

A run directory holds two: ``checkpoint.safetensors``, the *last* one (resume continues from it), and
``best.safetensors``, the one with the lowest validation loss so far (what `generate` and
`compress` load by default).

Written atomically (temporary file, fsync, rename), so a crash mid-write leaves the previous
checkpoint intact; temporary files a killed run left behind are removed by ``clean_run_dir``.
Verified on load: a SHA-256 of every tensor *and* of the metadata is stored and recomputed, so a
corrupted, truncated or edited file raises CheckpointError instead of loading something else.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np  # I/O at the edge: checkpoints are host arrays

FORMAT_VERSION = 2
LAST = "checkpoint.safetensors"
BEST = "best.safetensors"
READABLE = "config.json"


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable, corrupted or from another configuration."""


def _digest(tensors: dict, meta: dict) -> str:
    """SHA-256 of every tensor (name, dtype, shape, bytes) and of the metadata as canonical JSON."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename over `path` (and fsync the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def checkpoint_file(path, which: str = "last") -> Path:
    """The file of a checkpoint path: a .safetensors file as given, or in a run directory the last
    checkpoint (which="last") or the best one (which="best", the last when there is no best)."""
    if which not in ("last", "best"):
        raise ValueError(f"checkpoint: which must be 'last' or 'best', got {which!r}")
    path = Path(path)
    if path.suffix == ".safetensors":
        return path
    if which == "best" and (path / BEST).is_file():
        return path / BEST
    return path / LAST


# --8<-- [start:save]
def save_checkpoint(path, model_state: dict, meta: dict, optimizer_state: dict | None = None) -> Path:
    """Write weights (+ optimizer arrays under 'optimizer/') and JSON-able `meta` to `path`.

    `path` may be a directory (the file is then `path/checkpoint.safetensors`) or a file name.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / LAST
    tensors = {f"model/{k}": np.ascontiguousarray(v) for k, v in model_state.items()}
    for k, v in (optimizer_state or {}).items():
        tensors[f"optimizer/{k}"] = np.ascontiguousarray(v)
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    meta = json.loads(json.dumps({**meta, "format_version": FORMAT_VERSION}))   # exactly what load sees
    metadata = {"minitransformer": json.dumps({**meta, "sha256": _digest(tensors, meta)})}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    if path.name == LAST:
        readable = {k: v for k, v in meta.items() if k != "rng"}
        _atomic_write(path.parent / READABLE,
                      lambda tmp: Path(tmp).write_text(json.dumps(readable, indent=2) + "\n"))
    return path
# --8<-- [end:save]


def load_checkpoint(path, which: str = "last"):
    """Return (model_state, optimizer_state, meta) after verifying the file; raise CheckpointError."""
    from safetensors import safe_open

    path = checkpoint_file(path, which)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw_meta = (f.metadata() or {}).get("minitransformer")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several error types for damaged files
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable or corrupted: {err}") from None
    if raw_meta is None:
        raise CheckpointError(f"{str(path)!r} is a safetensors file but not a minitransformer checkpoint")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {str(path)!r}: metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint {str(path)!r}: format version {version}, expected "
                              f"{FORMAT_VERSION} (written by another version of minitransformer)")
    stored = meta.pop("sha256", None)
    if _digest(tensors, meta) != stored:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted or was edited: its tensors and "
                              "metadata do not match the SHA-256 stored when it was written")
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    optimizer_state = {k[len("optimizer/"):]: v for k, v in tensors.items() if k.startswith("optimizer/")}
    return model_state, optimizer_state, meta


def model_of(meta: dict, path, device: str = "cpu", dtype=None):
    """The freshly initialised model a checkpoint's metadata describes, on `device` in `dtype`
    (default: the training dtype); CheckpointError when it cannot be built."""
    from .models.registry import model_from_description

    if "model" not in meta:
        raise CheckpointError(f"checkpoint {str(path)!r} does not describe its model (no 'model' entry)")
    try:
        model = model_from_description(meta["model"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot build its model: {err}") from None
    return model.to(device, dtype or meta.get("train_config", {}).get("dtype", "float32"))


def load_weights(model, state: dict, path) -> None:
    """Load a checkpoint's arrays into `model`; a mismatch is a CheckpointError naming the file."""
    try:
        model.load_state_dict(state)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {str(path)!r}: {err}") from None


def load_model(path, device: str = "cpu", dtype=None, which: str = "best"):
    """(model, meta) from a checkpoint of any registered family: the model its metadata describes,
    with the saved weights and buffers, on `device` in `dtype` (default: the training dtype)."""
    state, _, meta = load_checkpoint(path, which)
    model = model_of(meta, path, device, dtype)
    load_weights(model, state, path)
    return model, meta


def tokenizer_of(meta: dict, path="the checkpoint"):
    """The tokenizer a checkpoint recorded, or CheckpointError when it has none."""
    from .data.tokenizer import tokenizer_from_dict
    if not meta.get("tokenizer"):
        raise CheckpointError(f"{path} records no tokenizer (its model, {meta.get('model', {}).get('kind')!r}, "
                              "was not trained on text)")
    return tokenizer_from_dict(meta["tokenizer"])


# -- run directories ------------------------------------------------------------------------------
RUN_FILES = (LAST, BEST, READABLE, "metrics.jsonl")


def clean_run_dir(out_dir) -> list[Path]:
    """Remove the temporary files that a killed run left in `out_dir`; return them."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    stale = [p for name in (LAST, BEST, READABLE) for p in out_dir.glob(f"{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def holds_run(out_dir) -> bool:
    """True when `out_dir` already holds a training run (a checkpoint or metrics)."""
    return any((Path(out_dir) / name).exists() for name in RUN_FILES)


def remove_run(out_dir) -> None:
    """Delete a run's files from `out_dir` (for --overwrite); other files are left alone."""
    for name in RUN_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)
