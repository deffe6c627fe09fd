r"""The Compressive Transformer: Transformer-XL whose old memories are compressed, not dropped.

Per layer, besides the memory $m$ of the last $M$ inputs (Transformer-XL's), a **compressed memory**
$cm$ of $N_{cm}$ slots. When a segment pushes memories out of $m$, the oldest $n$ of them (a
multiple of the rate $c$) are compressed, $f_c: \mathbb{R}^{n \times C} \to \mathbb{R}^{n/c \times C}$
(``nn/compressor.py``: mean pooling or a strided convolution), and appended to $cm$, whose oldest
slots fall off (Rae et al. 2020). Each layer attends over $[\,cm;\, m;\, h\,]$ with relative
positions, so one layer reaches $T + M + c\,N_{cm}$ tokens back at the cost of $T + M + N_{cm}$ keys.

Memories are stop-gradients, so the language-model loss never reaches $f_c$. The compressor
learns from the **attention-reconstruction loss**: with the layer's own attention, frozen
($\mathrm{SG}$ on its weights and on the memories),

$$\mathcal{L}^{attn} = \sum_\ell \big\|\, \mathrm{attn}_\ell(h^\ell, \mathrm{SG}(old^\ell))
      - \mathrm{attn}_\ell(h^\ell, f_c(\mathrm{SG}(old^\ell))) \big\|_2^2 \Big/ (B T C),$$

content-based attention (no positions): $\mathrm{attn}(h, m) = \mathrm{softmax}(q k^\top/\sqrt D)\,
v$ with $q = \mathrm{LN}(h) W_Q$, $k, v = \mathrm{LN}(m) W_{K}, \mathrm{LN}(m) W_V$, heads merged.
Its gradient flows back through the attention's keys and values and the (frozen) LayerNorm into
$f_c$'s parameters, and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .. import backend
from ..attention.scaled_dot_product import attention_backward, attention_forward
from ..config import require_int, require_number
from ..gradcheck import check_module, register
from ..nn.checks import check_array
from ..nn.compressor import COMPRESSIONS, make_compressor
from ..nn.functional.layernorm import layernorm_backward, layernorm_forward
from ..nn.functional.linear import linear_forward
from .model import IGNORE_INDEX
from .registry import register_model
from .transformer_xl import TransformerXL, TransformerXLConfig, _scaled_for_gradcheck


@dataclass(frozen=True)
class CompressiveConfig(TransformerXLConfig):
    cmem_len: int = 16              # N_cm: compressed memory slots per layer
    compression_rate: int = 4       # c: memories per compressed slot
    compression: str = "conv"       # "conv" (strided 1-D convolution) or "mean" (mean pooling)
    recon_weight: float = 1.0       # weight of the attention-reconstruction loss (trains the compressor)

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "cmem_len", 0)
        require_int(self, "compression_rate", 1)
        require_number(self, "recon_weight", 0)
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"CompressiveConfig.compression must be one of {list(COMPRESSIONS)}, "
                             f"got {self.compression!r}")


class CompressiveMemory(NamedTuple):
    mem: list       # per layer (B, M', C): the recent memories
    cmem: list      # per layer (B, N', C): the compressed ones


class ReconstructionCache(NamedTuple):
    layer: int
    attn: object        # the AttentionCache of attn(h, f_c(old))
    ln: object          # the LayerNormCache of LN(f_c(old))
    diff: object        # attn(h, f_c(old)) - attn(h, old): the error of the compressed memory
    scale: float        # 2 / (B T C): d(mean squared error) / d(output)


@register_model("compressive", CompressiveConfig, "Compressive Transformer: XL + compressed old memories")
class CompressiveTransformer(TransformerXL):
    """Transformer-XL with a compressed memory per layer and an attention-reconstruction loss."""

    def __init__(self, config: CompressiveConfig, seed: int = 0):
        super().__init__(config, seed)
        rng = backend.host_rng(seed + 7)
        self.compressors = [make_compressor(config.compression, config.d_model, config.compression_rate, rng)
                            for _ in self.blocks]
        self.reconstruction_loss = None       # of the last training forward (None: nothing was evicted)
        self._recon = []

    # -- memory --------------------------------------------------------------------------------
    def empty_memory(self, batch_size: int) -> CompressiveMemory:
        empty = super().empty_memory(batch_size)
        return CompressiveMemory(empty, super().empty_memory(batch_size))

    def check_memory(self, memory, batch_size: int) -> None:
        if not isinstance(memory, CompressiveMemory):
            raise TypeError(f"CompressiveTransformer: memory must be a CompressiveMemory (mem, cmem), got "
                            f"{type(memory).__name__}")
        super().check_memory(memory.mem, batch_size)
        super().check_memory(memory.cmem, batch_size)

    # --8<-- [start:compressive_forward]
    def forward_segment(self, idx, memory=None, targets=None, mem_len: int | None = None,
                        ignore_index: int = IGNORE_INDEX):
        """Like TransformerXL.forward_segment; every layer attends over [cmem; mem; segment]. In
        training (a forward that keeps its cache) the attention-reconstruction loss of the memories
        this segment evicts is computed too (self.reconstruction_loss) and trained by backward."""
        mem_len = self.memory_length(mem_len)
        B, T = idx.shape
        memory = self.empty_memory(B) if memory is None else memory
        self.check_memory(memory, B)
        joined = [backend.get_array_module(m).concatenate([cm, m], axis=1)      # (B,N',C) + (B,M',C)
                  for cm, m in zip(memory.cmem, memory.mem)]
        logits, loss, inputs = self._read(idx, joined, targets, ignore_index)
        return logits, loss, self.next_memory(memory, inputs, mem_len)
    # --8<-- [end:compressive_forward]

    def _read(self, idx, joined, targets, ignore_index):
        """The XL forward over per-layer memories `joined`; returns (logits, loss, layer inputs)."""
        from ..nn.checks import check_token_ids
        check_token_ids(idx, "CompressiveTransformer input idx", self.config.vocab_size)
        check_array(idx, "CompressiveTransformer input idx", ndim=2, device=self.wte.weight.device)
        pos_emb = self.relative_embeddings(joined[0].shape[1] + idx.shape[1])
        x = self.drop(self.wte(idx))
        inputs = []
        for block, mem in zip(self.blocks, joined):
            inputs.append(x)
            x = block(x, mem, pos_emb, self.u.data, self.v.data)
        logits, loss = self._head(x, targets, ignore_index, idx.shape)
        return logits, loss, inputs

    # --8<-- [start:compressive_next_memory]
    def next_memory(self, memory: CompressiveMemory, inputs, mem_len: int) -> CompressiveMemory:
        """Push the segment into m; the oldest rows beyond mem_len (a multiple of c of them) are
        compressed into cm, whose oldest slots beyond cmem_len fall off. In training, also the
        reconstruction loss of what was compressed."""
        xp = backend.get_array_module(inputs[0])
        c = self.config
        rate = c.compression_rate
        new_mem, new_cmem, self._recon, recon, evicted = [], [], [], 0.0, False
        for layer, (mem, cmem, h) in enumerate(zip(memory.mem, memory.cmem, inputs)):
            both = xp.concatenate([mem, h], axis=1)                   # (B,M'+T,C)
            n_old = max(both.shape[1] - mem_len, 0) // rate * rate    # evict whole groups of c
            old = both[:, :n_old]                                     # (B,n_old,C), oldest first
            new_mem.append(both[:, n_old:].copy())
            if n_old and c.cmem_len:
                compressed = self.compressors[layer](old)             # (B,n_old/c,C), cache kept for recon
                if self.training:                                     # the value; caches only if kept
                    recon += self._reconstruction(layer, h, old, compressed)
                    evicted = True
                cmem = xp.concatenate([cmem, compressed], axis=1)     # (B,N'+n_old/c,C)
            new_cmem.append(cmem[:, max(cmem.shape[1] - c.cmem_len, 0):].copy())
        self.reconstruction_loss = recon if evicted else None
        return CompressiveMemory(new_mem, new_cmem)
    # --8<-- [end:compressive_next_memory]

    # --8<-- [start:attention_reconstruction]
    def _content_attention(self, layer: int, h, m):
        """attn(h, m) of `layer` with frozen weights: (output (B,T,C), its cache, LN(m)'s cache)."""
        block, H = self.blocks[layer], self.config.n_head
        attn, ln = block.attn, block.ln1
        B, T, C = h.shape
        S, D = m.shape[1], C // H
        nh, _ = layernorm_forward(h, ln.weight.data, ln.bias.data, ln.eps)
        nm, ln_cache = layernorm_forward(m, ln.weight.data, ln.bias.data, ln.eps)
        bq = None if attn.query.bias is None else attn.query.bias.data
        bkv = None if attn.key_value.bias is None else attn.key_value.bias.data
        q, _ = linear_forward(nh, attn.query.weight.data, bq)                      # (B,T,C)
        kv, kv_cache = linear_forward(nm, attn.key_value.weight.data, bkv)         # (B,S,2C)
        q = q.reshape(B, T, H, D).transpose(0, 2, 1, 3)                            # (B,T,C) -> (B,H,T,D)
        kv = kv.reshape(B, S, 2, H, D).transpose(2, 0, 3, 1, 4)                    # (B,S,2C) -> (2,B,H,S,D)
        out, cache = attention_forward(q, kv[0], kv[1])                            # (B,H,T,D), no mask
        return out.transpose(0, 2, 1, 3).reshape(B, T, C), cache, (ln_cache, kv_cache)   # -> (B,T,C)

    def _reconstruction(self, layer: int, h, old, compressed) -> float:
        """|| attn(h, old) - attn(h, f_c(old)) ||^2 / (B T C); keeps what its backward needs."""
        xp = backend.get_array_module(h)
        target, _, _ = self._content_attention(layer, h, old)                      # SG: a constant
        approx, cache, caches = self._content_attention(layer, h, compressed)
        diff = approx - target
        if self.keep_cache:
            self._recon.append(ReconstructionCache(layer, cache, caches, diff, 2.0 / diff.size))
        return float(xp.mean(diff * diff))

    def _reconstruction_backward(self, dloss: float) -> None:
        """Gradient of recon_weight * L_attn into the compressors only (everything else frozen)."""
        H = self.config.n_head
        for rc in self._recon:
            diff = rc.diff                                            # approx - target
            B, T, C = diff.shape
            D = C // H
            # fwd: L = mean(diff^2)  =>  dapprox = 2 diff / (B T C)
            dapprox = diff * (rc.scale * dloss * self.config.recon_weight)
            dout = dapprox.reshape(B, T, H, D).transpose(0, 2, 1, 3)           # (B,T,C) -> (B,H,T,D)
            _, dk, dv = attention_backward(dout, rc.attn)                          # the queries are frozen
            S = dk.shape[2]
            dkv = backend.get_array_module(dk).concatenate(
                [dk.transpose(0, 2, 1, 3)[:, :, None], dv.transpose(0, 2, 1, 3)[:, :, None]], axis=2)
            dkv = dkv.reshape(B, S, 2 * C)                                         # (B,S,2,H,D) -> (B,S,2C)
            ln_cache, kv_cache = rc.ln
            # fwd: kv = LN(cm) W_KV (W_KV frozen)  =>  dLN(cm) = dkv W_KV^T
            dnm = dkv.reshape(-1, 2 * C) @ kv_cache.w.T                            # (BS,2C) @ (2C,C) -> (BS,C)
            # fwd: LN(cm) with frozen gain and bias  =>  dcm = LN'(dnm); dgamma, dbeta dropped
            dcm, _, _ = layernorm_backward(dnm.reshape(B, S, C), ln_cache)
            self.compressors[rc.layer].backward(dcm)                               # into f_c's parameters
        self._recon = []
    # --8<-- [end:attention_reconstruction]

    def backward(self, dlogits=None, dloss: float = 1.0):
        """The XL backward of the language-model loss, then the reconstruction loss's gradient
        (scaled by dloss, like the main loss) into the compressors."""
        super().backward(dlogits, dloss)
        self._reconstruction_backward(dloss)

    # -- decoding: the memory itself is the cache ----------------------------------------------
    def make_kv_caches(self, batch_size: int):
        """One holder of the whole CompressiveMemory (decoding runs segments of one token)."""
        return [MemoryState()]

    def _decode(self, idx, caches):
        state = caches[0]
        logits, _, state.memory = self.forward_segment(idx, state.memory)
        return logits


class MemoryState:
    """The memory a decoding run carries from step to step (generate asks its length and resets it)."""

    def __init__(self):
        self.memory = None

    @property
    def length(self) -> int:
        return 0 if self.memory is None else self.memory.mem[0].shape[1]

    def reset(self) -> None:
        self.memory = None


# -- gradient checks (float64) ------------------------------------------------------------------
def _compressive_case(device: str, compression: str, part: str):
    """part "network": every parameter but the compressor's, against the language-model loss alone
    (the reconstruction loss, though computed and backpropagated, must add nothing there: its
    stop-gradients); part "compressor": the compressor's parameters against the whole objective."""
    cfg = CompressiveConfig(vocab_size=11, segment_len=4, mem_len=4, cmem_len=4, compression_rate=2,
                            compression=compression, n_layer=2, n_head=2, d_model=8)
    model = _scaled_for_gradcheck(CompressiveTransformer(cfg, seed=5).to(device, "float64"))
    rng = backend.host_rng(6)
    ids = backend.to_device(rng.integers(0, 11, (2, 13)), device)
    with model.no_grad():                                             # two segments: mem full, cmem started
        _, _, memory = model.forward_segment(ids[:, :4], None)
        _, _, memory = model.forward_segment(ids[:, 4:8], memory)
    idx, targets = ids[:, 8:12], ids[:, 9:13]
    compressor = {id(p) for c in model.compressors for p in c.parameters()}
    for p in model.parameters():
        p.requires_grad = (id(p) in compressor) == (part == "compressor")

    def run(m, i, y):
        _, loss, _ = m.forward_segment(i, memory, y)
        if part == "network":
            return loss
        return loss + m.config.recon_weight * m.reconstruction_loss   # the whole training objective

    return check_module(f"models.compressive_transformer[{compression}, c=2, {part}]", model, [idx, targets],
                        run=run, backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=8)


@register("models.compressive_transformer")
def _gradcheck_compressive(device: str):
    """The network's parameters from the LM loss (stop-gradients hold), the compressor's from the
    attention-reconstruction loss."""
    return [_compressive_case(device, "conv", "network"), _compressive_case(device, "conv", "compressor"),
            _compressive_case(device, "mean", "network")]
