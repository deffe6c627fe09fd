"""Chapter 42 tables, read from the code and the committed GPT-2 fixture:

1. hf_gpt2_layout: every tensor of one GPT-2 block (and the embeddings, final norm and head) as
   Hugging Face stores it beside the tensor minitransformer loads it into, with both shapes; and
   hf_gpt2_parity: our logits (and onnxruntime's) against the ones transformers computed.
   The same for BERT from its fixture: hf_bert_layout (transposes, the q/k/v join, the vocabulary
   rows moved) and hf_bert_parity (MLM and NSP logits).
2. gpt2_tokenizer_steps: a sentence through GPT-2's tokenizer: chunks, bytes as symbols, BPE pieces.
3. onnx_block_nodes: the ONNX nodes of one block of an exported GPT, with their output shapes
   (onnx's shape inference), and onnx_op_counts: the operators of the float and int8 graphs.

Needs onnx (the test extra installs it). Writes docs/figures/tables/{hf_gpt2_layout,
hf_gpt2_parity,hf_bert_layout,hf_bert_parity,gpt2_tokenizer_steps,onnx_block_nodes,onnx_op_counts}.md.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from _common import ROOT, write_table

from minitransformer.compress.quantize import quantize_model
from minitransformer.data.bpe import bpe_merge, bytes_to_unicode
from minitransformer.data.gpt2_pretokenize import gpt2_pretokenize
from minitransformer.data.wordpiece import read_vocab_file, special_first_order
from minitransformer.interop.hf_bert import bert_names, qkv_names
from minitransformer.interop.hf_folder import read_hf_folder
from minitransformer.interop.hf_gpt2 import PREFIX, gpt2_names
from minitransformer.interop.hf_import import import_hf
from minitransformer.interop.onnx_graph import OPSET, gpt_to_onnx
from minitransformer.models.gpt import GPT, GPTConfig

FIXTURE = ROOT / "tests" / "fixtures" / "hf_gpt2_tiny"
BERT_FIXTURE = ROOT / "tests" / "fixtures" / "hf_bert_tiny"
MAPPINGS = {"copy": "copied", "T": "transposed", "rows": "rows moved to our vocabulary order"}


def shape(a) -> str:
    return "(" + ", ".join(str(d) for d in a.shape) + ")"


def layout_table(model, folder) -> None:
    ours = model.state_dict()
    theirs = {k[len(PREFIX):]: v for k, v in folder.tensors.items()}
    rows = []
    for mine, hf in gpt2_names(model.config.n_layer):
        if mine.startswith("blocks.") and not mine.startswith("blocks.0."):
            continue                                     # every block is laid out like block 0
        rows.append([f"`{PREFIX}{hf}`", shape(theirs[hf]), f"`{mine}`", shape(ours[mine]), "copied"])
    rows.append(["(`lm_head.weight`, tied to `wte.weight`)", shape(theirs["wte.weight"]),
                 "(the head is `wte.weight.T`)", shape(ours["wte.weight"]), "not stored"])
    c = model.config
    write_table("hf_gpt2_layout", ["Hugging Face GPT-2", "shape", "minitransformer GPT", "shape", "mapping"], rows,
                note=f"The tiny GPT-2 of `tests/fixtures/hf_gpt2_tiny` (C={c.d_model}, H={c.n_head}, "
                     f"V={c.vocab_size}, T_max={c.block_size}); blocks 1..L-1 repeat block 0's names. "
                     "Made by `docs/figures/scripts/ecosystem_tables.py` from `interop/hf_gpt2.py`'s name list.")


def tokenizer_table(tok) -> None:
    text = "It's 2019:  GPT-2 naïve"
    table, rows = bytes_to_unicode(), []
    for chunk in gpt2_pretokenize(text):
        symbols = [table[b] for b in chunk.encode("utf-8")]
        pieces = bpe_merge(symbols, tok.ranks)
        rows.append([f"`{chunk!r}`", " ".join(f"`{s}`" for s in symbols), " ".join(f"`{p}`" for p in pieces),
                     ", ".join(str(tok.stoi[p]) for p in pieces)])
    write_table("gpt2_tokenizer_steps", ["chunk (pre-tokenised)", "bytes as symbols", "BPE pieces", "ids"], rows,
                note=f"The text {text!r} through the fixture's {tok.vocab_size}-token byte-level BPE "
                     f"({len(tok.merges)} merges). "
                     "Made by `docs/figures/scripts/ecosystem_tables.py`.")


def onnx_tables() -> None:
    import onnx
    model = GPT(GPTConfig(vocab_size=96, block_size=64, n_layer=2, n_head=4, d_model=128), seed=0).eval()
    proto = onnx.shape_inference.infer_shapes(gpt_to_onnx(model))                 # for the shapes only
    shapes = {v.name: v.type.tensor_type.shape for v in list(proto.graph.value_info) + list(proto.graph.output)}

    def dims(name):
        if name not in shapes:
            return "(initializer)"
        # the inference names the length after a Slice "unk__N"; in this graph every such length is T
        return "(" + ", ".join(("T" if d.dim_param.startswith("unk__") else d.dim_param) or str(d.dim_value)
                               for d in shapes[name].dim) + ")"
    rows = []
    for node in proto.graph.node:
        if node.output[0].startswith("blocks.0."):
            inputs = ", ".join(f"`{i}`" for i in node.input)
            outputs = ", ".join(f"`{o}`" for o in node.output)
            rows.append([len(rows) + 1, node.op_type, inputs, outputs, dims(node.output[0])])
    write_table("onnx_block_nodes", ["#", "operator", "inputs", "output", "output shape"], rows,
                note=f"Block 0 of a GPT (C=128, H=4, pre-LN, exact GELU) exported by `interop/onnx_graph.py`, "
                     f"opset {OPSET}; shapes from `onnx.shape_inference` (B and T stay symbolic; the inference cannot "
                     "tell that the lengths it derives from the input's shape all equal T, the table writes T). Inputs that no "
                     "node writes (`.weight`, `.bias`, `.scale`, `shape5`, ...) are initializers: tensors stored in "
                     "the file. Made by `docs/figures/scripts/ecosystem_tables.py`.")
    float_proto = gpt_to_onnx(model)
    quantize_model(model, "int8")
    int8_proto = gpt_to_onnx(model)
    counts = [Counter(n.op_type for n in g.graph.node)
              for g in (float_proto, int8_proto, optimised(float_proto), optimised(int8_proto))]
    ops = sorted(set().union(*counts), key=lambda o: (-counts[0].get(o, 0), o))
    rows = [[f"`{op}`", *(c.get(op, 0) for c in counts)] for op in ops]
    rows.append(["**all**", *(sum(c.values()) for c in counts)])
    write_table("onnx_op_counts", ["operator", "float32 graph", "int8 QDQ graph", "float32, as onnxruntime runs it",
                                   "int8, as onnxruntime runs it"], rows,
                note="The whole 2-block GPT of the table above: the graph as exported, and after onnxruntime's "
                     "graph optimisations (the optimised model it writes with `optimized_model_filepath`). "
                     "Made by `docs/figures/scripts/ecosystem_tables.py`.")


def optimised(proto):
    """The graph onnxruntime actually runs, after its fusions (CPU, default optimisation level)."""
    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.log_severity_level = 3                    # no warning about hardware-specific fusions
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def parity_table(model) -> None:
    """How far our logits are from the ones transformers computed for the fixture, and how far they
    would be with the LayerNorm epsilon ignored."""
    import numpy as np
    from minitransformer.interop.onnx_run import onnx_logits, onnx_session
    from minitransformer.nn.layernorm import LayerNorm

    expected = np.load(FIXTURE / "expected.npz")
    ids, reference = expected["input_ids"], expected["logits"]

    def diff(logits):
        return f"{float(np.abs(logits - reference).max()):.1e}"
    model.eval()
    with model.no_grad():
        ours = model.forward(ids)[0]
    via_onnx = onnx_logits(onnx_session(gpt_to_onnx(model)), ids)
    for layer in model.modules():
        if isinstance(layer, LayerNorm):
            layer.eps = 1e-5                             # GPT-2's usual value, not this folder's 1e-4
    with model.no_grad():
        wrong_eps = model.forward(ids)[0]
    rows = [["minitransformer, imported", diff(ours)], ["onnxruntime, the import exported to ONNX", diff(via_onnx)],
            ["minitransformer with the LayerNorm epsilon left at 1e-5 (the folder says 1e-4)", diff(wrong_eps)]]
    write_table("hf_gpt2_parity", ["logits of the fixture's input", "max abs difference from transformers"], rows,
                note=f"The fixture's input is {ids.shape[0]} sequences of {ids.shape[1]} tokens; its logits reach "
                     f"{float(np.abs(reference).max()):.1f} in absolute value. Made by "
                     "`docs/figures/scripts/ecosystem_tables.py`.")


def bert_layout_table(model, folder) -> None:
    ours, theirs = model.state_dict(), folder.tensors
    rows = []
    for mine, hf, how in bert_names(model.config.n_layer, model.config.nsp):
        if ".blocks." in mine and ".blocks.0." not in mine:
            continue                                     # every block is laid out like block 0
        if mine == "encoder.blocks.0.attn.proj.weight":  # the joined projection first, as in the block
            for kind in ("weight", "bias"):
                names = [n for n in qkv_names(0) if n.endswith(kind)]
                rows.append([" + ".join(f"`{n}`" for n in names), " + ".join(shape(theirs[n]) for n in names),
                             f"`encoder.blocks.0.attn.qkv.{kind}`", shape(ours[f"encoder.blocks.0.attn.qkv.{kind}"]),
                             "each transposed, then joined side by side" if kind == "weight" else "joined"])
        rows.append([f"`{hf}`", shape(theirs[hf]), f"`{mine}`", shape(ours[mine]), MAPPINGS[how]])
    rows.append(["(`cls.predictions.decoder.weight`, tied to the word embeddings)",
                 shape(theirs["bert.embeddings.word_embeddings.weight"]),
                 "(the decoder is `encoder.embeddings.word.weight.T`)",
                 shape(ours["encoder.embeddings.word.weight"]), "not stored"])
    c = model.config
    write_table("hf_bert_layout", ["Hugging Face BERT", "shape", "minitransformer BERT", "shape", "mapping"], rows,
                note=f"The tiny BertForPreTraining of `tests/fixtures/hf_bert_tiny` (C={c.d_model}, H={c.n_head}, "
                     f"F={c.d_ff}, V={c.vocab_size}, T_max={c.max_len}); layers 1..L-1 repeat layer 0's names. "
                     "Made by `docs/figures/scripts/ecosystem_tables.py` from `interop/hf_bert.py`'s name list.")


def bert_parity_table() -> None:
    """Our MLM and NSP logits against transformers' for the BERT fixture, and what two mistakes cost:
    the LayerNorm epsilon left at BERT's usual 1e-12, and the word table left in vocab.txt's order
    while the tokenizer has moved the special tokens to ids 0..4."""
    import numpy as np
    from minitransformer.nn.layernorm import LayerNorm

    e = np.load(BERT_FIXTURE / "expected.npz")
    order = np.array(special_first_order(read_vocab_file(BERT_FIXTURE / "vocab.txt")))
    ids = np.argsort(order)[e["input_ids"]]              # BERT's ids -> ours
    ids[e["attention_mask"] == 0] = 0                    # [PAD], masked out as attention_mask does

    def diffs(model, ids, mlm_order):
        mlm, nsp = model.predict(ids, e["token_type_ids"])
        return [f"{float(np.abs(mlm - e['mlm_logits'][..., mlm_order]).max()):.1e}",
                f"{float(np.abs(nsp - e['nsp_logits']).max()):.1e}"]
    model, _ = import_hf(BERT_FIXTURE)
    rows = [["minitransformer, imported"] + diffs(model, ids, order)]
    for layer in model.modules():
        if isinstance(layer, LayerNorm):
            layer.eps = 1e-12                            # BERT's usual value, not this folder's 1e-3
    rows.append(["... with the LayerNorm epsilon left at 1e-12 (the folder says 1e-3)"] + diffs(model, ids, order))
    model, _ = import_hf(BERT_FIXTURE)
    state = model.state_dict()
    inverse = np.argsort(order)                          # undo the row move: the table in vocab.txt's order
    state["encoder.embeddings.word.weight"] = state["encoder.embeddings.word.weight"][inverse]
    state["mlm.bias"] = state["mlm.bias"][inverse]
    model.load_state_dict(state)
    rows.append(["... with the vocabulary rows left in vocab.txt's order (our tokenizer's ids, BERT's rows)"]
                + diffs(model, ids, order))
    header = ["logits of the fixture's batch", "MLM: max abs difference", "NSP: max abs difference"]
    write_table("hf_bert_parity", header,
                rows, note=f"The fixture's batch is {ids.shape[0]} padded sentence pairs of {ids.shape[1]} tokens; "
                           f"its MLM logits reach {float(np.abs(e['mlm_logits']).max()):.1f} in absolute value. "
                           "In the last row our tokenizer's `[CLS]` (id 2) reads BERT's row 2, `[UNK]`. "
                           "Made by `docs/figures/scripts/ecosystem_tables.py`.")


def main() -> None:
    bert_layout_table(import_hf(BERT_FIXTURE)[0], read_hf_folder(BERT_FIXTURE))
    bert_parity_table()
    model, tok = import_hf(FIXTURE)
    layout_table(model, read_hf_folder(FIXTURE))
    parity_table(import_hf(FIXTURE)[0])
    tokenizer_table(tok)
    onnx_tables()


if __name__ == "__main__":
    main()
