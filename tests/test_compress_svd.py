"""Truncated SVD compression: Eckart–Young errors match the measured ones; rank selection rules."""
import numpy as np
import pytest

from minitransformer import backend
from minitransformer.compress.accounting import break_even_rank
from minitransformer.compress.lowrank import LowRankLinear
from minitransformer.compress.svd import (eckart_young_error, measured_error, rank_for_energy,
                                          ranks_for_budget, svd_compress, truncated_factors)
from test_compress_lowrank import Toy


@pytest.mark.parametrize("shape,k", [((12, 7), 1), ((7, 12), 3), ((9, 9), 8), ((5, 3), 3)])
def test_eckart_young_matches_measured(device, shape, k):
    w = backend.to_device(np.random.default_rng(0).standard_normal(shape), device)
    a, b = truncated_factors(w, k)
    assert a.shape == (shape[0], k) and b.shape == (k, shape[1])
    sigma = np.linalg.svd(backend.to_numpy(w), compute_uv=False)
    fro, spec = eckart_young_error(sigma, k)
    fro_m, spec_m = measured_error(w, a @ b)
    assert fro_m == pytest.approx(fro, rel=1e-9, abs=1e-12)
    assert spec_m == pytest.approx(spec, rel=1e-9, abs=1e-9)
    if k < min(shape):
        assert spec == pytest.approx(sigma[k])


def test_truncation_is_optimal_against_random_rank_k():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((10, 8))
    a, b = truncated_factors(w, 3)
    best = np.linalg.norm(w - a @ b)
    for _ in range(20):
        other = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 8))
        assert np.linalg.norm(w - other) >= best


def test_rank_for_energy():
    sigma = np.array([4.0, 2.0, 1.0, 1.0])      # energies 16, 4, 1, 1 of 22
    assert rank_for_energy(sigma, 16 / 22) == 1
    assert rank_for_energy(sigma, 0.75) == 2
    assert rank_for_energy(sigma, 1.0) == 4
    with pytest.raises(ValueError, match="energy"):
        rank_for_energy(sigma, 0.0)


def test_budget_is_respected_and_prefers_energy():
    big = np.array([10.0, 9.0, 8.0, 0.1])
    small = np.array([1.0, 0.5, 0.4, 0.3])
    spectra = {"a": (big, 4, 4), "b": (small, 4, 4)}
    ranks = ranks_for_budget(spectra, 0.75)          # 24 of 32 numbers: 3 directions of 8
    assert sum(k * 8 for k in ranks.values()) <= 24
    assert ranks == {"a": 2, "b": 1}
    with pytest.raises(ValueError, match="budget"):
        ranks_for_budget(spectra, 1.5)


def test_svd_compress_model(device):
    model = Toy().to(device, "float64")
    rows = svd_compress(model, ["ffn"], rank=2)
    assert len(rows) == 4 and all(isinstance(model.blocks[i].ffn.fc1, LowRankLinear) for i in range(2))
    for r in rows:
        assert r.fro_measured == pytest.approx(r.fro_predicted, rel=1e-9)
        assert r.spec_measured == pytest.approx(r.spec_predicted, rel=1e-9)
        assert r.params_after == 2 * sum(r.shape) and r.rank < break_even_rank(*r.shape)
    rows = svd_compress(Toy(), ["attn"], energy=0.9)
    assert all(r.energy_kept >= 0.9 - 1e-6 for r in rows)
    rows = svd_compress(Toy(), ["attn", "ffn"], budget=0.3)
    assert sum(r.params_after for r in rows) <= 0.3 * sum(r.params_before for r in rows)


def test_svd_compress_bad_inputs():
    with pytest.raises(ValueError, match="exactly one"):
        svd_compress(Toy(), ["ffn"], rank=2, energy=0.9)
    with pytest.raises(ValueError, match="exactly one"):
        svd_compress(Toy(), ["ffn"])
    with pytest.raises(ValueError, match=r"rank must lie in \[1, min"):
        svd_compress(Toy(), ["attn.proj"], rank=9)     # 8x8 matrix
    with pytest.raises(ValueError, match="no Linear matches"):
        svd_compress(Toy(), ["nothing"], rank=1)
