r"""BigBird block-sparse attention (Zaheer et al. 2020), bidirectional.

The sequence is cut into blocks of `block` tokens ($n_b = \lceil T / \text{block} \rceil$, the last
block padded with invalid keys). Query block $b$ sees the key blocks

* window: $b-1, b, b+1$;
* global: the first and the last block;
* random: `random_blocks` = r blocks drawn outside the window and global blocks, fixed per `seed`
  (redrawn at every training forward when `redraw=True`);

each listed once (one joint softmax). The global blocks' queries see every key (dense rows), so the
global blocks are symmetric. Scores are $(B,H,n_b,\text{block},R\cdot\text{block})$ with $R = 5 + r$
slots: $O(T \cdot R \cdot \text{block})$.

Backward: the dense formulas per block row; $dK$ and $dV$ of the gathered key blocks are
scatter-added back to their blocks (`xp.add.at` over $n_b R$ block indices, not over tokens).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np   # host-side block tables, random draws and test inputs only

from .. import backend
from ..gradcheck import check_functional, float64_inputs, register
from .band import gradcheck_mha_with_kernel, masked_softmax
from .kernel import AttentionKernel, register_kernel


# --8<-- [start:bigbird_blocks]
def bigbird_block_table(n_blocks: int, random_blocks: int, rng: np.random.Generator):
    """(n_b, 5 + r) key-block ids per query block and their validity (False: out of range,
    duplicate, or a row of a global query block, which attends densely instead)."""
    b = np.arange(n_blocks)[:, None]
    fixed = np.concatenate([b - 1, b, b + 1, np.zeros_like(b), np.full_like(b, n_blocks - 1)], axis=1)
    # random blocks: a random order of the blocks outside window and global, first r taken
    keys = rng.random((n_blocks, n_blocks))
    j = np.arange(n_blocks)[None, :]
    excluded = (np.abs(j - b) <= 1) | (j == 0) | (j == n_blocks - 1)                 # (n_b, n_b)
    keys[excluded] = np.inf
    order = np.argsort(keys, axis=1, kind="stable")[:, :random_blocks]               # (n_b, r)
    rand_ok = np.take_along_axis(~excluded, order, axis=1)                           # too few candidates
    table = np.concatenate([fixed, order], axis=1)                                   # (n_b, R)
    valid = np.concatenate([(fixed >= 0) & (fixed < n_blocks), rand_ok], axis=1)
    for slot in range(1, table.shape[1]):                                            # each block once
        dup = ((table[:, :slot] == table[:, slot:slot + 1]) & valid[:, :slot]).any(axis=1)
        valid[:, slot] &= ~dup
    valid[[0, -1]] = False                                                           # global query blocks
    return np.where(valid, table, 0), valid
# --8<-- [end:bigbird_blocks]


class BigBirdCache(NamedTuple):
    q: Any            # (B,H,nb,bs,D) zero-padded query blocks
    kb: Any           # (B,H,nb,R*bs,D) gathered key blocks
    vb: Any           # (B,H,nb,R*bs,D) gathered value blocks
    p: Any            # (B,H,nb,bs,R*bs) block-sparse probabilities
    k: Any            # (B,H,S,D) for the dense global rows
    v: Any
    rows: Any         # int (G',) global query positions (device array)
    rows_p: Any       # (B,H,G',S)
    table: Any        # host int (nb, R)
    T: int
    block: int


# --8<-- [start:bigbird_forward]
def bigbird_forward(q, k, v, table, valid, block: int, key_valid=None):
    """Block-sparse attention with the block table from bigbird_block_table; T == S."""
    xp = backend.get_array_module(q)
    B, H, T, D = q.shape
    nb, R = table.shape
    scale = D ** -0.5
    pad = nb * block - T
    padw = ((0, 0), (0, 0), (0, pad), (0, 0))
    qb = xp.pad(q, padw).reshape(B, H, nb, block, D)                        # (B,H,T,D) -> (B,H,nb,bs,D)
    table_x = xp.asarray(table)                                             # device copy for indexing
    kb = xp.pad(k, padw).reshape(B, H, nb, block, D)[:, :, table_x]         # (B,H,nb,R,bs,D)
    vb = xp.pad(v, padw).reshape(B, H, nb, block, D)[:, :, table_x]         # (B,H,nb,R,bs,D)
    kb = kb.reshape(B, H, nb, R * block, D)                                 # (B,H,nb,R*bs,D)
    vb = vb.reshape(B, H, nb, R * block, D)                                 # (B,H,nb,R*bs,D)
    real = np.arange(nb * block) < T                                        # padded keys are invalid
    ok = np.repeat(valid, block, axis=1) & real.reshape(nb, block)[table].reshape(nb, R * block)  # (nb,R*bs)
    ok = xp.asarray(ok)[None, None, :, None, :]                             # (1,1,nb,1,R*bs)
    if key_valid is not None:
        kp = xp.pad(key_valid, ((0, 0), (0, pad))).reshape(B, nb, block)[:, table_x]  # (B,nb,R,bs)
        ok = ok & kp.reshape(B, 1, nb, 1, R * block)                        # (B,1,nb,1,R*bs)
    s = qb @ kb.swapaxes(-1, -2) * scale                                    # (B,H,nb,bs,D)@(B,H,nb,D,R*bs)
    p = masked_softmax(s, ok)                                               # (B,H,nb,bs,R*bs)
    out = (p @ vb).reshape(B, H, nb * block, D)[:, :, :T]                   # (B,H,nb,bs,D) -> (B,H,T,D)
    # global query blocks: dense rows over every key
    rows = np.concatenate([np.arange(0, min(block, T)), np.arange((nb - 1) * block, T)])
    rows = xp.asarray(np.unique(rows))
    row_ok = xp.ones((1, 1, 1, T), bool) if key_valid is None else key_valid[:, None, None, :]
    rows_p = masked_softmax(q[:, :, rows] @ k.swapaxes(-1, -2) * scale, row_ok)   # (B,H,G',S)
    out[:, :, rows] = rows_p @ v                                            # (B,H,G',D)
    return out, BigBirdCache(qb, kb, vb, p, k, v, rows, rows_p, table, T, block)
# --8<-- [end:bigbird_forward]


# --8<-- [start:bigbird_backward]
def bigbird_backward(dout, cache: BigBirdCache):
    """Returns (dq, dk, dv)."""
    qb, kb, vb, p, k, v, rows, rows_p, table, T, block = cache
    xp = backend.get_array_module(dout)
    B, H, nb, _, D = qb.shape
    R = table.shape[1]
    scale = D ** -0.5
    dob = xp.pad(dout, ((0, 0), (0, 0), (0, nb * block - T), (0, 0)))
    rows = xp.asarray(rows)
    dob[:, :, rows] = 0                                                     # global rows: dense path only
    dob = dob.reshape(B, H, nb, block, D)                                   # (B,H,nb,bs,D)
    # fwd: o = P @ vb  =>  dvb = P^T do,  dP = do vb^T;  softmax  =>  dS = P * (dP - rowsum(P dP))
    dvb = p.swapaxes(-1, -2) @ dob                                          # (B,H,nb,R*bs,D)
    dp = dob @ vb.swapaxes(-1, -2)                                          # (B,H,nb,bs,R*bs)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True))
    # fwd: s = scale qb kb^T  =>  dq = scale dS kb,  dkb = scale dS^T qb
    dq = (ds @ kb * scale).reshape(B, H, nb * block, D)[:, :, :T]           # (B,H,T,D)
    dkb = (ds.swapaxes(-1, -2) @ qb * scale).reshape(B, H, nb * R, block, D)   # (B,H,nb*R,bs,D)
    dvb = dvb.reshape(B, H, nb * R, block, D)                               # (B,H,nb*R,bs,D)
    # fwd: kb = k_blocks[table]  =>  dk_blocks[table] += dkb (a block may be gathered many times)
    flat = xp.asarray(table.reshape(-1))                                    # (nb*R,) key-block ids
    dk = xp.zeros((B, H, nb, block, D), dtype=dkb.dtype)
    dv = xp.zeros((B, H, nb, block, D), dtype=dvb.dtype)
    xp.add.at(dk, (slice(None), slice(None), flat), dkb)
    xp.add.at(dv, (slice(None), slice(None), flat), dvb)
    dk = dk.reshape(B, H, nb * block, D)[:, :, :T]                          # (B,H,T,D)
    dv = dv.reshape(B, H, nb * block, D)[:, :, :T]                          # (B,H,T,D)
    # the dense global rows (as in dense attention)
    do_r, q_r = dout[:, :, rows], qb.reshape(B, H, nb * block, D)[:, :, rows]  # (B,H,G',D)
    dp_r = do_r @ v.swapaxes(-1, -2)                                        # (B,H,G',S)
    ds_r = rows_p * (dp_r - (rows_p * dp_r).sum(-1, keepdims=True))
    dq[:, :, rows] += ds_r @ k * scale
    dk = dk + ds_r.swapaxes(-1, -2) @ q_r * scale
    dv = dv + rows_p.swapaxes(-1, -2) @ do_r
    return dq, dk, dv
# --8<-- [end:bigbird_backward]


@register_kernel("bigbird")
class BigBirdAttention(AttentionKernel):
    """Options: `block` (default 64), `random_blocks` r (default 3), `seed`, `redraw` (draw new random
    blocks at every training forward; False keeps them fixed per sequence length)."""

    supports_causal = False
    supports_cross = False

    def __init__(self, n_head, head_dim, max_len=None, rng=None, block: int = 64, random_blocks: int = 3,
                 seed: int = 0, redraw: bool = False):
        super().__init__(n_head, head_dim, max_len, rng)
        if int(block) < 1 or int(random_blocks) < 0:
            raise ValueError(f"bigbird: expected block >= 1 and random_blocks >= 0, got {block}, {random_blocks}")
        self.block, self.random_blocks, self.seed, self.redraw = int(block), int(random_blocks), seed, redraw
        self._draws = np.random.default_rng(seed)
        self._tables: dict[int, tuple] = {}

    def block_table(self, T: int):
        """(table, valid) for length T: fixed per seed unless redraw is on in training."""
        nb = -(-T // self.block)
        if (self.redraw and self.training) or nb not in self._tables:
            rng = self._draws if self.redraw else np.random.default_rng(self.seed)
            self._tables[nb] = bigbird_block_table(nb, self.random_blocks, rng)
        return self._tables[nb]

    def pattern_mask(self, T, S=None, causal=False):
        """(1,T,T) boolean mask this kernel attends with (small T: tests and pictures)."""
        table, valid = self.block_table(T)
        nb, bs = table.shape[0], self.block
        blocks = np.zeros((nb, nb), bool)
        rows = np.repeat(np.arange(nb), table.shape[1])
        blocks[rows[valid.reshape(-1)], table.reshape(-1)[valid.reshape(-1)]] = True
        blocks[[0, -1], :] = True
        return np.kron(blocks, np.ones((bs, bs), bool))[None, :T, :T]

    def attend(self, q, k, v, causal, key_valid):
        if q.shape[2] != k.shape[2]:
            raise ValueError(f"bigbird needs as many keys as queries (self-attention), got "
                             f"T={q.shape[2]}, S={k.shape[2]}")
        table, valid = self.block_table(q.shape[2])
        out, cache = bigbird_forward(q, k, v, table, valid, self.block, key_valid)
        self.cache = cache if self.keep_cache else None
        return out

    def backward(self, dout):
        return bigbird_backward(dout, self.saved_cache())

    def extra_repr(self) -> str:
        return f"block={self.block}, random_blocks={self.random_blocks}, seed={self.seed}, redraw={self.redraw}"


@register("attention.bigbird")
def _gradcheck_bigbird(device: str):
    T = 23                                                                  # 6 blocks of 4, last one partial
    q, k, v = float64_inputs(device, 5, (2, 2, T, 4), (2, 2, T, 4), (2, 2, T, 4))
    kpm = backend.to_device(np.arange(T)[None, :] < np.array([[T], [T - 3]]), device)
    table, valid = bigbird_block_table(6, 1, np.random.default_rng(0))     # held fixed during the check
    return [check_functional("attention.bigbird", lambda q, k, v: bigbird_forward(q, k, v, table, valid, 4, kpm),
                             bigbird_backward, [q, k, v]),
            gradcheck_mha_with_kernel("bigbird", device, {"block": 2, "random_blocks": 1}, causal=False)]
