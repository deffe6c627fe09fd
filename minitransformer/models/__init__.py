"""Model families, one file each, registered by name (see ``registry.py`` and ``model.py``)."""
from .model import IGNORE_INDEX, Model
from .registry import build_model, family, model_families, model_from_description, register_model

__all__ = ["IGNORE_INDEX", "Model", "build_model", "family", "model_families", "model_from_description",
           "register_model"]
