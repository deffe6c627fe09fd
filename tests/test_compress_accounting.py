"""Parameter, FLOP and byte accounting before and after compression."""
import pytest

from minitransformer.compress.accounting import (break_even_rank, compare_table, model_costs,
                                                 theoretical_speedup, totals)
from minitransformer.compress.lowrank import factorize_model
from minitransformer.compress.quantize import quantize_model
from test_compress_lowrank import Toy


def test_break_even():
    assert break_even_rank(128, 512) == pytest.approx(128 * 512 / 640)
    assert theoretical_speedup(128, 512, 8) == pytest.approx(128 * 512 / (8 * 640))
    k = int(break_even_rank(64, 64))                 # 32: equal size at k = 32
    assert k * (64 + 64) == 64 * 64


def test_model_costs_before_after():
    model = Toy(c=8, n=2)
    before = model_costs(model)
    dense = {r.name: r for r in before}
    assert dense["blocks.0.ffn.fc1"].params == 8 * 24 + 24
    assert dense["blocks.0.ffn.fc1"].flops == 2 * 8 * 24
    assert dense["blocks.0.ffn.fc1"].bytes == (8 * 24 + 24) * 4
    assert totals(before)["params"] == model.num_parameters()
    factorize_model(model, 2, ["ffn"])
    after = model_costs(model)
    low = {r.name: r for r in after}["blocks.0.ffn.fc1"]
    assert low.params == 2 * (8 + 24) + 24 and low.flops == 2 * 2 * (8 + 24)
    assert totals(after)["params"] == model.num_parameters() < totals(before)["params"]
    table = compare_table(before, after)
    assert "blocks.0.ffn.fc1" in table and "**total**" in table


def test_int8_bytes():
    model = Toy(c=8, n=1)
    quantize_model(model, "int8", ["attn.qkv"])
    row = {r.name: r for r in model_costs(model)}["blocks.0.attn.qkv"]
    assert row.bytes == 8 * 24 * 1 + 24 * 4 + 24 * 4        # int8 weights + f32 scales + f32 bias
    quantize_model(model, "int8", ["attn.proj"], bits=4)
    row = {r.name: r for r in model_costs(model)}["blocks.0.attn.proj"]
    assert row.bytes == 8 * 8 // 2 + 8 * 4 + 8 * 4
