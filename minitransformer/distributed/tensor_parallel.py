r"""Tensor parallelism (Megatron-LM): one layer's matrices split over the ranks.

Data parallelism copies the whole model on every rank; tensor parallelism splits each block's
weights so that every rank holds and computes $1/R$ of them. Shoeybi et al. (2019) split a
Transformer block with two kinds of Linear and two communication operators.

**Column-parallel** $Y = X A$ with $A = [A_0 \mid A_1 \mid \dots]$ split by columns: rank $r$
computes $Y_r = X A_r$, its own slice of the output features, from the full input. **Row-parallel**
$Z = Y B$ with $B$ split by rows, $B = [B_0; B_1; \dots]$: rank $r$ computes the partial product
$Y_r B_r$ from its slice of the input, and $Z = \sum_r Y_r B_r$ is an all-reduce. In the
feed-forward block, $Z = \mathrm{GELU}(X A) B$: the GELU is elementwise, so a column-parallel first
layer feeds a row-parallel second layer without any communication in between. In attention, the
heads are independent: rank $r$ takes heads $rH/R .. (r+1)H/R - 1$ (a column split of $W^{QKV}$) and
the output projection is row-parallel.

The communication sits in two conjugate operators around each parallel region:

* $f$: forward the identity (every rank has the full input), backward an **all-reduce**: the
  region's input feeds every rank's slice, so its gradient is the sum of the ranks' contributions;
* $g$: forward an **all-reduce** (the row-parallel sum), backward the identity: the sum's
  gradient with respect to each term is the sum's gradient.

So a block costs two all-reduces of $(B, T, C)$ in the forward (a $g$ after attention, one after
the feed-forward) and two in the backward (the $f$'s), and nothing for its LayerNorms, residuals
and dropout, which every rank runs on the full, identical activations (same dropout seeds on every
rank: the masks must agree). The parameters outside the blocks (embeddings, final LayerNorm) are
replicated, and their gradients come out identical on every rank.
"""
from __future__ import annotations

import numpy as np  # host side only: index tables of the shards

from .. import backend
from ..attention.kernel import make_kernel
from ..attention.multi_head import MultiHeadAttention
from ..blocks import DecoderBlock, EncoderBlock, FeedForward
from ..gradcheck import check_module, float64_inputs, register
from ..nn.linear import Linear
from ..nn.module import Module, Parameter
from .communicator import LocalWorld

KERNELS = ("dense",)        # kernels with no parameters, buffers or per-head state of their own


# --8<-- [start:f_and_g]
class CopyToRanks(Module):
    """Megatron's f: forward the identity, backward the all-reduce of the input gradient."""

    def __init__(self, comm):
        super().__init__()
        self.comm = comm

    def forward(self, x):
        return x

    def backward(self, dx):
        return self.comm.allreduce_(dx)                 # d(input) = sum over ranks of their parts


class SumOverRanks(Module):
    """Megatron's g: forward the all-reduce of the partial sums, backward the identity."""

    def __init__(self, comm):
        super().__init__()
        self.comm = comm

    def forward(self, partial):
        return self.comm.allreduce_(partial)             # Z = sum_r Y_r B_r

    def backward(self, dz):
        return dz
# --8<-- [end:f_and_g]


def _split(n: int, comm, what: str) -> np.ndarray:
    """Indices of this rank's contiguous block of `n` features (n must divide evenly)."""
    if n % comm.size:
        raise ValueError(f"tensor parallelism: {what} = {n} is not divisible by {comm.size} ranks")
    part = n // comm.size
    return np.arange(comm.rank * part, (comm.rank + 1) * part)


def _sliced_linear(serial: Linear, weight_index, bias) -> Linear:
    """A Linear whose weight is serial.weight[weight_index] (a copy) and whose bias is `bias`."""
    weight = serial.weight.data[weight_index]
    xp = backend.get_array_module(weight)
    layer = Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
    layer.weight = Parameter(xp.ascontiguousarray(weight))
    layer.bias = Parameter(xp.ascontiguousarray(bias)) if bias is not None else None
    return layer


