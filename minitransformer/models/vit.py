r"""ViT, the Vision Transformer (Dosovitskiy et al., 2021): an image read as a sequence of patches.

The image is cut into $N = (S/P)^2$ patches, each flattened in (c, r, s) order and projected by
one matrix; a learned [CLS] row goes in front, learned positions are added; a pre-LN encoder with a
final LayerNorm runs over the $N + 1$ rows; a linear head reads the class from [CLS]:

$$Z^0 = [\,c;\ \mathrm{patches}(x) W_E + b_E\,] + P_{pos}, \qquad
  h = \mathrm{LN}(\mathrm{Encoder}(Z^0)), \qquad \text{logits} = h_{0} W_{head} + b_{head}.$$

[CLS] and the head start at zero. Only [CLS] feeds the head, so the gradient that enters the
encoder is zero at every patch row; it reaches the patches through attention.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np  # host side only (seeded init, test inputs); array math uses xp

from .. import backend
from ..blocks import ACTIVATIONS, Encoder
from ..config import require_int, require_number
from ..gradcheck import check_module, register
from ..nn.checks import check_array, check_targets
from ..nn.class_token import ClassTokenAndPositions
from ..nn.functional.cross_entropy import cross_entropy_forward
from ..nn.linear import Linear
from ..nn.patch_embedding import PatchEmbedding
from .model import IGNORE_INDEX, Model
from .registry import register_model


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 8             # S: images are S x S pixels
    patch_size: int = 4             # P: patches are P x P pixels; P must divide S
    channels: int = 1               # C_img: colour channels of the input
    n_classes: int = 10             # classes of the label
    n_layer: int = 2                # L: encoder blocks
    n_head: int = 4                 # H
    d_model: int = 64               # C: width of every token
    d_ff: int | None = None         # F: feed-forward width (None: 4 * d_model)
    dropout: float = 0.0            # residual dropout inside the blocks
    activation: str = "gelu"        # "gelu", "gelu_tanh" or "relu"
    attention: str = "dense"        # attention kernel by name
    attention_options: dict = field(default_factory=dict)  # options of that kernel

    def __post_init__(self):
        for name in ("image_size", "patch_size", "channels", "n_classes", "n_layer", "n_head", "d_model"):
            require_int(self, name, 1)
        if self.d_ff is not None:
            require_int(self, "d_ff", 1)
        if self.image_size % self.patch_size:
            raise ValueError(f"ViTConfig: image_size={self.image_size} is not divisible by patch_size="
                             f"{self.patch_size}; choose a patch size in "
                             f"{[p for p in range(1, self.image_size + 1) if self.image_size % p == 0]}")
        if self.d_model % self.n_head:
            raise ValueError(f"ViTConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.n_classes < 2:
            raise ValueError(f"ViTConfig.n_classes must be at least 2, got {self.n_classes}")
        require_number(self, "dropout", 0, 1, high_open=True)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ViTConfig.activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def n_patches(self) -> int:
        """N = (S/P)^2, the patch rows (the encoder sees N + 1 with [CLS])."""
        return (self.image_size // self.patch_size) ** 2


@register_model("vit", ViTConfig, "Vision Transformer: image patches + [CLS] -> pre-LN encoder (images)")
class ViT(Model):
    """PatchEmbedding -> [CLS] + positions -> pre-LN Encoder (final LayerNorm) -> Linear at [CLS]."""

    def __init__(self, config: ViTConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        self.patch_embed = PatchEmbedding(c.patch_size, c.channels, c.d_model, rng=rng)
        self.tokens = ClassTokenAndPositions(c.n_patches, c.d_model, rng=rng)
        self.encoder = Encoder(c.n_layer, c.d_model, c.n_head, c.d_ff, norm="pre", dropout=c.dropout,
                               activation=c.activation, attention=c.attention,
                               attention_options=dict(c.attention_options), max_len=c.n_patches + 1, rng=rng)
        self.head = Linear(c.d_model, c.n_classes, rng=rng)
        self.head.weight.data[...] = 0                 # the head starts at zero (ViT)
        self.cache = None

    def _check_images(self, images) -> None:
        c = self.config
        expected = (c.channels, c.image_size, c.image_size)
        check_array(images, "ViT input", ndim=4, dtype=self.head.weight.dtype, device=self.device)
        if tuple(images.shape[1:]) != expected or images.shape[0] == 0:
            raise ValueError(f"ViT input: expected images of shape (B, {c.channels}, {c.image_size}, "
                             f"{c.image_size}) with B >= 1, got {tuple(images.shape)}")

    # --8<-- [start:vit_forward]
    def forward(self, images, labels=None):
        """images (B, C_img, S, S) -> logits (B, n_classes); with labels (B,) also the mean cross-entropy."""
        self._check_images(images)
        e = self.patch_embed(images)                      # (B,Ci,S,S) -> (B,N,C)
        z = self.tokens(e)                                # (B,N,C) -> (B,N+1,C): [CLS] + positions
        h = self.encoder(z)                               # (B,N+1,C), final LayerNorm included
        logits = self.head(h[:, 0])                       # (B,C) -> (B,n_classes) at [CLS]
        loss = ce_cache = None
        if labels is not None:
            check_targets(labels, "ViT labels", self.config.n_classes, IGNORE_INDEX, images.shape[:1])
            loss, ce_cache = cross_entropy_forward(logits, labels)
        self.cache = (h.shape, ce_cache) if self.keep_cache else None
        return logits, loss

    def backward(self, dlogits=None, dloss: float = 1.0):
        """Backpropagate into every parameter; returns d(images), (B, C_img, S, S)."""
        shape, ce_cache = self.saved_cache()
        dlogits = self.output_gradient(dlogits, dloss, ce_cache)   # dL/dlogits, (B, n_classes)
        xp = backend.get_array_module(dlogits)
        dh = xp.zeros(shape, dtype=dlogits.dtype)          # only [CLS] feeds the head
        dh[:, 0] = self.head.backward(dlogits)             # fwd: logits = head(h[:, 0])
        dz = self.encoder.backward(dh)                     # (B,N+1,C)
        de = self.tokens.backward(dz)                      # fwd: z = [cls; e] + pos
        return self.patch_embed.backward(de)               # fwd: e = patches(x) W + b
    # --8<-- [end:vit_forward]

    # --8<-- [start:cls_attention]
    def cls_attention(self, images):
        """How much [CLS] attends to each patch, per block and head: (L, B, H, S/P, S/P).

        Row 0 of each block's attention probabilities (the [CLS] query) without its first column
        (the [CLS] key), on the patch grid. The rows sum to 1 minus [CLS]'s attention to itself.
        Runs in eval mode; the attention kernel must keep its probabilities (dense does)."""
        c = self.config
        was_training = self.training
        kept = [(m, m.keep_cache) for m in self.modules()]
        self.eval()
        for m, _ in kept:
            m.keep_cache = True                            # the kernel keeps P only with caches on
        try:
            self.forward(images)
            side = c.image_size // c.patch_size
            maps = []
            for block in self.encoder.blocks:
                p = block.attn.last_weights                # (B,H,N+1,N+1)
                if p is None:
                    raise ValueError(f"ViT.cls_attention: the {c.attention!r} kernel keeps no attention "
                                     "probabilities; use attention='dense'")
                B, H = p.shape[:2]
                maps.append(p[:, :, 0, 1:].reshape(B, H, side, side))   # (B,H,N) -> (B,H,h,w)
            return backend.get_array_module(maps[0]).stack(maps)       # (L,B,H,h,w)
        finally:
            for m, keep in kept:
                m.keep_cache = keep
            self.cache = None
            self.train(was_training)
    # --8<-- [end:cls_attention]


@register("models.vit")
def _gradcheck_vit(device: str):
    results = []
    for channels, side, P in ((1, 4, 2), (3, 6, 3)):
        cfg = ViTConfig(image_size=side, patch_size=P, channels=channels, n_classes=3, n_layer=2, n_head=2,
                        d_model=8, d_ff=12)
        model = ViT(cfg, seed=4).to(device, "float64")
        rng = np.random.default_rng(5)
        model.head.weight.data[...] = backend.to_device(rng.standard_normal((8, 3)), device)  # nonzero head
        model.tokens.cls.data[...] = backend.to_device(rng.standard_normal(8), device)
        images = backend.to_device(rng.standard_normal((2, channels, side, side)), device)
        labels = backend.to_device(np.array([2, 0]), device)
        results.append(check_module(f"models.vit[C={channels}, S={side}, P={P}]", model, [images, labels],
                                    run=lambda m, x, y: m.forward(x, y)[1],
                                    backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24))
    return results
