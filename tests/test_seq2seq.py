"""The encoder-decoder Transformer: learns to reverse sequences; cached decoding equals recomputation."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from minitransformer.optim import AdamW

PAD, BOS = 0, 1


def _batch(rng, B, L):
    src = rng.integers(2, 10, (B, L))
    tgt = src[:, ::-1]
    tgt_in = np.concatenate([np.full((B, 1), BOS), tgt[:, :-1]], axis=1)
    return src, tgt_in, tgt


def test_learns_to_reverse_and_decodes_greedily(device):
    cfg = Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=10, max_src_len=6, max_tgt_len=6, n_layer=1,
                        n_dec_layer=1, n_head=2, d_model=32, norm="pre")
    model = Seq2SeqTransformer(cfg, seed=0).to(device)
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    for _ in range(250):
        src, tgt_in, tgt = (backend.to_device(a, device) for a in _batch(rng, 32, 5))
        model.forward(src, tgt_in, tgt)
        model.backward()
        opt.step()
        opt.zero_grad()
    src, _, tgt = _batch(np.random.default_rng(1), 64, 5)
    decoded = backend.to_numpy(model.greedy_decode(backend.to_device(src, device), BOS, 5))
    assert (decoded == tgt).all(axis=1).mean() > 0.9


def test_cached_decoding_matches_full_forward(device):
    cfg = Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=10, max_src_len=6, max_tgt_len=6, n_layer=1,
                        n_dec_layer=2, n_head=2, d_model=16)
    model = Seq2SeqTransformer(cfg, seed=3).to(device, "float64")
    src = backend.to_device(np.array([[2, 3, 4, 5, 0, 0], [6, 7, 8, 9, 2, 3]]), device)   # with padding
    out = backend.to_numpy(model.greedy_decode(src, BOS, 5))
    # recompute every step from scratch: argmax of the full forward's last position
    seq = np.full((2, 1), BOS)
    for _ in range(5):
        logits, _ = model.forward(src, backend.to_device(seq, device))
        seq = np.concatenate([seq, backend.to_numpy(logits)[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq[:, 1:])


def test_padding_does_not_change_the_output(device):
    cfg = Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=10, max_src_len=8, max_tgt_len=4, n_layer=1,
                        n_dec_layer=1, n_head=2, d_model=16)
    model = Seq2SeqTransformer(cfg, seed=0).to(device, "float64")
    tgt_in = backend.to_device(np.array([[BOS, 4, 5]]), device)
    short, _ = model.forward(backend.to_device(np.array([[3, 4, 5]]), device), tgt_in)
    padded, _ = model.forward(backend.to_device(np.array([[3, 4, 5, PAD, PAD]]), device), tgt_in)
    np.testing.assert_allclose(backend.to_numpy(padded), backend.to_numpy(short), rtol=1e-10, atol=1e-12)


def test_bad_input(device):
    model = Seq2SeqTransformer(Seq2SeqConfig(max_src_len=4, max_tgt_len=4), seed=0).to(device)
    with pytest.raises(ValueError, match="exceeds the context length 4"):
        model.forward(backend.to_device(np.ones((1, 5), np.int64), device),
                      backend.to_device(np.ones((1, 2), np.int64), device))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 16\)"):
        model.forward(backend.to_device(np.ones((1, 3), np.int64), device),
                      backend.to_device(np.full((1, 2), 99), device))
