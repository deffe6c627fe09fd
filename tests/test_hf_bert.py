"""Hugging Face BERT in and out (interop/hf_bert.py). The fixture tests need neither torch nor
transformers: tests/fixtures/hf_bert_tiny holds a tiny random BertForPreTraining saved by
transformers, its vocab.txt (specials not at our ids 0..4, so the row reordering is exercised),
transformers' MLM and NSP logits on a padded batch of sentence pairs, and BertTokenizer's ids of a
few texts (tests/fixtures/make_hf_fixtures.py regenerates it). The live tests load the same folder,
and our exports, with transformers when it is installed."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minitransformer import backend
from minitransformer.checkpoint import load_model
from minitransformer.cli import main
from minitransformer.data.wordpiece import WordPieceTokenizer, read_vocab_file, special_first_order
from minitransformer.interop.hf_export import export_hf
from minitransformer.interop.hf_import import import_hf
from minitransformer.models.bert import BertConfig, BertModel

FOLDER = Path(__file__).parent / "fixtures" / "hf_bert_tiny"
EXPECTED = np.load(FOLDER / "expected.npz")
ORDER = np.array(special_first_order(read_vocab_file(FOLDER / "vocab.txt")))   # our id -> BERT's id
TO_OURS = np.argsort(ORDER)                                                     # BERT's id -> ours
CASES = json.loads((FOLDER / "tokenizer_cases.json").read_text(encoding="utf-8"))


def our_inputs():
    """The fixture batch in our ids; padded places are [PAD] (id 0), which our BERT masks out as
    transformers' attention_mask does."""
    ids = TO_OURS[EXPECTED["input_ids"]]
    ids[EXPECTED["attention_mask"] == 0] = 0
    return ids, EXPECTED["token_type_ids"]


def predict(model, ids, segments):
    mlm, nsp = model.predict(backend.to_device(ids, model.device), backend.to_device(segments, model.device))
    return backend.to_numpy(mlm), (None if nsp is None else backend.to_numpy(nsp))


def test_fixture_is_small_and_reorders_the_specials():
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) < 500_000
    assert ORDER[:5].tolist() == [0, 2, 3, 4, 5]            # [PAD] [UNK] [CLS] [SEP] [MASK] in vocab.txt
    assert (EXPECTED["attention_mask"] == 0).any()          # the batch has padding


