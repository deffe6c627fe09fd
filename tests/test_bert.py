"""BERT's model: gradient checks of every piece and of the whole model, the tied decoder, shared
layers, the factorised embedding's parameter count, padding, the classifier and the errors."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.gradcheck import registered
from minitransformer.models.bert import BertConfig, BertModel, gradcheck_bert
from minitransformer.models.bert_classifier import BertClassifier, BertClassifierConfig
from minitransformer.models.bert_layers import MLMHead, Pooler
from minitransformer.models.registry import build_model
from minitransformer.transfer import classifier_from_pretrained, encoder_state

BERT_CASES = ["bert.tanh", "bert.BertEmbeddings", "bert.Pooler", "bert.MLMHead", "bert.NSPHead",
              "bert.share_parameters", "models.BertModel", "models.BertClassifier"]


def small(**fields):
    base = dict(vocab_size=11, max_len=6, n_layer=2, n_head=2, d_model=8, d_ff=12, dropout=0.0)
    return BertConfig(**{**base, **fields})


def test_every_bert_piece_has_a_registered_gradcheck():
    """tests/test_gradcheck_registry.py runs them all (float64, on --device); here: they exist, and
    the whole-model case covers the three variants."""
    cases = registered()
    assert set(BERT_CASES) <= set(cases)
    names = [r.name for r in cases["models.BertModel"]("cpu")]
    assert any("ALBERT" in n for n in names) and any("no NSP" in n for n in names)


def test_gradcheck_catches_a_decoder_without_the_tied_gradient(device, monkeypatch):
    """The whole-model check fails when the MLM decoder forgets to add into the word table."""
    def broken_backward(self, dlogits):
        from minitransformer.nn.functional.linear import linear_backward
        dz, _, db = linear_backward(dlogits, self.cache)        # drops dA: the tied path is lost
        self.bias.grad += db
        return self.transform.backward(self.act.backward(self.ln.backward(dz)))
    monkeypatch.setattr(MLMHead, "backward", broken_backward)
    model = BertModel(small(), seed=1).to(device, "float64")
    result = gradcheck_bert(device, "broken", model, 11)
    assert not result.passed and result.errors["encoder.embeddings.word.weight"] > 1e-3


def test_gradcheck_catches_a_pooler_without_tanh_derivative(device, monkeypatch):
    monkeypatch.setattr("minitransformer.models.bert_layers.tanh_backward", lambda dy, cache: dy)
    result = registered()["bert.Pooler"](device)
    assert not result.passed


def test_decoder_is_tied_and_has_its_own_bias():
    model = BertModel(small(), seed=0)
    assert model.mlm.word_weight is model.encoder.embeddings.word.weight
    names = [n for n, _ in model.named_parameters()]
    assert "mlm.word_weight" not in names and "mlm.bias" in names          # listed once, bias separate
    assert model.mlm.bias.shape == (11,)


def test_shared_layers_and_factorised_embedding_count_parameters():
    C, V, E, L = 16, 50, 4, 3
    base = BertModel(small(vocab_size=V, d_model=C, n_layer=L, max_len=10), seed=0)
    shared = BertModel(small(vocab_size=V, d_model=C, n_layer=L, max_len=10, share_layers=True), seed=0)
    block = base.encoder.blocks[0].num_parameters()
    assert base.num_parameters() - shared.num_parameters() == (L - 1) * block
    assert shared.encoder.blocks[2].attn.qkv.weight is shared.encoder.blocks[0].attn.qkv.weight
    fact = BertModel(small(vocab_size=V, d_model=C, n_layer=L, max_len=10, d_embed=E), seed=0)
    emb = fact.encoder.embeddings
    # word V x E + segments 2 x E + positions T x E + LN 2E + projection E x C + C, instead of (V+2+T) x C + 2C
    assert emb.num_parameters() == (V + 2 + 10) * E + 2 * E + E * C + C
    assert emb.word.weight.shape == (V, E) and emb.project.weight.shape == (E, C)


def test_shared_layers_stay_shared_after_a_training_step_and_a_state_dict_round_trip():
    from minitransformer.train import TrainConfig, make_optimizer
    model = BertModel(small(share_layers=True), seed=0)
    tokens = np.array([[2, 5, 6, 4, 3, 0]])
    targets = np.full((1, 6), -100)
    targets[0, 3] = 7
    model.forward(tokens, None, targets)
    model.backward()
    make_optimizer(model, TrainConfig(lr=1e-2)).step()
    b0, b1 = model.encoder.blocks
    assert b0.ffn.fc1.weight is b1.ffn.fc1.weight
    clone = BertModel(small(share_layers=True), seed=5)
    clone.load_state_dict(model.state_dict())
    assert np.array_equal(clone.encoder.blocks[1].ffn.fc1.weight.data, b0.ffn.fc1.weight.data)


def test_padding_does_not_change_the_real_positions(device):
    model = BertModel(small(dropout=0.1), seed=0).to(device).eval()
    tokens = np.array([[2, 5, 6, 7, 3]])
    padded = np.array([[2, 5, 6, 7, 3, 0]])
    a, _ = model.forward(backend.to_device(tokens, device))
    b, _ = model.forward(backend.to_device(padded, device))
    np.testing.assert_allclose(backend.to_numpy(a)[0], backend.to_numpy(b)[0, :5], rtol=1e-5, atol=1e-5)


def test_bidirectional_a_later_token_changes_an_earlier_output():
    model = BertModel(small(), seed=0).eval()
    a, _ = model.forward(np.array([[2, 5, 6, 7, 3]]))
    b, _ = model.forward(np.array([[2, 5, 6, 8, 3]]))
    assert not np.allclose(a[0, 1], b[0, 1])


def test_masked_rows_logits_match_the_full_logits():
    model = BertModel(small(), seed=0).eval()
    tokens = np.array([[2, 5, 4, 7, 3], [2, 4, 6, 3, 0]])
    targets = np.full((2, 5), -100)
    targets[0, 2], targets[1, 1] = 6, 9
    full, _ = model.forward(tokens)
    rows, loss = model.forward(tokens, None, targets)
    np.testing.assert_allclose(rows, full[[0, 1], [2, 1]], rtol=1e-6)
    logp = full[[0, 1], [2, 1]] - np.log(np.exp(full[[0, 1], [2, 1]]).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(loss), -(logp[0, 6] + logp[1, 9]) / 2, rtol=1e-5)


def test_input_errors():
    model = BertModel(small(nsp=False), seed=0)
    with pytest.raises(ValueError, match="exceeds the context length 6"):
        model.forward(np.zeros((1, 7), np.int64))
    with pytest.raises(ValueError, match="segments: expected the tokens' shape"):
        model.forward(np.zeros((1, 4), np.int64), np.zeros((1, 3), np.int64))
    with pytest.raises(ValueError, match=r"segments.*\[0, 2\)|segments"):
        model.forward(np.zeros((1, 4), np.int64), np.full((1, 4), 2))
    with pytest.raises(ValueError, match="no NSP head"):
        model.forward(np.zeros((1, 4), np.int64), None, None, np.array([0]))
    with pytest.raises(ValueError, match="mlm_targets"):
        model.forward(np.full((1, 4), 5), None, np.full((1, 4), 11))
    with pytest.raises(RuntimeError, match="without a forward"):
        BertModel(small(), seed=0).backward()


def test_config_errors():
    with pytest.raises(ValueError, match="masking"):
        BertConfig(masking="sometimes")
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig(d_model=10, n_head=4)
    with pytest.raises(TypeError, match="share_layers"):
        BertConfig(share_layers="yes")
    with pytest.raises(ValueError, match="unknown"):
        build_model("bert", {"vocab_size": 20, "colour": "blue"})
    with pytest.raises(ValueError, match="n_classes"):
        BertClassifierConfig(n_classes=1)


def test_classifier_takes_the_pretrained_encoder():
    pretrained = BertModel(small(), seed=3)
    clf = classifier_from_pretrained(pretrained, pretrained.config, 3, seed=9)
    for name, value in encoder_state(pretrained).items():
        assert np.array_equal(clf.state_dict()[name], value)
    scratch = classifier_from_pretrained(None, pretrained.config, 3, seed=9)
    assert not np.array_equal(scratch.state_dict()["encoder.embeddings.word.weight"],
                              pretrained.state_dict()["encoder.embeddings.word.weight"])
    logits, loss = clf.forward(np.array([[2, 5, 3, 6, 3]]), np.array([[0, 0, 0, 1, 1]]), np.array([2]))
    assert logits.shape == (1, 3) and float(loss) > 0


def test_pooler_reads_only_cls():
    pooler = Pooler(4, rng=backend.host_rng(0))
    h = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    pooler.forward(h)
    dh = pooler.backward(np.ones((2, 4), np.float32))
    assert np.all(dh[:, 1:] == 0) and np.any(dh[:, 0] != 0)


def test_classifier_registered():
    model = build_model("bert-classifier", {"vocab_size": 20, "max_len": 8, "n_layer": 1, "n_head": 2,
                                            "d_model": 8, "n_classes": 4})
    assert isinstance(model, BertClassifier) and model.describe()["kind"] == "bert-classifier"
