r"""BERT: a bidirectional encoder pretrained by masked language modelling and next-sentence prediction.

$$h = \mathrm{Encoder}_{\text{post-LN}}\big(\mathrm{LN}(A[x] + S[s] + P)\big),\qquad
  p = \tanh(h_{\mathrm{[CLS]}} W_p + b_p),$$
$$\mathcal{L} = \underbrace{-\frac{1}{|\mathcal{M}|}\sum_{t\in\mathcal{M}} \log
  \mathrm{softmax}(\mathrm{MLM}(h_t))_{x_t}}_{\text{masked positions only}}
  \;\underbrace{-\,\frac{1}{B}\sum_b \log \mathrm{softmax}(p_b W_n + b_n)_{y_b}}_{\text{NSP}}.$$

No causal mask: every position sees the whole sequence, padding excepted (``[PAD]``, id 0, is
masked out of every attention row). The pieces are in ``bert_layers.py``. The variants are switches
of `BertConfig`: ``nsp=False`` (RoBERTa; with ``masking="dynamic"`` for its data), ``d_embed=E``
and ``share_layers=True`` (ALBERT), fewer layers (DistilBERT's student, trained by distillation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import backend
from ..blocks import ACTIVATIONS, EncoderBlock
from ..config import require_int, require_number
from ..gradcheck import check_module, register
from ..nn.checks import check_array, check_targets, check_token_ids
from ..nn.functional.cross_entropy import cross_entropy_backward, cross_entropy_forward
from ..nn.layernorm import LayerNorm
from ..nn.module import Module
from .bert_layers import BertEmbeddings, MLMHead, NSPHead, Pooler, share_parameters
from .model import IGNORE_INDEX, Model
from .registry import register_model

PAD_ID = 0                       # [PAD] of data/wordpiece.py: masked out of attention
MASKINGS = ("static", "dynamic")


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 2000          # V: WordPiece tokens (set from the tokenizer)
    max_len: int = 128              # T_max: the longest input, [CLS] and [SEP]s included
    n_layer: int = 4                # L: encoder blocks
    n_head: int = 4                 # H
    d_model: int = 128              # C: hidden width
    d_ff: int | None = None         # F: feed-forward width (None: 4 C)
    d_embed: int | None = None      # E: ALBERT's factorised embedding size (None: E = C, no projection)
    share_layers: bool = False      # ALBERT: one block's weights used by all L layers
    nsp: bool = True                # next-sentence prediction head and loss (RoBERTa: False)
    masking: str = "static"         # pretraining data: one mask per example, or a new one each draw
    n_segments: int = 2             # segment (token-type) embeddings: sentence A and B
    dropout: float = 0.1            # embeddings, attention output and feed-forward
    activation: str = "gelu"        # BERT's GELU (or "gelu_tanh", "relu")
    norm_eps: float = 1e-5          # epsilon of every LayerNorm (Hugging Face BERT folders: 1e-12)

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "n_layer", "n_head", "d_model", "n_segments"):
            require_int(self, name, 1)
        for name in ("d_ff", "d_embed"):
            if getattr(self, name) is not None:
                require_int(self, name, 1)
        if self.d_model % self.n_head:
            raise ValueError(f"BertConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.vocab_size <= PAD_ID:
            raise ValueError(f"BertConfig.vocab_size={self.vocab_size} leaves no room for [PAD]")
        for name in ("share_layers", "nsp"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"BertConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.masking not in MASKINGS:
            raise ValueError(f"BertConfig.masking must be one of {list(MASKINGS)}, got {self.masking!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"BertConfig.activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        require_number(self, "dropout", 0, 1, high_open=True)
        if (isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float))
                or not 0 < self.norm_eps < math.inf):
            raise ValueError(f"BertConfig.norm_eps must be a finite number > 0, got {self.norm_eps!r}")


def set_norm_eps(module: Module, eps: float) -> None:
    """Give every LayerNorm inside `module` the epsilon `eps`."""
    for _, m in module.named_modules():
        if isinstance(m, LayerNorm):
            m.eps = float(eps)


# --8<-- [start:bert_encoder]
class BertEncoder(Module):
    """Embeddings -> L post-LN blocks (bidirectional, padding masked) -> (h, pooled [CLS])."""

    def __init__(self, c: BertConfig, rng):
        super().__init__()
        self.embeddings = BertEmbeddings(c.vocab_size, c.max_len, c.d_model, c.d_embed, c.n_segments,
                                         c.dropout, rng=rng)
        self.blocks = [EncoderBlock(c.d_model, c.n_head, c.d_ff, norm="post", dropout=c.dropout,
                                    activation=c.activation, max_len=c.max_len, rng=rng)
                       for _ in range(c.n_layer)]
        for block in self.blocks:                          # BERT's init: every matrix ~ N(0, 0.02^2)
            for _, p in block.named_parameters():
                if p.data.ndim == 2:
                    p.data = (rng.standard_normal(p.shape) * 0.02).astype(p.dtype)
        if c.share_layers:                                 # ALBERT: all layers are block 0
            for block in self.blocks[1:]:
                share_parameters(block, self.blocks[0])
        self.pooler = Pooler(c.d_model, rng=rng)
        set_norm_eps(self, c.norm_eps)
        self.cache = None

    def forward(self, tokens, segments, pool: bool = True):
        """tokens, segments (B,T) -> h (B,T,C) and pooled (B,C) (None unless `pool`)."""
        padding = tokens == PAD_ID                         # (B,T) True where attention must not look
        h = self.embeddings(tokens, segments)              # (B,T) -> (B,T,C)
        for block in self.blocks:
            h = block(h, key_padding_mask=padding)
        pooled = self.pooler(h) if pool else None          # (B,T,C) -> (B,C)
        return h, pooled

    def backward(self, dh, dpooled=None):
        if dpooled is not None:                            # fwd: p = pooler(h) reads h too
            dh = dh + self.pooler.backward(dpooled)
        for block in reversed(self.blocks):                # shared blocks add into one .grad
            dh = block.backward(dh)
        self.embeddings.backward(dh)
# --8<-- [end:bert_encoder]


def check_bert_inputs(config: BertConfig, tokens, segments, device: str, what: str = "BERT"):
    """Token ids within the vocabulary and the context, segments of the same shape in range;
    returns the segments (all zeros when None)."""
    check_token_ids(tokens, f"{what} input tokens", config.vocab_size, config.max_len)
    check_array(tokens, f"{what} input tokens", device=device)
    if segments is None:
        xp = backend.get_array_module(tokens)
        return xp.zeros_like(tokens)
    if tuple(segments.shape) != tuple(tokens.shape):
        raise ValueError(f"{what} segments: expected the tokens' shape {tuple(tokens.shape)}, "
                         f"got {tuple(segments.shape)}")
    check_token_ids(segments, f"{what} segments", config.n_segments)
    return segments


@register_model("bert", BertConfig, "bidirectional encoder pretrained by masked LM (+ next-sentence prediction)")
class BertModel(Model):
    """BertEncoder + the MLM head (decoder tied to the word table) + the NSP head (if config.nsp)."""

    def __init__(self, config: BertConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        self.encoder = BertEncoder(c, rng)
        self.mlm = MLMHead(self.encoder.embeddings.word.weight, c.d_model, rng=rng)
        self.nsp = NSPHead(c.d_model, rng=rng) if c.nsp else None
        set_norm_eps(self.mlm, c.norm_eps)
        self.cache = None

    # --8<-- [start:bert_forward]
    def forward(self, tokens, segments=None, mlm_targets=None, nsp_labels=None):
        """tokens (B,T) -> MLM logits (B,T,V). With `mlm_targets` (B,T) the logits of the masked
        positions only, (N,V) with N the targets that are not IGNORE_INDEX (in row-major order), and
        the loss: their MLM mean, plus the NSP mean when `nsp_labels` (B,) are given."""
        c = self.config
        segments = check_bert_inputs(c, tokens, segments, self.device)
        if nsp_labels is not None and self.nsp is None:
            raise ValueError("BERT: nsp_labels given, but this model has no NSP head (config nsp=False)")
        h, pooled = self.encoder(tokens, segments, pool=nsp_labels is not None)
        loss = mlm_cache = nsp_cache = rows = None
        if mlm_targets is None:
            logits = self.mlm(h)                           # (B,T,C) -> (B,T,V)
        else:
            check_targets(mlm_targets, "BERT mlm_targets", c.vocab_size, IGNORE_INDEX, tokens.shape)
            # as BERT's own code: the V-wide decoder only where there is something to predict
            xp = backend.get_array_module(h)
            flat = mlm_targets.reshape(-1)                 # (B,T) -> (B*T,)
            rows = xp.flatnonzero(flat != IGNORE_INDEX)    # (N,) the masked positions
            logits = self.mlm(h.reshape(-1, c.d_model)[rows])   # (B*T,C)[rows] -> (N,C) -> (N,V)
            loss, mlm_cache = cross_entropy_forward(logits, flat[rows])
        if nsp_labels is not None:
            check_targets(nsp_labels, "BERT nsp_labels", 2, IGNORE_INDEX, tokens.shape[:1])
            nsp_loss, nsp_cache = cross_entropy_forward(self.nsp(pooled), nsp_labels)   # (B,2)
            loss = nsp_loss if loss is None else loss + nsp_loss
        self.cache = (h.shape, rows, mlm_cache, nsp_cache) if self.keep_cache else None
        return logits, loss
    # --8<-- [end:bert_forward]

    # --8<-- [start:bert_backward]
    def backward(self, dlogits=None, dloss: float = 1.0):
        """From the loss times dloss (MLM + NSP), or from a given dlogits (B,T,V) of the MLM output
        alone (distillation)."""
        shape, rows, mlm_cache, nsp_cache = self.saved_cache()
        xp = backend.get_array_module(self.mlm.bias.data)
        if rows is None and dlogits is None and nsp_cache is not None:
            dh = xp.zeros(shape, dtype=self.mlm.bias.dtype)    # NSP alone: no MLM gradient
        elif rows is None:
            dh = self.mlm.backward(self.output_gradient(dlogits, dloss, mlm_cache))   # (B,T,V) -> (B,T,C)
        else:
            dh = xp.zeros((shape[0] * shape[1], shape[2]), dtype=self.mlm.bias.dtype)   # (B*T, C)
            # fwd: logits = mlm(h[rows])  =>  dh[rows] = mlm'(dlogits), zero elsewhere (rows distinct)
            dh[rows] = self.mlm.backward(self.output_gradient(dlogits, dloss, mlm_cache))
            dh = dh.reshape(shape)                         # (B*T,C) -> (B,T,C)
        dpooled = None
        if nsp_cache is not None and dlogits is None:
            dnsp, _ = cross_entropy_backward(dloss, nsp_cache)
            dpooled = self.nsp.backward(dnsp)              # (B,2) -> (B,C)
        self.encoder.backward(dh, dpooled)
    # --8<-- [end:bert_backward]

    def predict(self, tokens, segments=None):
        """(MLM logits (B,T,V), NSP logits (B,2) or None) in eval mode, keeping no activations."""
        was_training = self.training
        self.eval()
        try:
            with self.no_grad():
                segments = check_bert_inputs(self.config, tokens, segments, self.device)
                h, pooled = self.encoder(tokens, segments, pool=self.nsp is not None)
                return self.mlm(h), (None if self.nsp is None else self.nsp(pooled))
        finally:
            self.train(was_training)


# -- gradient checks of the whole model (float64, dropout off) -----------------------------------
def _bert_batch(device: str, seed: int, V: int, B: int = 2, T: int = 5):
    """Tokens with [CLS] first and padding at the end of row 1, targets on a few positions."""
    import numpy as np  # host side only: the test batch
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, V, (B, T))
    tokens[:, 0] = 2                                      # [CLS]
    tokens[1, -2:] = PAD_ID
    segments = np.zeros((B, T), np.int64)
    segments[:, T // 2:] = 1
    targets = np.full((B, T), IGNORE_INDEX)
    targets[0, 1], targets[0, 3], targets[1, 2] = rng.integers(5, V, 3)
    nsp = np.array([0, 1][:B])
    return [backend.to_device(a, device) for a in (tokens, segments, targets, nsp)]


def gradcheck_bert(device: str, name: str, model, V: int, with_nsp: bool = True, classifier: bool = False):
    """Check the loss's gradient for every parameter. BERT's N(0, 0.02^2) matrices are scaled up
    tenfold first: at 0.02 the gradients are so small that rounding in the loss, not the
    backward, sets the relative error (1e-7 instead of 1e-9)."""
    for _, p in model.named_parameters():
        if p.data.ndim == 2:
            p.data *= 10
    tokens, segments, targets, nsp = _bert_batch(device, 51, V)
    inputs = [tokens, segments, targets] + ([nsp] if with_nsp else [])
    if classifier:                                        # (tokens, segments, labels)
        inputs = [tokens, segments, nsp]
    return check_module(name, model, inputs, run=lambda m, *a: m.forward(*a)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)


@register("models.BertModel")
def _gradcheck_bert_model(device: str):
    variants = [("bert: MLM + NSP", dict()),
                ("bert: ALBERT E=4 < C, shared layers", dict(d_embed=4, share_layers=True)),
                ("bert: RoBERTa, no NSP", dict(nsp=False))]
    results = []
    for name, fields in variants:
        cfg = BertConfig(vocab_size=11, max_len=6, n_layer=2, n_head=2, d_model=8, d_ff=12, dropout=0.0,
                         **fields)
        model = BertModel(cfg, seed=52).to(device, "float64")
        results.append(gradcheck_bert(device, f"models.BertModel({name})", model, 11, with_nsp=cfg.nsp))
    return results