class ColumnParallelLinear(Module):
    """This rank's output columns of a Linear: y_r = x A_r + b_r. `columns`: which ones."""

    def __init__(self, serial: Linear, columns: np.ndarray):
        super().__init__()
        bias = serial.bias.data[columns] if serial.bias is not None else None
        self.columns = columns
        self.shard_index = {"weight": (slice(None), columns), "bias": columns}
        self.linear = _sliced_linear(serial, (slice(None), columns), bias)

    def forward(self, x):
        return self.linear(x)                           # (B,T,in) -> (B,T,out/R)

    def backward(self, dy):
        return self.linear.backward(dy)                 # this rank's part of dx (f sums them)


class RowParallelLinear(Module):
    """This rank's input rows of a Linear: partial z_r = y_r B_r; g sums them, then + b (replicated)."""

    def __init__(self, serial: Linear, rows: np.ndarray, comm):
        super().__init__()
        self.rows = rows
        self.shard_index = {"weight": (rows, slice(None))}
        self.linear = _sliced_linear(serial, (rows, slice(None)), None)
        self.bias = Parameter(serial.bias.data.copy()) if serial.bias is not None else None
        self.g = SumOverRanks(comm)

    # --8<-- [start:row_parallel]
    def forward(self, y_r):
        z = self.g(self.linear(y_r))                    # (B,T,in/R) -> partial (B,T,out) -> sum
        if self.bias is not None:
            z += self.bias.data                         # added once, after the sum
        return z

    def backward(self, dz):
        if self.bias is not None:
            self.bias.grad += dz.sum(axis=tuple(range(dz.ndim - 1)))
        return self.linear.backward(self.g.backward(dz))   # dy_r = dz B_r^T
    # --8<-- [end:row_parallel]


class TensorParallelFeedForward(Module):
    """FeedForward split over the ranks: f -> column-parallel fc1 -> activation -> row-parallel fc2
    (g inside) -> dropout. Holds d_ff/R hidden features per rank."""

    def __init__(self, serial: FeedForward, comm):
        super().__init__()
        hidden = _split(serial.fc1.out_features, comm, "d_ff")
        self.f = CopyToRanks(comm)
        self.fc1 = ColumnParallelLinear(serial.fc1, hidden)
        self.act = serial.act
        self.fc2 = RowParallelLinear(serial.fc2, hidden, comm)
        self.drop = serial.drop                         # same seed on every rank: the same mask

    # --8<-- [start:tp_ffn]
    def forward(self, x):
        h = self.act(self.fc1(self.f(x)))               # (B,T,C) -> (B,T,F/R), no communication
        return self.drop(self.fc2(h))                   # (B,T,F/R) -> (B,T,C), one all-reduce

    def backward(self, dy):
        dh = self.fc2.backward(self.drop.backward(dy))  # (B,T,C) -> (B,T,F/R)
        return self.f.backward(self.fc1.backward(self.act.backward(dh)))  # one all-reduce
    # --8<-- [end:tp_ffn]


