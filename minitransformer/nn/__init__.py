"""Layers: functional forward/backward pairs (`functional/`) and the Modules that own parameters."""
from .module import Module, Parameter
from .linear import Linear
