"""What span-corruption pretraining hands to text-to-text fine-tuning: every weight (the shared
embedding and both relative-bias tables included), and one vocabulary with the same PAD, EOS and
sentinel ids in both phases."""
import numpy as np

from minitransformer import backend
from minitransformer.data.text_vocabulary import EOS, PAD
from minitransformer.models.t5 import T5Config, T5Model
from minitransformer.tasks.span_corruption import SpanCorruptionTask
from minitransformer.tasks.text_to_text import TextToTextTask

TEXT = ("The quick brown fox jumps over the lazy dog while seven tired zebras watch quietly from "
        "a distant hill; meanwhile curious otters build tiny rafts, juggling shiny pebbles. ") * 8


def tasks_and_config():
    span = SpanCorruptionTask(TEXT, inputs_length=24)
    t2t = TextToTextTask(TEXT, seed=0, val_per_task=4)
    cfg = t2t.adapt(span.adapt(T5Config(n_layer=1, n_dec_layer=2, n_head=2, d_model=8, num_buckets=8,
                                        max_distance=16)))
    return span, t2t, cfg


def test_loading_copies_every_weight_and_the_outputs(device):
    span, t2t, cfg = tasks_and_config()
    pretrained, fresh = T5Model(cfg, seed=0).to(device), T5Model(cfg, seed=1).to(device)
    for p in pretrained.parameters():                    # as if trained: no weight left at its initial value
        p.data += backend.to_device(np.full(p.data.shape, 0.25, np.float32), device)
    fresh.load_state_dict(pretrained.state_dict())
    names = dict(pretrained.named_parameters())
    assert {"shared.weight", "encoder.blocks.0.relative_bias.weight",
            "decoder.blocks.0.relative_bias.weight"} <= set(names)
    for name, p in fresh.named_parameters():
        assert np.array_equal(backend.to_numpy(p.data), backend.to_numpy(names[name].data)), name
    src, tgt_in, tgt_out = (backend.to_device(a, device) for a in t2t.batch("val", 3, np.random.default_rng(0)))
    a, loss_a = pretrained.forward(src, tgt_in, tgt_out)
    b, loss_b = fresh.forward(src, tgt_in, tgt_out)
    assert np.array_equal(backend.to_numpy(a), backend.to_numpy(b)) and float(loss_a) == float(loss_b)


def test_both_phases_share_one_vocabulary():
    span, t2t, cfg = tasks_and_config()
    assert span.vocab.to_dict() == t2t.vocab.to_dict() and cfg.vocab_size == span.vocab.vocab_size
    assert (cfg.pad_id, cfg.eos_id) == (PAD, EOS)
    sentinels = set(range(cfg.vocab_size - span.vocab.n_sentinels, cfg.vocab_size))
    src, tgt_in, tgt_out = span.batch("train", 8, np.random.default_rng(0))
    assert (tgt_in[:, 0] == PAD).all() and (src[:, -1] == EOS).all() and (tgt_out[:, -1] == EOS).all()
    assert tgt_out[0, 0] == span.vocab.sentinel(0)       # the target opens with sentinel 0
    for task, pairs in t2t.val_pairs.items():            # no fine-tuning character collides with a sentinel
        for source, target in pairs:
            ids = np.concatenate([t2t.vocab.encode(source), t2t.vocab.encode(target)])
            assert not sentinels & set(ids.tolist()), (task, source, target)
            assert not (ids == 2).any(), (task, source)  # nor falls outside the vocabulary (UNK)
