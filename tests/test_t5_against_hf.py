"""Cross-check T5 against an independent implementation: Hugging Face's T5 in PyTorch with the same
weights must give the same logits and loss (v1.0: ReLU, tied head; v1.1: gated GELU, untied head),
and PyTorch autograd the same gradients. Skipped without torch and transformers."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.models.model import IGNORE_INDEX
from minitransformer.models.t5 import T5Config, T5Model

torch = pytest.importorskip("torch")
hf_t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
from transformers import T5Config as HFConfig  # noqa: E402


def hf_model(model: T5Model):
    c = model.config
    cfg = HFConfig(vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_model // c.n_head,
                   d_ff=c.d_ff or 4 * c.d_model, num_layers=c.n_layer, num_decoder_layers=c.n_dec_layer,
                   num_heads=c.n_head, relative_attention_num_buckets=c.num_buckets,
                   relative_attention_max_distance=c.max_distance, dropout_rate=0.0, layer_norm_epsilon=1e-6,
                   feed_forward_proj="relu" if c.feed_forward == "relu" else "gated-gelu",
                   tie_word_embeddings=c.tie_embeddings, pad_token_id=c.pad_id, eos_token_id=c.eos_id,
                   decoder_start_token_id=c.pad_id)
    ref = hf_t5.T5ForConditionalGeneration(cfg).double().eval()
    ours = {k: torch.tensor(backend.to_numpy(p.data), dtype=torch.float64) for k, p in model.named_parameters()}
    C = c.d_model
    mapped = {"shared.weight": ours["shared.weight"]}

    def attn(prefix, mine):
        kv = ours[f"{mine}.kv.weight"]
        mapped[f"{prefix}.q.weight"] = ours[f"{mine}.q.weight"].T       # ours (in, out), torch (out, in)
        mapped[f"{prefix}.k.weight"] = kv[:, :C].T
        mapped[f"{prefix}.v.weight"] = kv[:, C:].T
        mapped[f"{prefix}.o.weight"] = ours[f"{mine}.o.weight"].T

    def ffn(prefix, mine):
        if c.feed_forward == "relu":
            mapped[f"{prefix}.DenseReluDense.wi.weight"] = ours[f"{mine}.fc1.weight"].T
            mapped[f"{prefix}.DenseReluDense.wo.weight"] = ours[f"{mine}.fc2.weight"].T
        else:
            for name in ("wi_0", "wi_1", "wo"):
                mapped[f"{prefix}.DenseReluDense.{name}.weight"] = ours[f"{mine}.{name}.weight"].T

    for stack, n, decoder in (("encoder", c.n_layer, False), ("decoder", c.n_dec_layer, True)):
        for i in range(n):
            p, m = f"{stack}.block.{i}.layer", f"{stack}.blocks.{i}"
            attn(f"{p}.0.SelfAttention", f"{m}.attn")
            mapped[f"{p}.0.layer_norm.weight"] = ours[f"{m}.ln1.weight"]
            if i == 0:
                mapped[f"{p}.0.SelfAttention.relative_attention_bias.weight"] = ours[f"{m}.relative_bias.weight"]
            last = 1
            if decoder:
                attn(f"{p}.1.EncDecAttention", f"{m}.cross_attn")
                mapped[f"{p}.1.layer_norm.weight"] = ours[f"{m}.ln_cross.weight"]
                last = 2
            ffn(f"{p}.{last}", f"{m}.ffn")
            mapped[f"{p}.{last}.layer_norm.weight"] = ours[f"{m}.ln2.weight"]
        mapped[f"{stack}.final_layer_norm.weight"] = ours[f"{stack}.ln_f.weight"]
    if not c.tie_embeddings:
        mapped["lm_head.weight"] = ours["lm_head.weight"].T
    head = mapped.pop("lm_head.weight", None)
    missing, unexpected = ref.load_state_dict(mapped, strict=False)
    if head is not None:   # transformers 5 always ties lm_head to shared: untie it for v1.1's own head
        ref.lm_head.weight = torch.nn.Parameter(head)
    assert not unexpected and set(missing) <= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                                               "lm_head.weight"}, (missing, unexpected)
    return ref


def rms_norm_in_input_dtype(self, hidden_states):
    """Hugging Face's T5LayerNorm takes the variance in float32 even for a float64 model; this is the
    same formula in the input's dtype, so that the comparison is float64 throughout."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@pytest.fixture(autouse=True)
def float64_rms_norm(monkeypatch):
    monkeypatch.setattr(hf_t5.T5LayerNorm, "forward", rms_norm_in_input_dtype)


@pytest.mark.parametrize("options", [{}, dict(feed_forward="gated-gelu", tie_embeddings=False)],
                         ids=["v1.0", "v1.1"])
def test_t5_matches_hugging_face(options):
    cfg = T5Config(vocab_size=11, max_src_len=40, max_tgt_len=40, n_layer=2, n_dec_layer=2, n_head=2, d_model=8,
                   **options)
    model = T5Model(cfg, seed=5).to("cpu", "float64")
    rng = np.random.default_rng(0)
    src = rng.integers(2, 11, size=(2, 37))                                # distances past the exact buckets
    src[1, 30:] = 0                                                        # padding
    tgt_out = rng.integers(1, 11, size=(2, 33))
    tgt_out[1, 20:] = IGNORE_INDEX
    tgt_in = np.concatenate([np.zeros((2, 1), int), np.where(tgt_out == IGNORE_INDEX, 0, tgt_out)[:, :-1]], axis=1)
    logits, loss = model.forward(src, tgt_in, tgt_out)
    model.zero_grad()
    model.backward()

    ref = hf_model(model)
    out = ref(input_ids=torch.tensor(src), attention_mask=torch.tensor(src != 0).long(),
              decoder_input_ids=torch.tensor(tgt_in), labels=torch.tensor(tgt_out))
    np.testing.assert_allclose(logits, out.logits.detach().numpy(), rtol=1e-9, atol=1e-10)
    assert abs(float(loss) - out.loss.item()) < 1e-10
    out.loss.backward()
    for ours_name, theirs_name in (("encoder.blocks.0.relative_bias.weight",
                                    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                                   ("decoder.blocks.0.relative_bias.weight",
                                    "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                                   ("shared.weight", "shared.weight"),
                                   ("encoder.blocks.1.ln2.weight", "encoder.block.1.layer.1.layer_norm.weight"),
                                   ("decoder.blocks.1.cross_attn.q.weight",
                                    "decoder.block.1.layer.1.EncDecAttention.q.weight")):
        theirs = dict(ref.named_parameters())[theirs_name].grad.numpy()
        theirs = theirs.T if theirs_name.endswith("q.weight") else theirs      # torch keeps (out, in)
        np.testing.assert_allclose(dict(model.named_parameters())[ours_name].grad, theirs, rtol=1e-8, atol=1e-11)
