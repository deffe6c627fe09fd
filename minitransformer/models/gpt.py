r"""GPT: a decoder-only Transformer for causal language modelling.

Built bottom-up from the package's pieces: token embedding + positions -> L causal pre-LN (or
post-LN) blocks -> final LayerNorm -> logits through the *tied* token embedding,

$$\text{logits} = \mathrm{LN}(h_L)\, W_{te}^\top, \qquad
  \mathcal{L} = -\frac{1}{N}\sum_{t} \log \mathrm{softmax}(\text{logits}_t)_{y_t}.$$

Because $W_{te}$ is used twice (lookup and output projection) its gradient is the sum of the two
paths' gradients. Initialisation follows GPT-2: N(0, 0.02²) everywhere, and the projections that
write into the residual stream scaled by $1/\sqrt{2L}$ so the stream's variance does not grow with
depth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import backend
from ..gradcheck import register
from ..attention.relative_bias import RelativePositionBias
from ..attention.shared_bias_attention import SharedBiasAttention
from ..blocks import AttentionOnlyBlock, EncoderBlock
from ..config import require_int
from ..nn.checks import check_array, check_targets, check_token_ids
from ..nn.dropout import Dropout
from ..nn.embedding import Embedding
from ..nn.functional.cross_entropy import cross_entropy_forward
from ..nn.functional.linear import linear_backward, linear_forward
from ..nn.layernorm import LayerNorm
from ..nn.lowrank import LowRankLinear
from ..positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .model import IGNORE_INDEX, Model
from .registry import register_model

LOW_RANK_TARGETS = ("attn.qkv", "attn.proj", "ffn.fc1", "ffn.fc2")   # the Linears of a block
POSITIONALS = ("learned", "sinusoidal", "rope", "alibi", "t5_bias")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 96            # V: tokens in the vocabulary (set from the tokenizer)
    block_size: int = 64            # T_max: the context length
    n_layer: int = 4                # L: number of blocks
    n_head: int = 4                 # H: attention heads per block
    d_model: int = 128              # C: width of the residual stream
    d_ff: int | None = None         # F: feed-forward width (None: 4 * d_model)
    dropout: float = 0.0            # residual and embedding dropout
    norm: str = "pre"               # "pre" (GPT-2) or "post" (the original Transformer)
    activation: str = "gelu"        # "gelu", "gelu_tanh" or "relu"
    positional: str = "learned"     # "learned", "sinusoidal" (added to the input), "rope" or "alibi" (in attention)
    bias: bool = True               # biases in the Linear layers
    attention: str = "dense"        # attention kernel by name (minitransformer.attention.kernel_names())
    attention_options: dict = field(default_factory=dict)  # options of that kernel (window, ...)
    low_rank: int | None = None     # K: factorise the chosen Linear layers as W ~ A B of rank K
    low_rank_targets: tuple = LOW_RANK_TARGETS  # which Linears of every block are factorised
    norm_eps: float = 1e-5          # epsilon of every LayerNorm (GPT-2 folders set layer_norm_epsilon)
    relative_buckets: int = 32      # positional="t5_bias": buckets of the shared causal T5 table
    relative_max_distance: int = 128  # positional="t5_bias": distances beyond share the last bucket
    ffn: bool = True                # False: attention-only blocks (no feed-forward; LayerNorms kept)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            require_int(self, name, 1)
        if self.d_model % self.n_head:
            raise ValueError(f"GPTConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"GPTConfig.norm must be 'pre' or 'post', got {self.norm!r}")
        if self.positional not in POSITIONALS:
            raise ValueError(f"GPTConfig.positional must be one of {POSITIONALS}, got {self.positional!r}")
        if self.positional == "rope" and (self.d_model // self.n_head) % 2:
            raise ValueError(f"GPTConfig.positional='rope' turns pairs of features: the head size "
                             f"d_model / n_head = {self.d_model // self.n_head} must be even")
        if self.positional == "alibi" and self.attention != "dense":
            raise ValueError(f"GPTConfig.positional='alibi' adds its bias to the dense kernel's scores; "
                             f"attention={self.attention!r} cannot take it (use attention='dense')")
        if self.positional == "t5_bias":
            if self.attention != "dense":
                raise ValueError(f"GPTConfig.positional='t5_bias' adds a learned bias to the scores of its own "
                                 f"softmax kernel; attention={self.attention!r} cannot take it (use attention='dense')")
            require_int(self, "relative_buckets", 4)
            require_int(self, "relative_max_distance", 1)
            if self.relative_buckets % 2 or self.relative_max_distance <= self.relative_buckets // 2:
                raise ValueError(f"GPTConfig: relative_buckets must be even and relative_max_distance larger "
                                 f"than relative_buckets / 2 (the exact buckets), got relative_buckets="
                                 f"{self.relative_buckets}, relative_max_distance={self.relative_max_distance}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"GPTConfig.dropout must lie in [0, 1), got {self.dropout}")
        if (isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float))
                or not 0 < self.norm_eps < math.inf):
            raise ValueError(f"GPTConfig.norm_eps must be a finite number > 0, got {self.norm_eps!r}")
        unknown = sorted(set(self.low_rank_targets) - set(LOW_RANK_TARGETS))
        if unknown:
            raise ValueError(f"GPTConfig.low_rank_targets: unknown layer(s) {unknown}; "
                             f"allowed: {list(LOW_RANK_TARGETS)}")
        if not self.ffn and self.low_rank is not None and any(t.startswith("ffn.") for t in self.low_rank_targets):
            raise ValueError("GPTConfig: ffn=False (attention-only) has no ffn.* layers to factorise; "
                             "set low_rank_targets=('attn.qkv', 'attn.proj')")


@register_model("gpt", GPTConfig, "decoder-only causal language model (char-level text)")
class GPT(Model):
    """Decoder-only Transformer with tied input/output embeddings."""

    can_generate = True

    def __init__(self, config: GPTConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        d_ff = c.d_ff or 4 * c.d_model
        self.wte = Embedding(c.vocab_size, c.d_model, rng=rng, std=0.02)
        if c.positional == "learned":
            self.wpe = LearnedPositionalEmbedding(c.block_size, c.d_model, rng=rng, std=0.02)
        elif c.positional == "sinusoidal":
            self.wpe = SinusoidalPositionalEncoding(c.block_size, c.d_model)
        else:
            self.wpe = None                    # RoPE, ALiBi, T5's bias put positions inside every attention layer
        attention = "alibi" if c.positional == "alibi" else c.attention
        self.drop = Dropout(c.dropout, seed=seed + 1)
        residual_std = 0.02 / math.sqrt(2 * c.n_layer)
        self.blocks = [
            EncoderBlock(c.d_model, c.n_head, d_ff, norm=c.norm, dropout=c.dropout,
                         activation=c.activation, attention=attention,
                         attention_options=dict(c.attention_options), max_len=c.block_size,
                         bias=c.bias, rng=rng, out_std=residual_std, rotary=c.positional == "rope")
            if c.ffn else
            AttentionOnlyBlock(c.d_model, c.n_head, norm=c.norm, dropout=c.dropout, attention=attention,
                               attention_options=dict(c.attention_options), max_len=c.block_size,
                               bias=c.bias, rng=rng, out_std=residual_std, rotary=c.positional == "rope")
            for _ in range(c.n_layer)
        ]
        self.ln_f = LayerNorm(c.d_model) if c.norm == "pre" else None
        for module in self.modules():                      # the blocks build theirs with the default
            if isinstance(module, LayerNorm):
                module.eps = float(c.norm_eps)
        self._init_weights(rng, residual_std)
        self.relative_bias = self._shared_relative_bias(rng) if c.positional == "t5_bias" else None
        if c.low_rank is not None:
            self._factorise(c.low_rank, c.low_rank_targets, rng)
        self.cache = None

    # --8<-- [start:gpt_t5_bias_init]
    def _shared_relative_bias(self, rng):
        """positional="t5_bias": one causal T5 table (buckets x heads), owned here, read by every
        layer; each block's dense kernel becomes the SharedBiasAttention that adds it."""
        c = self.config
        for block in self.blocks:
            block.attn.kernel = SharedBiasAttention(c.n_head, c.d_model // c.n_head, c.block_size)
        return RelativePositionBias(c.n_head, bidirectional=False, num_buckets=c.relative_buckets,
                                    max_distance=c.relative_max_distance, rng=rng, std=c.d_model ** -0.5)
    # --8<-- [end:gpt_t5_bias_init]

    def _factorise(self, rank: int, targets, rng) -> None:
        """GPTConfig.low_rank: the chosen Linears of every block become rank-K LowRankLinears, drawn
        so that A @ B has the standard deviation of the weight it replaces (GPT-2's scaling kept)."""
        for block in self.blocks:
            for target in targets:
                owner_name, attr = target.split(".")               # "attn.qkv" -> block.attn.qkv
                owner = getattr(block, owner_name)
                linear = getattr(owner, attr)
                std = float(linear.weight.data.std())               # host array at construction
                setattr(owner, attr, LowRankLinear(linear.in_features, linear.out_features, rank,
                                                   bias=linear.bias is not None, rng=rng, std=std))

    def _init_weights(self, rng, residual_std: float) -> None:
        """GPT-2 initialisation: every Linear weight ~ N(0, 0.02^2), the two projections that write
        into the residual stream (attn.proj, ffn.fc2) ~ N(0, (0.02/sqrt(2L))^2); biases zero."""
        for name, p in self.named_parameters():
            if name.startswith("blocks.") and name.endswith(".weight") and p.data.ndim == 2:
                std = residual_std if name.endswith(("attn.proj.weight", "ffn.fc2.weight")) else 0.02
                p.data = (rng.standard_normal(p.shape) * std).astype(p.dtype)

    # --8<-- [start:gpt_forward]
    def forward(self, idx, targets=None, kv_caches=None, ignore_index: int = IGNORE_INDEX):
        """idx (B, T) int -> logits (B, T, V); with targets (B, T) also the mean cross-entropy.

        kv_caches: one KVCache per block for incremental decoding (see generate.py).
        """
        c = self.config
        offset = kv_caches[0].length if kv_caches else 0
        check_token_ids(idx, "GPT input idx", c.vocab_size)
        check_array(idx, "GPT input idx", device=self.wte.weight.device)
        if offset + idx.shape[1] > c.block_size:
            raise ValueError(f"GPT input: {offset + idx.shape[1]} positions exceed the context length "
                             f"block_size={c.block_size} (crop the input to its last {c.block_size} tokens)")
        x = self.wte(idx)                                  # (B, T) -> (B, T, C)
        if self.wpe is not None:
            x = self.wpe(x, offset)                        # + positions offset..offset+T-1
        x = self.drop(x)
        if self.relative_bias is not None:                 # T5: one bias for all layers, keys 0..offset+T-1
            bias = self.relative_bias(idx.shape[1], offset + idx.shape[1], offset)   # (1, H, T, S)
            for block in self.blocks:
                block.attn.kernel.set_position_bias(bias)
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, kv_cache=kv_caches[i] if kv_caches else None)
        if self.ln_f is not None:
            x = self.ln_f(x)
        # tied output head: logits = x @ W_te^T
        logits, head_cache = linear_forward(x, self.wte.weight.data.T)   # (B,T,C) @ (C,V) -> (B,T,V)
        loss = ce_cache = None
        if targets is not None:
            check_targets(targets, "GPT targets", c.vocab_size, ignore_index, idx.shape)
            loss, ce_cache = cross_entropy_forward(logits, targets, ignore_index=ignore_index)
        self.cache = (head_cache, ce_cache) if self.keep_cache else None
        return logits, loss
    # --8<-- [end:gpt_forward]

    # --8<-- [start:gpt_backward]
    def backward(self, dlogits=None, dloss: float = 1.0):
        """Backpropagate from the loss scaled by dloss (dlogits=None) or from a given dlogits;
        the forward in reverse. Gradients add into every Parameter.grad."""
        head_cache, ce_cache = self.saved_cache()
        dlogits = self.output_gradient(dlogits, dloss, ce_cache)   # dL/dlogits, (B, T, V)
        # fwd: logits = x @ W_te^T  =>  dx = dlogits @ W_te,  dW_te += (x^T @ dlogits)^T
        dx, dwte_t, _ = linear_backward(dlogits, head_cache)
        self.wte.weight.grad += dwte_t.T
        if self.ln_f is not None:
            dx = self.ln_f.backward(dx)
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        if self.relative_bias is not None:
            # fwd: every layer adds the same P  =>  dP = sum over layers, scattered into the table once
            self.relative_bias.backward(sum(block.attn.kernel.bias_grad for block in self.blocks))
        dx = self.drop.backward(dx)
        if self.wpe is not None:
            dx = self.wpe.backward(dx)
        self.wte.backward(dx)                                  # second path into W_te
    # --8<-- [end:gpt_backward]

    @property
    def supports_kv_cache(self) -> bool:
        """False when an attention kernel needs as many keys as queries (Reformer's LSH, BigBird):
        decoding then recomputes the context at every step."""
        return all(block.attn.kernel.supports_cross for block in self.blocks)

    def make_kv_caches(self, batch_size: int):
        """One empty KVCache per block, sized for the whole context."""
        from ..attention.kv_cache import KVCache
        c = self.config
        return [KVCache(c.block_size, batch_size, c.n_head, c.d_model // c.n_head, self.dtype, self.device)
                for _ in range(c.n_layer)]


def _gradcheck_gpt(device: str, norm: str, positional: str, n_head: int, T: int):
    from ..gradcheck import check_module
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=n_head, d_model=8, norm=norm,
                    positional=positional)
    model = GPT(cfg, seed=3).to(device, "float64")
    rng = backend.host_rng(4)
    idx = backend.to_device(rng.integers(0, 11, (2, T)), device)
    targets = backend.to_device(rng.integers(0, 11, (2, T)), device)
    return check_module(f"models.GPT({norm}-LN, {positional}, H={n_head}, T={T})", model, [idx, targets],
                        run=lambda m, i, t: m.forward(i, t)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)


