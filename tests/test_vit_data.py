"""The image sets of data/images.py, the image classification task and `train --model vit`. The
digits tests need scikit-learn (they skip without it); the generated shapes need nothing."""
import sys

import numpy as np
import pytest

from minitransformer.checkpoint import load_model
from minitransformer.cli import main
from minitransformer.data.images import SHAPE_CLASSES, load_digits_split, make_shapes, stratified_split
from minitransformer.models.vit import ViTConfig
from minitransformer.presets import make_task
from minitransformer.tasks.image_classification import ImageClassificationTask
from minitransformer.train import TrainConfig


def test_stratified_split_holds_out_the_same_fraction_of_every_class():
    labels = np.repeat(np.arange(4), [10, 20, 31, 2])
    train, test = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(labels.size))   # a partition
    assert np.bincount(labels[test]).tolist() == [2, 4, 6, 1]       # round(0.2 n_k), at least one each
    again, _ = stratified_split(labels, 0.2, seed=3)
    other, _ = stratified_split(labels, 0.2, seed=4)
    assert (again == train).all() and not np.array_equal(other, train)
    with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\), got 1.5"):
        stratified_split(labels, 1.5)


def test_generated_shapes():
    images, labels = make_shapes(64, image_size=8, channels=3, seed=1)
    assert images.shape == (64, 3, 8, 8) and images.dtype == np.float32
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))
    again, _ = make_shapes(64, image_size=8, channels=3, seed=1)
    assert (again == images).all()
    clean, labels = make_shapes(200, image_size=8, seed=2, noise=0.0)
    lit = clean[:, 0] > 0
    rows, cols = lit.any(axis=2).sum(axis=1), lit.any(axis=1).sum(axis=1)
    assert (rows[labels == 0] == 1).all() and (cols[labels == 0] >= 4).all()      # one row: horizontal
    assert (cols[labels == 1] == 1).all() and (rows[labels == 1] >= 4).all()      # one column: vertical
    assert (lit[labels == 2].sum(axis=(1, 2)) == rows[labels == 2]).all()         # one pixel per row
    assert (rows[labels == 3] == cols[labels == 3]).all()                          # a square


def test_shapes_task_adapts_the_config_and_draws_batches():
    task = make_task("vit", ViTConfig(), TrainConfig(), data="shapes")
    cfg = task.adapt(ViTConfig(image_size=16, channels=3, n_classes=10))
    assert (cfg.image_size, cfg.channels, cfg.n_classes) == (8, 1, 4)
    x, y = task.batch("val", 5, np.random.default_rng(0))
    assert x.shape == (5, 1, 8, 8) and y.shape == (5,)
    assert task.state()["dataset"] == "shapes"
    with pytest.raises(ValueError, match=r"names an image set, one of \['digits', 'shapes'\]; got 'x.txt'"):
        make_task("vit", ViTConfig(), TrainConfig(), data="x.txt")
    with pytest.raises(ValueError, match="no 'test' split"):
        task.batch("test", 2, np.random.default_rng(0))


def test_missing_scikit_learn_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)          # import fails as if not installed
    with pytest.raises(ImportError, match=r"minitransformer\[vision\].*--data shapes"):
        load_digits_split()


def test_digits_split():
    pytest.importorskip("sklearn")
    data = load_digits_split(0.2, seed=0)
    assert data.image_shape == (1, 8, 8) and data.n_classes == 10
    assert len(data.train_labels) + len(data.test_labels) == 1797
    assert abs(len(data.test_labels) / 1797 - 0.2) < 0.01
    assert data.train_images.min() >= 0 and data.train_images.max() == 1.0
    share = np.bincount(data.test_labels) / np.bincount(np.concatenate([data.train_labels, data.test_labels]))
    assert np.abs(share - 0.2).max() < 0.02                               # every class 20% held out


def test_train_vit_tiny_on_shapes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "vit", "--preset", "tiny", "--data", "shapes", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "the image set shapes" in text
    printed = float(text.split("test accuracy ")[1].split()[0])
    model, meta = load_model(out, which="last")                  # the checkpoint rebuilds the ViT
    assert model.kind == "vit" and meta["task"]["dataset"] == "shapes"
    task = make_task("vit", model.config, TrainConfig(), data="shapes")
    assert task.test_accuracy(model) == pytest.approx(printed, abs=1e-4)


def test_train_vit_tiny_on_digits_by_default(tmp_path, capsys):
    pytest.importorskip("sklearn")
    assert main(["train", "--model", "vit", "--preset", "tiny", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "8x8 digits" in text
    accuracy = float(text.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.3                                                  # ten classes; 60 steps
