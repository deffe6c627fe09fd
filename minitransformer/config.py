"""Frozen configuration dataclasses to and from plain dicts (what TOML, JSON and checkpoints hold).

Unknown keys raise ValueError naming the key and the allowed ones; lists become tuples. Reading
configuration *files* happens at the edge (``presets.py``, the CLI), never here or in models.
"""
from __future__ import annotations

import dataclasses


def _clean(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _check_keys(fields, values: dict, where: str) -> None:
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(fields)}")


def from_dict(cls, values: dict, where: str):
    """Build dataclass `cls` from `values`, refusing unknown keys."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a table of settings, got {type(values).__name__}")
    _check_keys({f.name for f in dataclasses.fields(cls)}, values, where)
    return cls(**_clean(values))


def replace(config, values: dict, where: str):
    """A copy of a frozen config with `values` changed, refusing unknown keys."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a table of settings, got {type(values).__name__}")
    _check_keys({f.name for f in dataclasses.fields(config)}, values, where)
    return dataclasses.replace(config, **_clean(values))


def to_dict(config) -> dict:
    """A JSON-able dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def require_int(config, name: str, minimum: int = 1) -> None:
    """config.<name> must be an integer >= minimum (a TOML string "100" is refused, naming the key)."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{type(config).__name__}.{name} must be an integer >= {minimum}, got {value!r}")


def require_number(config, name: str, low: float | None = None, high: float | None = None,
                   low_open: bool = False, high_open: bool = False) -> None:
    """config.<name> must be a finite real number in the given interval."""
    value = getattr(config, name)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value == value \
        and abs(value) != float("inf")
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        allowed = f"in {lo}, {hi}" if low is not None and high is not None else \
            (f">{'' if low_open else '='} {low}" if low is not None else f"<{'' if high_open else '='} {high}")
        raise ValueError(f"{type(config).__name__}.{name} must be a finite number {allowed}, got {value!r}")
