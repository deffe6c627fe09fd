"""Model families by name: ``register_model("gpt", GPTConfig)`` on the model class.

`minitransformer train --model NAME`, checkpoints (which record ``describe()``) and the exporters
find a family here; ``build_model(kind, config)`` and ``model_from_description(describe())`` rebuild
it. Unknown names and unknown configuration keys raise ValueError listing what exists.
"""
from __future__ import annotations

from typing import NamedTuple

from ..config import from_dict


class ModelFamily(NamedTuple):
    name: str
    model_cls: type
    config_cls: type
    summary: str            # one line for `--help`


_FAMILIES: dict[str, ModelFamily] = {}


# --8<-- [start:register_model]
def register_model(name: str, config_cls: type, summary: str):
    """Class decorator: make a Model subclass buildable by `name` from a `config_cls`."""
    def wrap(cls):
        if name in _FAMILIES and _FAMILIES[name].model_cls is not cls:
            raise ValueError(f"model family {name!r} registered twice")
        _FAMILIES[name] = ModelFamily(name, cls, config_cls, summary)
        cls.kind = name
        return cls
    return wrap
# --8<-- [end:register_model]


def model_families() -> dict[str, ModelFamily]:
    """Every registered family by name (importing the model modules registers them)."""
    _import_all_models()
    return dict(sorted(_FAMILIES.items()))


def family(kind: str) -> ModelFamily:
    families = model_families()
    if kind not in families:
        raise ValueError(f"unknown model family {kind!r}; known: {sorted(families)}")
    return families[kind]


def build_model(kind: str, config, seed: int = 0):
    """A fresh model of family `kind` from its config (a dataclass or a dict of its fields)."""
    fam = family(kind)
    if isinstance(config, dict):
        config = from_dict(fam.config_cls, config, f"the {kind} model configuration")
    if not isinstance(config, fam.config_cls):
        raise TypeError(f"model family {kind!r} takes a {fam.config_cls.__name__}, got {type(config).__name__}")
    return fam.model_cls(config, seed=seed)


def model_from_description(description: dict, seed: int = 0):
    """The model that `Model.describe()` described (weights freshly initialised)."""
    if not isinstance(description, dict) or "kind" not in description or "config" not in description:
        raise ValueError(f"a model description needs 'kind' and 'config', got {description!r:.120}")
    return build_model(description["kind"], description["config"], seed=seed)


def _import_all_models() -> None:
    import importlib
    import pkgutil

    from .. import models
    for info in pkgutil.iter_modules(models.__path__):
        importlib.import_module(f"{models.__name__}.{info.name}")
