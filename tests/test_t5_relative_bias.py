"""T5's relative position buckets and bias: a table of distances, a reference, the scatter-add backward,
one table per stack shared by its blocks, none in cross-attention."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.attention.relative_bias import (RelativePositionBias, bucket_table, relative_bias_backward,
                                                     relative_bias_forward, relative_position_bucket)
from minitransformer.gradcheck import check_functional, check_module
from minitransformer.models.t5 import T5Config, T5Model

# relative position n = key - query  ->  bucket, with 32 buckets and max distance 128
BIDIRECTIONAL = {
    0: 0, -1: 1, -7: 7,                       # exact: distances 0..7 to the left
    1: 17, 7: 23,                             # exact to the right, offset by 16
    -8: 8, -9: 8, -12: 9, -16: 10, -31: 11,   # logarithmic: 8 + floor(log(d/8) / log(16) * 8)
    -32: 12, -48: 13, -64: 14, -127: 15,
    8: 24, 16: 26, 127: 31,
    -128: 15, -129: 15, -1000: 15,            # beyond max_distance: the last bucket of the side
    128: 31, 1000: 31,
}
CAUSAL = {
    0: 0, -1: 1, -15: 15,                     # exact: distances 0..15
    -16: 16, -17: 16, -31: 21, -32: 21,       # logarithmic: 16 + floor(log(d/16) / log(8) * 16)
    -48: 24, -64: 26, -127: 31,
    -128: 31, -1000: 31,                      # beyond max_distance
    1: 0, 7: 0, 1000: 0,                      # keys to the right (masked anyway): bucket 0
}


@pytest.mark.parametrize("bidirectional, table", [(True, BIDIRECTIONAL), (False, CAUSAL)],
                         ids=["bidirectional", "causal"])
def test_bucket_table_of_distances(bidirectional, table, xp):
    n = xp.asarray(list(table))
    got = backend.to_numpy(relative_position_bucket(n, bidirectional))
    assert dict(zip(table, got.tolist())) == table


def test_buckets_match_hugging_face():
    torch = pytest.importorskip("torch")
    hf = pytest.importorskip("transformers.models.t5.modeling_t5").T5Attention
    n = np.arange(-300, 301)
    for bidirectional in (True, False):
        ref = hf._relative_position_bucket(torch.tensor(n), bidirectional=bidirectional, num_buckets=32,
                                           max_distance=128).numpy()
        np.testing.assert_array_equal(relative_position_bucket(n, bidirectional), ref)


def test_buckets_are_monotone_and_in_range():
    n = np.arange(-500, 501)
    for bidirectional, half in ((True, 16), (False, 32)):
        b = relative_position_bucket(n, bidirectional)
        left = b[n <= 0][::-1]                                    # distance 0, 1, 2, ... to the left
        assert np.all(np.diff(left) >= 0) and left.min() == 0 and left.max() == half - 1
        assert b.min() >= 0 and b.max() <= 31


def test_bucket_table_offsets_follow_the_query(xp):
    """Query i at position offset + i against key j: the bucket of j - (offset + i)."""
    t = backend.to_numpy(bucket_table(2, 5, 3, True, 32, 128, backend.device_of(xp.zeros(1))))
    expected = relative_position_bucket(np.arange(5)[None, :] - np.array([[3], [4]]), True)
    np.testing.assert_array_equal(t, expected)


def test_bias_backward_is_a_scatter_add():
    rng = np.random.default_rng(0)
    buckets = bucket_table(6, 9, 0, True, 8, 16)
    table = rng.standard_normal((8, 3))
    bias, cache = relative_bias_forward(table, buckets)
    assert bias.shape == (1, 3, 6, 9)
    np.testing.assert_array_equal(bias[0, :, 2, 5], table[buckets[2, 5]])
    dbias = rng.standard_normal((4, 3, 6, 9))                       # a batch of 4 gradients
    dtable, _ = relative_bias_backward(dbias, cache)
    expected = np.zeros((8, 3))
    np.add.at(expected, buckets.reshape(-1), dbias.sum(0).reshape(3, -1).T)
    np.testing.assert_allclose(dtable, expected, rtol=1e-12)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_bias_gradcheck(bidirectional, device):
    buckets = bucket_table(4, 7, 1, bidirectional, 8, 16, device)
    table = backend.to_device(np.random.default_rng(1).standard_normal((8, 2)), device)
    result = check_functional("relative_bias", relative_bias_forward, relative_bias_backward, [table, buckets], wrt=[0])
    assert result.passed, str(result)
    module = RelativePositionBias(2, bidirectional, 8, 16, rng=backend.host_rng(2)).to(device, "float64")
    result = check_module("RelativePositionBias", module, [], run=lambda m: m.forward(3, 5, 2),
                          backward=lambda m, d: m.backward(d))
    assert result.passed, str(result)


def test_one_table_per_stack_in_its_first_block_none_in_cross_attention():
    model = T5Model(T5Config(vocab_size=9, n_layer=3, n_dec_layer=2, n_head=2, d_model=8))
    tables = [n for n, _ in model.named_parameters() if "relative_bias" in n]
    assert tables == ["encoder.blocks.0.relative_bias.weight", "decoder.blocks.0.relative_bias.weight"]
    assert model.encoder.relative_bias.bidirectional and not model.decoder.relative_bias.bidirectional
    assert model.encoder.relative_bias.weight.shape == (32, 2)
    assert all(b.relative_bias is None for b in model.encoder.blocks[1:] + model.decoder.blocks[1:])


def test_shared_table_gradient_sums_the_layers():
    """The table's gradient is the scatter of the sum of every block's bias gradient, not one block's."""
    cfg = T5Config(vocab_size=9, max_src_len=8, max_tgt_len=8, n_layer=3, n_dec_layer=1, n_head=2, d_model=8,
                   num_buckets=8, max_distance=16)
    model = T5Model(cfg, seed=4).to("cpu", "float64")
    src, tgt_in, tgt_out = np.array([[3, 4, 5, 6, 7, 1]]), np.array([[0, 3, 4]]), np.array([[3, 4, 1]])
    recorded = []
    for block in model.encoder.blocks:
        def spy(dout, original=block.attn.backward):
            dx, dbias = original(dout)
            recorded.append(dbias.copy())
            return dx, dbias
        block.attn.backward = spy
    model.zero_grad()
    model.forward(src, tgt_in, tgt_out)
    cache = model.encoder.relative_bias.cache
    model.backward()
    assert len(recorded) == 3
    shares = [relative_bias_backward(d, cache)[0] for d in recorded]
    np.testing.assert_allclose(model.encoder.relative_bias.weight.grad, sum(shares), rtol=1e-10, atol=1e-14)
    for share in shares:
        assert not np.allclose(model.encoder.relative_bias.weight.grad, share)


def test_bad_bucket_settings():
    with pytest.raises(ValueError, match="even int"):
        RelativePositionBias(2, True, num_buckets=7)
    with pytest.raises(ValueError, match="max_distance"):
        RelativePositionBias(2, True, num_buckets=32, max_distance=8)
    with pytest.raises(ValueError, match="offset"):
        RelativePositionBias(2, True)(3, 3, -1)