@register("models.GPT")
def _gradcheck_gpt_all(device: str):
    return [_gradcheck_gpt(device, "pre", "learned", 2, 5), _gradcheck_gpt(device, "post", "sinusoidal", 1, 1)]


@register("models.GPT(rope, alibi)")
def _gradcheck_gpt_rope_alibi(device: str):
    """RoPE and ALiBi inside a whole GPT: the rotation's transpose and the constant bias in context."""
    return [_gradcheck_gpt(device, "pre", "rope", 2, 5), _gradcheck_gpt(device, "pre", "alibi", 2, 5)]


@register("models.GPT(low_rank)")
def _gradcheck_gpt_lowrank(device: str):
    """A whole GPT built with GPTConfig.low_rank: every factor gets the right gradient in context."""
    from ..gradcheck import check_module
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8, low_rank=3)
    model = GPT(cfg, seed=5).to(device, "float64")
    rng = backend.host_rng(6)
    idx = backend.to_device(rng.integers(0, 11, (2, 4)), device)
    targets = backend.to_device(rng.integers(0, 11, (2, 4)), device)
    return check_module("models.GPT(low_rank=3)", model, [idx, targets],
                        run=lambda m, i, t: m.forward(i, t)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)


@register("models.gpt_relative_bias")
def _gradcheck_gpt_relative_bias(device: str):
    """The shared causal T5 table in a whole GPT: its gradient is the sum of the layers' dP, scattered;
    a small table (8 buckets, max distance 6) so that buckets repeat within T = 7."""
    from ..gradcheck import check_module
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8, positional="t5_bias",
                    relative_buckets=8, relative_max_distance=6)
    model = GPT(cfg, seed=7).to(device, "float64")
    rng = backend.host_rng(8)
    idx = backend.to_device(rng.integers(0, 11, (2, 7)), device)
    targets = backend.to_device(rng.integers(0, 11, (2, 7)), device)
    return [check_module("models.GPT(pre-LN, t5_bias relative bias, H=2, T=7)", model, [idx, targets],
                         run=lambda m, i, t: m.forward(i, t)[1],
                         backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)]


@register("models.GPT(ffn=False)")
def _gradcheck_gpt_attention_only(device: str):
    """The attention-only GPT of the induction-head experiment, pre-LN and post-LN."""
    from ..gradcheck import check_module
    results = []
    for norm, n_layer in (("pre", 2), ("post", 1)):
        cfg = GPTConfig(vocab_size=9, block_size=6, n_layer=n_layer, n_head=2, d_model=8, norm=norm, ffn=False)
        model = GPT(cfg, seed=7).to(device, "float64")
        rng = backend.host_rng(8)
        idx = backend.to_device(rng.integers(0, 9, (2, 5)), device)
        targets = backend.to_device(rng.integers(0, 9, (2, 5)), device)
        results.append(check_module(f"models.GPT(ffn=False, {norm}-LN)", model, [idx, targets],
                                    run=lambda m, i, t: m.forward(i, t)[1],
                                    backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24))
    return results
