"""Chapter 16: the encoder-decoder Transformer learns to reverse digit strings.

Trains post-LN and pre-LN models (the real Seq2SeqTransformer) and tabulates exact-match accuracy of
cached greedy decoding after each stage; plots the training loss and one head's cross-attention.
"""
from _common import pyplot, save, write_table

import numpy as np

from minitransformer.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from minitransformer.optim import AdamW, clip_grad_norm

PAD, BOS, L = 0, 1, 6


def batch(rng, B):
    src = rng.integers(2, 12, (B, L))
    tgt = src[:, ::-1]
    return src, np.concatenate([np.full((B, 1), BOS), tgt[:, :-1]], axis=1), tgt


def accuracy(model, rng):
    src, _, tgt = batch(rng, 256)
    return float((model.greedy_decode(src, BOS, L) == tgt).all(axis=1).mean())


def main():
    rows, curves, models = [], {}, {}
    for norm in ("post", "pre"):
        cfg = Seq2SeqConfig(src_vocab_size=12, tgt_vocab_size=12, max_src_len=L, max_tgt_len=L,
                            n_layer=2, n_dec_layer=2, n_head=2, d_model=32, norm=norm)
        model = Seq2SeqTransformer(cfg, seed=0)
        opt = AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
        rng, losses, accs = np.random.default_rng(0), [], []
        for step in range(1, 401):
            src, tgt_in, tgt = batch(rng, 32)
            _, loss = model.forward(src, tgt_in, tgt)
            model.backward()
            clip_grad_norm(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(float(loss))
            if step % 100 == 0:
                accs.append(accuracy(model, np.random.default_rng(1)))
        rows.append([f"{norm}-LN"] + [f"{a:.1%}" for a in accs])
        curves[norm], models[norm] = losses, model
    write_table("seq2seq_reverse", ["model", "100 steps", "200 steps", "300 steps", "400 steps"], rows,
                note="Exact-match accuracy of cached greedy decoding on 256 new sequences of 6 digits "
                     "(2+2 layers, width 32, batch 32, AdamW 2e-3, gradient clipping at 1). Produced by "
                     "`docs/figures/scripts/seq2seq_reverse.py`.")

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for norm, losses in curves.items():
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
        axes[0].plot(smooth, label=f"{norm}-LN")
    axes[0].set(xlabel="step", ylabel="cross-entropy (10-step mean)", yscale="log", title="training loss")
    axes[0].legend()
    model = models["pre"]
    src, tgt_in, _ = batch(np.random.default_rng(2), 1)
    model.forward(src, tgt_in)
    weights = model.decoder.blocks[-1].cross_attn.kernel.last_weights[0, 0]   # (T, S), head 0
    axes[1].imshow(weights, cmap="viridis")
    axes[1].set(xlabel="source position", ylabel="target position",
                title="last decoder block, cross-attention head 0")
    axes[1].grid(False)
    save(fig, "seq2seq_reverse")


if __name__ == "__main__":
    main()
