"""The T5 model: cached decoding equal to recomputation, its configuration and errors, the CLI. Its float64
gradient checks (v1.0, v1.1, sinusoidal) are the registered case `models.t5`, run by test_gradcheck_registry."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.models.registry import build_model
from minitransformer.models.t5 import T5Config, T5Model


def small(**options):
    base = dict(vocab_size=9, max_src_len=12, max_tgt_len=10, n_layer=2, n_dec_layer=2, n_head=2, d_model=8,
                num_buckets=8, max_distance=8)
    return T5Config(**{**base, **options})


@pytest.mark.parametrize("position", ["relative", "sinusoidal"])
def test_cached_decoding_equals_recomputation(position, device):
    """Each step's logits from the KV caches equal a full forward over the whole prefix, and greedy
    decoding picks their argmax."""
    model = T5Model(small(position=position), seed=2).to(device, "float64")
    src = backend.to_device(np.array([[3, 4, 5, 6, 7, 1], [8, 3, 1, 0, 0, 0]]), device)
    state = model.start_decoding(src)
    prefix = np.zeros((2, 1), np.int64)                                   # the pad id starts
    for _ in range(8):
        cached = backend.to_numpy(model.decode_step(state, backend.to_device(prefix[:, -1], device)))
        with model.no_grad():
            full, _ = model.forward(src, backend.to_device(prefix, device))
        np.testing.assert_allclose(cached, backend.to_numpy(full)[:, -1], rtol=1e-10, atol=1e-12)
        prefix = np.concatenate([prefix, cached.argmax(-1)[:, None]], axis=1)
    greedy = backend.to_numpy(model.greedy_decode(src, 8, eos_id=-1))     # no early stop
    np.testing.assert_array_equal(greedy, prefix[:, 1:])


def test_greedy_decode_stops_when_every_row_has_eos():
    model = T5Model(small(), seed=3).to("cpu", "float64")
    src = np.array([[3, 4, 1], [5, 1, 0]])
    full = model.greedy_decode(src, 8, eos_id=-1)                         # never stops early
    assert full.shape == (2, 8)
    eos = int(full[0, 1])                                                 # call row 0's second token EOS
    out = model.greedy_decode(src, 8, eos_id=eos)
    ends = [list(row).index(eos) if eos in row else 8 for row in full]
    assert out.shape == (2, max(ends) + 1 if max(ends) < 8 else 8)        # runs until the last row ends
    np.testing.assert_array_equal(out, full[:, :out.shape[1]])


def test_no_biases_and_unscaled_query_init():
    model = T5Model(small(d_model=16, n_head=4), seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if n.endswith(".bias")]
    q = model.encoder.blocks[0].attn.q.weight.data
    k = model.encoder.blocks[0].attn.kv.weight.data
    assert 0.5 < q.std() * (16 * 4) ** 0.5 < 1.5                      # std (C D)^-1/2: 1/sqrt(D) folded in
    assert 0.5 < k.std() * 16 ** 0.5 < 1.5                            # std C^-1/2


def test_t5_registered_and_described():
    model = build_model("t5", {"vocab_size": 20, "d_model": 8, "n_head": 2})
    assert model.kind == "t5" and model.describe()["config"]["vocab_size"] == 20


@pytest.mark.parametrize("options, match", [
    (dict(feed_forward="swiglu"), "feed_forward"), (dict(position="rope"), "position"),
    (dict(d_model=10, n_head=4), "divisible"), (dict(eos_id=0), "must differ"),
    (dict(pad_id=99), "pad_id"), (dict(dropout=1.0), "dropout")])
def test_bad_config(options, match):
    with pytest.raises(ValueError, match=match):
        small(**options)


def test_bad_inputs():
    model = T5Model(small(), seed=0)
    with pytest.raises(ValueError, match="vocab|id"):
        model.forward(np.array([[3, 99]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="exceeds the context length 12"):
        model.forward(np.ones((1, 13), np.int64), np.array([[0]]))
    with pytest.raises(ValueError, match="the forward had no targets"):
        model.forward(np.array([[3, 4]]), np.array([[0, 1]]))
        model.backward()


def test_cli_trains_t5_tiny(tmp_path):
    from minitransformer.cli import main
    text = tmp_path / "words.txt"                  # a small text instead of the corpus: faster to read
    text.write_text("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
                    "november oscar papa quebec romeo sierra tango uniform victor whiskey yankee zulu\n")
    assert main(["train", "--model", "t5", "--preset", "tiny", "--steps", "2", "--data", str(text),
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