def test_import_matches_transformers_logits(device):
    model, tok = import_hf(FOLDER, device)
    c = model.config
    assert (c.n_layer, c.d_model, c.n_head, c.d_ff, c.norm_eps, c.nsp) == (2, 32, 4, 64, 1e-3, True)
    assert tok.vocab_size == c.vocab_size == 93 and tok.lowercase and not tok.accents
    mlm, nsp = predict(model, *our_inputs())
    np.testing.assert_allclose(mlm, EXPECTED["mlm_logits"][..., ORDER], rtol=0, atol=1e-5)
    np.testing.assert_allclose(nsp, EXPECTED["nsp_logits"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["text"][:24] or "empty")
def test_tokenizer_matches_bert_tokenizer(case):
    tok = WordPieceTokenizer.from_vocab_file(FOLDER / "vocab.txt", lowercase=True)
    assert ORDER[tok.encode(case["text"])].tolist() == case["ids"]


def test_basic_tokenisation_steps():
    tok = WordPieceTokenizer.from_vocab_file(FOLDER / "vocab.txt", lowercase=True)
    assert tok.decode(tok.encode("Café 東京, READING")) == "cafe 東 京 , reading"
    assert [tok.itos[i] for i in tok.encode("reading")] == ["read", "##ing"]     # longest match first
    assert tok.decode(tok.encode("x" * 101)) == "[UNK]"                 # over BertTokenizer's 100 chars
    cased = WordPieceTokenizer.from_vocab_file(FOLDER / "vocab.txt", lowercase=False)
    assert not cased.lowercase and cased.accents                        # cased BERT keeps accents
    again = WordPieceTokenizer.from_dict(tok.to_dict())
    assert again.to_dict() == tok.to_dict() and again.encode("Naïve\x07 data").tolist() == tok.encode(
        "Naïve\x07 data").tolist()


def test_import_hf_writes_a_checkpoint_that_fill_mask_uses(tmp_path, capsys):
    from minitransformer.bert_cli import mask_predictions
    run = tmp_path / "bert"
    assert main(["import-hf", str(FOLDER), "--out", str(run)]) == 0
    assert "fill-mask" in capsys.readouterr().out
    model, meta = load_model(run)
    assert meta["source"]["model_type"] == "bert" and meta["tokenizer"]["type"] == "wordpiece"
    mlm, _ = predict(model, *our_inputs())
    np.testing.assert_allclose(mlm, EXPECTED["mlm_logits"][..., ORDER], rtol=0, atol=1e-5)
    text = "Open the [MASK] and read its data!"
    assert main(["fill-mask", "--checkpoint", str(run), "--text", text, "--top-k", "3"]) == 0
    printed = capsys.readouterr().out
    tok = WordPieceTokenizer.from_dict(meta["tokenizer"])
    ids = np.concatenate([[2], tok.encode(text), [3]])
    (position, best), = mask_predictions(model, ids, 3)
    assert ids[position] == 4 and len(best) == 3
    lines = [f"  {tok.itos[t]:<16s} {p:.4f}" for t, p in best]
    assert f"[MASK] at token {position}:\n" + "\n".join(lines) in printed
    assert main(["export", "--checkpoint", str(run), "--format", "hf"]) == 0     # -> run/hf
    again, tok2 = import_hf(run / "hf")
    assert again.describe() == model.describe() and tok2.to_dict() == tok.to_dict()


def test_masked_lm_folder_without_pooler_and_nsp(tmp_path):
    def drop_heads(t):
        for name in [k for k in t if k.startswith(("bert.pooler.", "cls.seq_relationship."))]:
            t.pop(name)
    folder = _copy(tmp_path, lambda c: c.update(architectures=["BertForMaskedLM"]), drop_heads)
    model, _ = import_hf(folder)
    assert model.config.nsp is False and model.nsp is None
    mlm, nsp = predict(model, *our_inputs())
    assert nsp is None
    np.testing.assert_allclose(mlm, EXPECTED["mlm_logits"][..., ORDER], rtol=0, atol=1e-5)


def test_a_bare_bert_model_file_without_prefix_is_missing_its_mlm_head(tmp_path):
    def bare(t):
        for name in list(t):
            value = t.pop(name)
            if name.startswith("bert."):
                t[name[len("bert."):]] = value
    with pytest.raises(ValueError, match=r"missing, e.g. \['cls.predictions.transform.dense.weight'"):
        import_hf(_copy(tmp_path, None, bare))


def _copy(tmp_path, edit_config=None, edit_tensors=None, edit_vocab=None):
    folder = tmp_path / "folder"
    shutil.copytree(FOLDER, folder)
    if edit_config:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    if edit_tensors:
        tensors = load_file(str(folder / "model.safetensors"))
        edit_tensors(tensors)
        save_file(tensors, str(folder / "model.safetensors"))
    if edit_vocab:
        tokens = edit_vocab(read_vocab_file(folder / "vocab.txt"))
        (folder / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return folder


LAYER0 = "bert.encoder.layer.0."


@pytest.mark.parametrize("edit_config, edit_tensors, edit_vocab, message", [
    (lambda c: c.update(hidden_act="gelu_new"), None, None,
     r"hidden_act='gelu_new' is not supported \(minitransformer's BERT needs hidden_act='gelu'\)"),
    (lambda c: c.update(position_embedding_type="relative_key"), None, None,
     "position_embedding_type='relative_key' is not supported .* needs position_embedding_type='absolute'"),
    (lambda c: c.update(is_decoder=True), None, None, "is_decoder=True is not supported"),
    (lambda c: c.update(architectures=["BertForSequenceClassification"]), None, None,
     r"architectures=\['BertForSequenceClassification'\] cannot be imported; expected one of"),
    (lambda c: c.update(num_hidden_layers=3), None, None, r"missing, e.g. \['bert.encoder.layer.2."),
    (lambda c: c.pop("hidden_size"), None, None, r"missing \['hidden_size'\]"),
    (lambda c: c.update(vocab_size=90), None, None, "vocab.txt has 93 tokens but vocab_size is only 90"),
    (None, lambda t: t.pop(LAYER0 + "attention.self.key.bias"), None, r"missing, e.g. \['" + LAYER0 + "attention"),
    (None, lambda t: t.update({LAYER0 + "attention.extra": np.zeros(3, np.float32)}), None, "unexpected tensor"),
    (None, lambda t: t.update({"cls.predictions.decoder.weight": np.ones((93, 32), np.float32)}), None,
     "untied decoder"),
    (None, lambda t: t.update({"cls.predictions.decoder.bias": np.ones(93, np.float32)}), None,
     "decoder.bias differs"),
    (None, lambda t: t.update({LAYER0 + "intermediate.dense.weight": np.zeros((32, 64), np.float32)}), None,
     "shape"),
    (None, None, lambda v: [t for t in v if t != "[MASK]"] + ["[unused1]"], r"\['\[MASK\]'\] missing"),
])
def test_bad_folders_are_refused(tmp_path, edit_config, edit_tensors, edit_vocab, message):
    with pytest.raises(ValueError, match=message):
        import_hf(_copy(tmp_path, edit_config, edit_tensors, edit_vocab))


def test_missing_vocab_is_named(tmp_path):
    folder = _copy(tmp_path)
    (folder / "vocab.txt").unlink()
    with pytest.raises(ValueError, match="has no vocab.txt: a BERT folder needs its WordPiece vocabulary"):
        import_hf(folder)


def test_norm_eps_reaches_every_layernorm_and_is_checked():
    from minitransformer.nn.layernorm import LayerNorm
    model = BertModel(BertConfig(vocab_size=11, max_len=8, n_layer=2, n_head=2, d_model=8, norm_eps=1e-3))
    eps = [m.eps for m in model.modules() if isinstance(m, LayerNorm)]
    assert eps == [1e-3] * 6                                # embeddings, 2 per block, the MLM head
    for bad in (0, -1e-5, float("nan"), float("inf"), True, "1e-5"):
        with pytest.raises(ValueError, match="norm_eps must be a finite number > 0"):
            BertConfig(norm_eps=bad)


def test_export_then_import_gives_the_same_model(tmp_path):
    model, tok = import_hf(FOLDER)
    written = export_hf(model, tok, tmp_path / "out")
    assert {p.name for p in written} == {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"}
    again, tok2 = import_hf(tmp_path / "out")
    assert again.describe() == model.describe() and tok2.to_dict() == tok.to_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value)


def test_models_without_a_bert_layout_are_not_exported(tmp_path):
    for field in ({"d_embed": 4}, {"share_layers": True}, {"activation": "relu"}):
        model = BertModel(BertConfig(vocab_size=11, max_len=8, n_layer=1, n_head=2, d_model=8, **field))
        with pytest.raises(ValueError, match=f"{next(iter(field))}=.* has no Hugging Face BertModel equivalent"):
            export_hf(model, None, tmp_path / "x")


def test_fixture_parity_needs_neither_torch_nor_transformers():
    import subprocess
    import sys
    code = ("import sys; sys.modules.update(torch=None, transformers=None, tokenizers=None)\n"
            "import numpy as np\n"
            "from minitransformer.interop.hf_import import import_hf\n"
            f"model, tok = import_hf({str(FOLDER)!r})\n"
            f"e = np.load({str(FOLDER / 'expected.npz')!r})\n"
            f"order = np.array({ORDER.tolist()!r})\n"
            "ids = np.where(e['attention_mask'] == 0, 0, np.argsort(order)[e['input_ids']])\n"
            "mlm, nsp = model.predict(ids, e['token_type_ids'])\n"
            "print(float(np.abs(mlm - e['mlm_logits'][..., order]).max()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert float(out.stdout) < 1e-5


# -- live against transformers ------------------------------------------------------------------
def test_live_transformers_reads_the_fixture_like_we_do():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertForPreTraining.from_pretrained(str(FOLDER)).eval()
    rng = np.random.default_rng(1)
    ids = rng.integers(6, 93, (3, 17))                      # BERT's ids, no padding
    segments = (np.arange(17) >= 9).astype(np.int64)[None].repeat(3, 0)
    with torch.no_grad():
        out = ref(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments))
    model, _ = import_hf(FOLDER)
    mlm, nsp = predict(model, TO_OURS[ids], segments)
    np.testing.assert_allclose(mlm, out.prediction_logits.numpy()[..., ORDER], rtol=0, atol=1e-5)
    np.testing.assert_allclose(nsp, out.seq_relationship_logits.numpy(), rtol=0, atol=1e-5)
    their_tok = transformers.BertTokenizer(str(FOLDER / "vocab.txt"), do_lower_case=True)
    _, tok = import_hf(FOLDER)
    for text in ["Return the Café's VALUE: unreadable 東京 files, [MASK] naïve\tdata!",
                 "soft\u00adhyphen, zero\u200dwidth, private\ue000use, Ｆｕｌｌ width ＡＢＣ, ÅNGSTRÖM",
                 "\u3000ideographic space\u2003em\x1cfile sep\r\n  [SEP] [CLS][PAD] [UNK]"]:
        assert ORDER[tok.encode(text)].tolist() == their_tok(text, add_special_tokens=False)["input_ids"], text


def test_live_fill_mask_agrees_with_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minitransformer.bert_cli import mask_predictions
    text = "Open the [MASK] and read its data!"
    their_tok = transformers.BertTokenizer(str(FOLDER / "vocab.txt"), do_lower_case=True)
    theirs_ids = their_tok(text)["input_ids"]                   # [CLS] ... [SEP]
    ref = transformers.BertForMaskedLM.from_pretrained(str(FOLDER)).eval()
    with torch.no_grad():
        probs = torch.softmax(ref(input_ids=torch.tensor([theirs_ids])).logits[0], -1).numpy()
    model, _ = import_hf(FOLDER)
    (position, best), = mask_predictions(model, TO_OURS[theirs_ids], 5)
    top = np.argsort(-probs[position])[:5]
    assert [ORDER[t] for t, _ in best] == top.tolist()
    np.testing.assert_allclose([p for _, p in best], probs[position, top], rtol=0, atol=1e-6)


@pytest.mark.parametrize("nsp", [True, False])
def test_live_our_export_loads_in_transformers(tmp_path, nsp):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, tok = import_hf(FOLDER)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, max_len=16, n_layer=2, n_head=4, d_model=32, d_ff=48,
                                 nsp=nsp, norm_eps=1e-6), seed=7)
    rng = np.random.default_rng(2)
    for p in model.parameters():                            # not the initial zeros and ones
        p.data = (p.data + rng.standard_normal(p.shape) * 0.2).astype(np.float32)
    export_hf(model, tok, tmp_path / "hf")
    cls = transformers.BertForPreTraining if nsp else transformers.BertForMaskedLM
    ref = cls.from_pretrained(str(tmp_path / "hf")).eval()
    ids = rng.integers(5, tok.vocab_size, (2, 16))
    ids[1, -3:] = 0                                         # padding: [PAD] is id 0 in both
    segments = (np.arange(16) >= 8).astype(np.int64)[None].repeat(2, 0)
    with torch.no_grad():
        out = ref(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                  attention_mask=torch.from_numpy((ids != 0).astype(np.int64)))
    mlm, ours_nsp = predict(model, ids, segments)
    theirs = out.prediction_logits if nsp else out.logits
    np.testing.assert_allclose(mlm, theirs.numpy(), rtol=0, atol=1e-5)
    if nsp:
        np.testing.assert_allclose(ours_nsp, out.seq_relationship_logits.numpy(), rtol=0, atol=1e-5)
    their_tok = transformers.BertTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "Open the Café [MASK], read its data."
    assert their_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text).tolist()


def test_a_word_table_longer_than_vocab_txt_keeps_its_extra_rows_last(tmp_path):
    model, tok = import_hf(_copy(tmp_path, edit_vocab=lambda v: v[:-1]))     # 92 tokens, 93 rows
    assert tok.vocab_size == 92 and model.config.vocab_size == 93
    mlm, _ = predict(model, *our_inputs())
    np.testing.assert_allclose(mlm, EXPECTED["mlm_logits"][..., ORDER], rtol=0, atol=1e-5)
