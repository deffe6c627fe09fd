"""Checkpoints: one safetensors file holding the weights, the optimizer state and (as metadata)
the configuration, tokenizer, step and random-generator state. A readable `config.json` copy is
written beside it.

Written atomically (temporary file, fsync, rename), so a crash mid-write leaves the previous
checkpoint intact. Verified on load: a SHA-256 of every tensor is stored in the metadata and
recomputed, so a corrupted or truncated file raises CheckpointError instead of loading garbage.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np  # I/O at the edge: checkpoints are host arrays

FORMAT_VERSION = 1
FILENAME = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable, corrupted or from another configuration."""


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
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


# --8<-- [start:save]
def save_checkpoint(path, model_state: dict, meta: dict, optimizer_state: dict | None = None) -> Path:
    """Write weights (+ optimizer arrays under 'optimizer/') and JSON-able `meta` to `path`.

    `path` may be a directory (the file is then `path/checkpoint.safetensors`) or a file name.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / FILENAME
    tensors = {f"model/{k}": np.ascontiguousarray(v) for k, v in model_state.items()}
    for k, v in (optimizer_state or {}).items():
        tensors[f"optimizer/{k}"] = np.ascontiguousarray(v)
    meta = {**meta, "format_version": FORMAT_VERSION, "sha256": _digest(tensors)}
    metadata = {"minitransformer": json.dumps(meta)}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    readable = {k: v for k, v in meta.items() if k not in ("rng", "sha256")}
    _atomic_write(path.parent / "config.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(readable, indent=2) + "\n"))
    return path
# --8<-- [end:save]


def load_checkpoint(path):
    """Return (model_state, optimizer_state, meta) after verifying the file; raise CheckpointError."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
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
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r}: format version {meta.get('format_version')}, "
                              f"expected {FORMAT_VERSION}")
    if _digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: its tensors do not match the "
                              "SHA-256 stored when it was written")
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    optimizer_state = {k[len("optimizer/"):]: v for k, v in tensors.items() if k.startswith("optimizer/")}
    return model_state, optimizer_state, meta