class TensorParallelSelfAttention(Module):
    """Self-attention with this rank's H/R heads: f -> column-parallel QKV projection -> attention
    of its heads -> row-parallel output projection (g inside)."""

    def __init__(self, serial: MultiHeadAttention, comm):
        super().__init__()
        if serial.cross:
            raise ValueError("tensor parallelism splits self-attention; cross-attention is not split here")
        kernel = serial.kernel.kernel_name
        if kernel not in KERNELS:
            raise ValueError(f"tensor parallelism: attention kernel {kernel!r} is not supported; it splits "
                             f"the heads of {list(KERNELS)} (kernels without state of their own)")
        C, H, D = serial.d_model, serial.n_head, serial.head_dim
        heads = _split(H, comm, "n_head")
        self.n_head, self.head_dim, self.d_model = len(heads), D, C
        features = (heads[:, None] * D + np.arange(D)).reshape(-1)       # this rank's features of C
        qkv_columns = np.concatenate([j * C + features for j in range(3)])  # of q, of k, of v
        self.f = CopyToRanks(comm)
        self.qkv = ColumnParallelLinear(serial.qkv, qkv_columns)
        self.kernel = make_kernel(kernel, self.n_head, D)
        self.proj = RowParallelLinear(serial.proj, features, comm)
        self.cache = None

    # --8<-- [start:tp_attention]
    def forward(self, x, causal: bool = False, key_padding_mask=None, kv_cache=None):
        if kv_cache is not None:
            raise ValueError("tensor-parallel attention does not take a KV cache (it trains; generate serially)")
        B, T, _ = x.shape
        Hr, D = self.n_head, self.head_dim
        qkv = self.qkv(self.f(x)).reshape(B, T, 3, Hr, D)                    # (B,T,3C/R) -> (B,T,3,Hr,D)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)                               # -> 3 x (B,Hr,T,D)
        y = self.kernel.forward(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, Hr * D)                    # (B,Hr,T,D) -> (B,T,C/R)
        self.cache = (B, T) if self.keep_cache else None
        return self.proj(y)                                                  # (B,T,C), one all-reduce

    def backward(self, dout):
        if self.cache is None:
            raise RuntimeError("TensorParallelSelfAttention.backward: no forward was cached")
        (B, T), Hr, D = self.cache, self.n_head, self.head_dim
        self.cache = None
        xp = backend.get_array_module(dout)
        dy = self.proj.backward(dout).reshape(B, T, Hr, D).transpose(0, 2, 1, 3)   # (B,T,C/R) -> (B,Hr,T,D)
        dq, dk, dv = self.kernel.backward(dy)
        dqkv = xp.empty((B, T, 3, Hr, D), dtype=dout.dtype)
        heads = dqkv.transpose(2, 0, 3, 1, 4)                                # (B,T,3,Hr,D) -> (3,B,Hr,T,D) view
        heads[0], heads[1], heads[2] = dq, dk, dv
        return self.f.backward(self.qkv.backward(dqkv.reshape(B, T, 3 * Hr * D)))   # one all-reduce
    # --8<-- [end:tp_attention]


# --8<-- [start:tensor_parallel]
def tensor_parallel(model, comm):
    """Split the self-attention and feed-forward of every block of `model` over the ranks of
    `comm`, in place (the blocks' own forward and backward run unchanged around them). Every rank
    must call it on the same model (same weights); returns the model."""
    blocks = [m for m in model.modules() if isinstance(m, (EncoderBlock, DecoderBlock))]
    if not blocks:
        raise ValueError(f"tensor_parallel: {type(model).__name__} has no Transformer blocks to split")
    for block in blocks:
        block.attn = TensorParallelSelfAttention(block.attn, comm)
        block.ffn = TensorParallelFeedForward(block.ffn, comm)
    return model
# --8<-- [end:tensor_parallel]


def shard_indices(model) -> dict:
    """{parameter name: index into the serial parameter} for every split parameter of a
    tensor-parallel model (the others are replicated whole)."""
    out = {}
    for name, module in model.named_modules():
        for attr, index in getattr(module, "shard_index", {}).items():
            out[f"{name}.linear.{attr}"] = index
    return out


def communication_per_step(n_layer: int, tokens: int, d_model: int) -> int:
    """Elements all-reduced by one forward and backward of a tensor-parallel stack: per block two
    g's forward and two f's backward, each of (B*T, C)."""
    return 4 * n_layer * tokens * d_model


@register("distributed.TensorParallelBlock")
def _gradcheck_tensor_parallel(device: str):
    """The split layers in a world of one (f and g are identities, each rank holds everything):
    their own backward, checked by finite differences. Against the serial model on 2 ranks:
    tests/mpi/tensor_parallel_check.py."""
    block = EncoderBlock(8, 2, 16, rng=backend.host_rng(3))
    tensor_parallel(block, LocalWorld())
    block.to(device, "float64")
    (x,) = float64_inputs(device, 4, (2, 3, 8))
    return [check_module("distributed.TensorParallelBlock", block, [x],
                         run=lambda m, a: m.forward(a, causal=True))]
