"""benchmarks/vit_digits.py end to end on a few steps: the JSON (with `test_accuracy`), the tables and
the three figures are written where asked. The real run is `python benchmarks/vit_digits.py`."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_vit_digits_benchmark_writes_its_results(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["vit_digits.py"])
    import vit_digits
    vit_digits.main(["--seeds", "1", "--steps", "20", "--eval-every", "10", "--out", str(tmp_path),
                     "--figures", str(tmp_path), "--figure-images", "2"])
    result = json.loads((tmp_path / "vit_digits.json").read_text())
    assert 0 <= result["test_accuracy"] <= 1 and result["meta"]["steps"] == 20
    assert [r["patch_size"] for r in result["ablation"]] == [4, 2, 8]
    assert {b["label"].split(" ")[0] for b in result["baselines"]} == {"SVC", "logistic"}
    assert len(result["runs"][0]["curve"]) == 2                       # steps 10 and 20
    assert result["meta"]["n_train"] + result["meta"]["n_val"] + result["meta"]["n_test"] == 1797
    assert [p["step"] for p in result["validation_curve"]["4"]] == [10, 20]
    choice = result["step_choice"]                                    # judged on validation images
    assert choice["best_step"] in (10, 20) and choice["tolerance"] == 1 / result["meta"]["n_val"]
    assert "validation / test" in (tmp_path / "vit_digits_curve.md").read_text()
    assert "| ViT, 2x2 patches | 17 | 4 |" in (tmp_path / "vit_digits.md").read_text()
    assert [(r["patch_size"], r["block"]) for r in result["attention_on_ink"]] == [(2, 1), (2, 2), (4, 1), (4, 2)]
    assert "| 2x2 | 1 |" in (tmp_path / "vit_digits_attention.md").read_text()
    for name in ("vit_cls_attention.png", "vit_accuracy_time.png", "vit_positions.png"):
        assert (tmp_path / name).stat().st_size > 0
