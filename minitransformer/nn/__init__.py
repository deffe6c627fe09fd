"""Layers: functional forward/backward pairs (`functional/`) and the Modules that own parameters."""
from .module import Module, Parameter
from .linear import Linear
from .embedding import Embedding
from .layernorm import LayerNorm
from .dropout import Dropout
from .activations import GELU, ReLU, Softmax
from .loss import CrossEntropyLoss
