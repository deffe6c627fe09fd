"""Chapter 12: what a block is made of, counted and checked from the real modules.

1. Parameters of an EncoderBlock and a DecoderBlock of the base Transformer (C=512, H=8, F=2048),
   by sub-module, and the total of the base model (6 encoder + 6 decoder blocks, a shared 37,000-token
   embedding), to compare with the paper's 65 M.
2. The float64 gradient checks of the blocks and stacks (the cases registered in blocks.py and
   models/gpt.py), re-run here: the backward replayed in reverse agrees with central differences.

Writes docs/figures/tables/blocks_params.md and docs/figures/tables/blocks_gradcheck.md. A few seconds.
"""
from __future__ import annotations

from collections import OrderedDict

from _common import write_table
from minitransformer import gradcheck
from minitransformer.blocks import DecoderBlock, EncoderBlock

C, H, F, LAYERS, VOCAB = 512, 8, 2048, 6, 37000
GROUPS = OrderedDict([
    ("ln1", "LayerNorm before/after self-attention"),
    ("attn", "self-attention (W_QKV, W_O and biases)"),
    ("ln2", "LayerNorm (encoder: before/after FFN; decoder: cross-attention)"),
    ("cross_attn", "cross-attention (W_Q, W_KV, W_O and biases)"),
    ("ln3", "LayerNorm before/after FFN"),
    ("ffn", "feed-forward (W_1, b_1, W_2, b_2)"),
])



def _align(path, aligns: str) -> None:
    """Rewrite the separator row of a Markdown table: 'l' left-aligns a column, 'r' right-aligns it."""
    lines = path.read_text().split("\n")
    lines[1] = "|" + "|".join(" :--- " if a == "l" else " ---: " for a in aligns) + "|"
    path.write_text("\n".join(lines))

def count(block) -> dict:
    totals = OrderedDict((g, 0) for g in GROUPS)
    for name, p in block.named_parameters():
        totals[name.split(".")[0]] += p.data.size
    return totals


def params_table() -> None:
    enc, dec = count(EncoderBlock(C, H, F)), count(DecoderBlock(C, H, F))
    rows = []
    for group, label in GROUPS.items():
        rows.append([f"`{group}`: {label}", f"{enc[group]:,}" if enc[group] else "–",
                     f"{dec[group]:,}" if dec[group] else "–"])
    e, d = sum(enc.values()), sum(dec.values())
    rows.append(["**one block**", f"**{e:,}**", f"**{d:,}**"])
    total = LAYERS * e + LAYERS * d + VOCAB * C
    _align(write_table("blocks_params", ["sub-module", "EncoderBlock", "DecoderBlock"], rows,
                note=(f"*Counted from the real modules with C={C}, H={H}, F={F} (the base Transformer). "
                      f"Base model: {LAYERS} × {e:,} + {LAYERS} × {d:,} + a shared {VOCAB:,} × {C} "
                      f"embedding = {total / 1e6:.1f} M parameters (the paper reports 65 M for its base model). Written by "
                      f"docs/figures/scripts/blocks_anatomy.py.*")), "lrr")
    print(f"encoder block {e:,}, decoder block {d:,}, base total {total:,}")


def gradcheck_table() -> None:
    cases = gradcheck.registered()
    rows = []
    for name in ("blocks.FeedForward", "blocks.EncoderBlock", "blocks.DecoderBlock", "blocks.Encoder",
                 "blocks.Decoder", "models.GPT"):
        if name not in cases:
            continue
        results = cases[name]("cpu")
        for r in results if isinstance(results, list) else [results]:
            worst = max(r.errors, key=r.errors.get)
            rows.append([f"`{r.name}`", len(r.errors), f"{r.max_error:.1e} (`{worst}`)",
                         "pass" if r.passed else "FAIL"])
    _align(write_table("blocks_gradcheck", ["case", "tensors checked", "max relative error", "result"], rows,
                note=("*Central differences of sum(f(x) · dout) in float64 against the hand-written "
                      "backward, for the inputs and every parameter (a random subset of 40 entries per "
                      "tensor for the stacks, 24 for the GPT, whose check is on the loss); tolerance 1e-6. Written by "
                      "docs/figures/scripts/blocks_anatomy.py.*")), "lrll")


if __name__ == "__main__":
    params_table()
    gradcheck_table()
