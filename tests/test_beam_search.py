"""Beam search: exhaustive when the beam holds every output (checked by enumeration on a tiny
vocabulary, scored by full recomputation), greedy with one beam, and its errors."""
import itertools

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.beam_search import beam_search, strip_after_eos
from minitransformer.models.t5 import T5Config, T5Model

V, L, EOS = 4, 3, 1          # ids: 0 pad (and start), 1 EOS, 2 and 3 symbols


def tiny_model(seed=0):
    cfg = T5Config(vocab_size=V, max_src_len=6, max_tgt_len=L, n_layer=1, n_dec_layer=2, n_head=2, d_model=8,
                   num_buckets=8, max_distance=8)
    model = T5Model(cfg, seed=seed).to("cpu", "float64")
    model.shared.weight.data *= 2.0                                      # peakier distributions
    return model


def log_prob(model, src_row, seq):
    """log p(seq | src) from one full forward, no cache."""
    with model.no_grad():
        logits, _ = model.forward(src_row[None], np.array([[0] + seq[:-1]]))
    z = logits[0] - logits[0].max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(sum(logp[t, tok] for t, tok in enumerate(seq)))


def all_outputs():
    """Every output of at most L tokens: ended by EOS, or L tokens without EOS."""
    outs = []
    for n in range(1, L + 1):
        for seq in itertools.product(range(V), repeat=n):
            if EOS in seq[:-1] or (n < L and seq[-1] != EOS):
                continue
            outs.append(list(seq))
    return outs


@pytest.mark.parametrize("seed", [0, 1])
def test_full_beam_equals_exhaustive_search(seed):
    model = tiny_model(seed)
    src = np.array([[2, 3, 3, 1, 0], [3, 2, 1, 0, 0]])
    outs = all_outputs()
    tokens, scores = beam_search(model, src, beam_size=V ** L)
    for b in range(2):
        exhaustive = sorted(((log_prob(model, src[b], o), o) for o in outs), key=lambda p: -p[0])
        found = strip_after_eos(tokens[b], EOS)
        finite = np.isfinite(scores[b])
        assert finite.sum() == len(outs)                                  # every output, once
        np.testing.assert_allclose(scores[b][finite], [s for s, _ in exhaustive], rtol=1e-9, atol=1e-12)
        assert found[0] == exhaustive[0][1]                               # the most likely output
        assert sorted(map(tuple, np.array(found, dtype=object)[finite])) == sorted(map(tuple, outs))


def test_small_beam_scores_are_true_log_probabilities():
    model = tiny_model(2)
    src = np.array([[2, 3, 1]])
    tokens, scores = beam_search(model, src, beam_size=3)
    for seq, score in zip(strip_after_eos(tokens[0], EOS), scores[0]):
        assert abs(log_prob(model, src[0], seq) - score) < 1e-9
    assert np.all(np.diff(scores[0]) <= 0)                                # best first


def test_beam_of_one_is_greedy(device):
    model = tiny_model(3).to(device)
    src = backend.to_device(np.array([[2, 3, 3, 1], [3, 1, 0, 0]]), device)
    tokens, _ = beam_search(model, src, beam_size=1)
    greedy = model.greedy_decode(src, eos_id=-1)
    for b in range(2):
        assert strip_after_eos(tokens[b], EOS)[0] == strip_after_eos(greedy[b:b + 1], EOS)[0]


def test_beam_search_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, np.array([[2, 1]]), beam_size=0)
    with pytest.raises(TypeError, match="start_decoding"):
        beam_search(object(), np.array([[2, 1]]), beam_size=2)
