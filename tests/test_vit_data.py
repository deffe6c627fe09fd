"""The image sets of data/images.py, the image classification task and `train --model vit`. The
digits tests need scikit-learn (they skip without it); the generated shapes need nothing."""
import sys

import numpy as np
import pytest

from minitransformer.checkpoint import load_model
from minitransformer.cli import main
from minitransformer.data.images import (SHAPE_CLASSES, load_digits_split, make_shapes, shapes_split, split_indices,
                                         stratified_split)
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


def test_split_indices_hold_out_test_then_validation_from_the_rest():
    labels = np.repeat(np.arange(3), [50, 100, 30])
    train, val, test = split_indices(labels, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(labels.size))   # a partition
    assert np.bincount(labels[test]).tolist() == [10, 20, 6]         # 20% of every class
    assert np.bincount(labels[val]).tolist() == [4, 8, 2]            # 10% of every class of the other 80%
    rest, test_alone = stratified_split(labels, 0.2, seed=0)
    assert (test_alone == test).all() and set(train) | set(val) == set(rest)   # the test part is the 80/20 one
    for bad in (0.0, 1.0, -0.1, 2):
        with pytest.raises(ValueError, match=rf"val_fraction \(the share of the training part held out\) must "
                                             rf"lie strictly between 0 and 1, got {bad}"):
            split_indices(labels, 0.2, bad)
        with pytest.raises(ValueError, match=rf"test_fraction .* got {bad}"):
            split_indices(labels, bad, 0.1)
    with pytest.raises(ValueError, match=r"val_fraction .* got 1.0"):
        shapes_split(64, 16, val_fraction=1.0)
    with pytest.raises(ValueError, match=r"test_fraction .* got 0"):
        load_digits_split(0)


def _rows(images) -> set:
    """Each image as bytes, to tell which part of a split an image came from."""
    return {image.tobytes() for image in images}


def test_val_batches_come_from_the_validation_images_only():
    """The validation part is neither trained on nor taken from the test images (the noisy
    generated shapes are all distinct, so an image identifies its part)."""
    task = ImageClassificationTask(shapes_split(200, 64, seed=0), "shapes")
    train, val, test = (_rows(x) for x in (task.data.train_images, task.data.val_images, task.data.test_images))
    assert len(train) == 180 and len(val) == 20 and len(test) == 64
    assert not train & val and not train & test and not val & test
    rng = np.random.default_rng(0)
    drawn_val = _rows(task.batch("val", 256, rng)[0])
    drawn_train = _rows(task.batch("train", 512, rng)[0])
    assert drawn_val <= val and len(drawn_val) > len(val) // 2
    assert drawn_train <= train
    assert "180 training, 20 validation and 64 test images" in task.describe()
    assert {k: task.state()[k] for k in ("n_train", "n_val", "n_test")} == {"n_train": 180, "n_val": 20, "n_test": 64}
    model = type("Constant", (), {})()                               # accuracy on all the val images, not test
    task.predict = lambda model, images: np.zeros(len(images), np.int64)
    assert task.val_accuracy(model) == (task.data.val_labels == 0).mean()
    assert task.test_accuracy(model) == (task.data.test_labels == 0).mean()


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
    from sklearn.datasets import load_digits
    data = load_digits_split(0.2, seed=0)
    assert data.image_shape == (1, 8, 8) and data.n_classes == 10
    assert len(data.train_labels) + len(data.val_labels) + len(data.test_labels) == 1797
    assert abs(len(data.test_labels) / 1797 - 0.2) < 0.01
    assert data.train_images.min() >= 0 and data.train_images.max() == 1.0
    counts = np.bincount(load_digits().target)
    assert np.abs(np.bincount(data.test_labels) / counts - 0.2).max() < 0.02            # 20% of every class
    rest = counts - np.bincount(data.test_labels)
    assert np.abs(np.bincount(data.val_labels) / rest - 0.1).max() < 0.02             # 10% of the rest
    train, val, test = (_rows(x) for x in (data.train_images, data.val_images, data.test_images))
    assert len(train) + len(val) + len(test) == 1797                  # the digits are distinct: disjoint parts
    task = ImageClassificationTask(data, "digits")
    assert _rows(task.batch("val", 512, np.random.default_rng(1))[0]) <= val


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
