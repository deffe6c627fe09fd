"""Configuration files: TOML (or JSON) mapped onto the frozen dataclasses, with presets by name.

A file has up to two tables, ``[model]`` (GPTConfig) and ``[train]`` (TrainConfig), and may name a
``preset`` to start from:

    preset = "default"
    [model]
    n_layer = 6
    [train]
    steps = 3000

Unknown keys raise ValueError naming the key and the allowed ones.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path


def from_dict(cls, values: dict, where: str):
    """Build dataclass `cls` from `values`, refusing unknown keys; lists become tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(fields)}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**clean)


def replace(config, values: dict, where: str):
    """A copy of a frozen config with `values` changed, refusing unknown keys."""
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(fields)}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return dataclasses.replace(config, **clean)


def read_config_file(path) -> dict:
    """Parse a TOML or JSON file into a dict; unreadable files raise a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from None


def load_run_config(preset: str = "default", path=None, overrides: dict | None = None):
    """(GPTConfig, TrainConfig) from a preset, then a config file, then explicit overrides."""
    from .presets import PRESETS
    data = read_config_file(path) if path else {}
    unknown = sorted(set(data) - {"preset", "model", "train"})
    if unknown:
        raise ValueError(f"unknown top-level key(s) {unknown} in {path}; allowed: preset, model, train")
    name = data.get("preset", preset)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    model_cfg, train_cfg = PRESETS[name]
    model_cfg = replace(model_cfg, data.get("model", {}), f"{path} [model]")
    train_cfg = replace(train_cfg, data.get("train", {}), f"{path} [train]")
    overrides = overrides or {}
    model_cfg = replace(model_cfg, overrides.get("model", {}), "command-line model options")
    train_cfg = replace(train_cfg, overrides.get("train", {}), "command-line train options")
    return model_cfg, train_cfg
