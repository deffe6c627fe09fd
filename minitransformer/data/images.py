r"""Images without downloads: scikit-learn's bundled 8x8 digits, and generated shapes.

* **Digits.** The 1,797 handwritten digits (8x8 pixels, 16 grey levels, 10 classes; the UCI
  "optdigits" test set) ship *inside* the scikit-learn package: ``sklearn.datasets.load_digits``
  reads them from disk and downloads nothing. Pixels are scaled from 0..16 to [0, 1]. scikit-learn
  is an optional dependency (``pip install 'minitransformer[vision]'``); without it
  `load_digits_split` says so.
* **Shapes.** Four classes of line drawings on a dark background (a horizontal bar, a vertical bar,
  a diagonal, a hollow square) at random places, brightness and colour, with Gaussian noise:
  generated from a seed, any size and number of channels. Tests use them so that they need nothing
  beyond NumPy.

Both come as an `ImageSplit`: float32 images (n, channels, S, S) and int64 labels in three disjoint
parts. The **test** part is held out first and is looked at only for the final accuracy; the
**validation** part is carved out of what is left (the training part, before any training) and is
what the training loop's validation loss and the ``best`` checkpoint are measured on; the model
trains on the rest. The digits are split by `split_indices`, `stratified_split` twice: the same
fraction of every class is held out each time (by default 20% for test, then 10% of the remaining
80% for validation: 72% / 8% / 20% of the images).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np  # host-side data (arrays are moved to the device by the task)

SHAPE_CLASSES = ("horizontal bar", "vertical bar", "diagonal", "hollow square")
DIGITS_MAX_VALUE = 16.0       # the digits' pixels are integers 0..16
TEST_FRACTION = 0.2           # of all the images, held out for the final test accuracy
VAL_FRACTION = 0.1            # of the training part (what the test part leaves), held out for validation


# --8<-- [start:image_split]
class ImageSplit(NamedTuple):
    """Three disjoint parts: train (the model learns from it), val (the training loop's validation
    loss and the ``best`` checkpoint), test (only the final accuracy)."""
    name: str                 # what the images are, for messages and checkpoints
    train_images: np.ndarray  # (n_train, channels, S, S) float32
    train_labels: np.ndarray  # (n_train,) int64
    val_images: np.ndarray    # (n_val, channels, S, S) float32
    val_labels: np.ndarray    # (n_val,) int64
    test_images: np.ndarray   # (n_test, channels, S, S) float32
    test_labels: np.ndarray   # (n_test,) int64
    n_classes: int
# --8<-- [end:image_split]

    @property
    def image_shape(self) -> tuple:
        """(channels, S, S)."""
        return tuple(self.train_images.shape[1:])


# --8<-- [start:stratified_split]
def stratified_split(labels, test_fraction: float, seed: int = 0):
    """(train indices, test indices): round(test_fraction * n_k) of each class k held out, at random.

    Every class keeps at least one example on each side when it has two or more. Indices come
    back sorted, so the split does not depend on the order of the classes."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size < 2:
        raise ValueError(f"stratified_split: expected a 1-d array of at least 2 labels, got shape {labels.shape}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"stratified_split: test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        n_test = int(round(test_fraction * members.size))
        if members.size >= 2:
            n_test = min(max(n_test, 1), members.size - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
# --8<-- [end:stratified_split]


def _check_fraction(name: str, value: float, of: str) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} (the share of {of} held out) must lie strictly between 0 and 1, got {value!r}")


# --8<-- [start:split_indices]
def split_indices(labels, test_fraction: float = TEST_FRACTION, val_fraction: float = VAL_FRACTION,
                  seed: int = 0):
    """(train, val, test) indices into `labels`, disjoint, each stratified by class.

    First `test_fraction` of every class is held out as the test part; then `val_fraction` of every
    class of what remains (the training part) is held out as the validation part."""
    _check_fraction("test_fraction", test_fraction, "all the images")
    _check_fraction("val_fraction", val_fraction, "the training part")
    labels = np.asarray(labels)
    rest, test = stratified_split(labels, test_fraction, seed)
    if rest.size < 2:
        raise ValueError(f"split_indices: test_fraction={test_fraction} leaves {rest.size} training "
                         f"image(s) of {labels.size}; a validation part needs at least 2")
    train_at, val_at = stratified_split(labels[rest], val_fraction, seed + 1)   # positions within rest
    return rest[train_at], rest[val_at], test
# --8<-- [end:split_indices]


def _split(name, images, labels, n_classes, test_fraction, val_fraction, seed) -> ImageSplit:
    tr, va, te = split_indices(labels, test_fraction, val_fraction, seed)
    return ImageSplit(name, images[tr], labels[tr], images[va], labels[va], images[te], labels[te], n_classes)


def load_digits_split(test_fraction: float = TEST_FRACTION, seed: int = 0,
                      val_fraction: float = VAL_FRACTION) -> ImageSplit:
    """scikit-learn's 8x8 digits as (n, 1, 8, 8) images in [0, 1], split stratified into train,
    validation (`val_fraction` of the training part) and test (`test_fraction` of all)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the 8x8 digits come with scikit-learn, which is not installed: "
                          "pip install 'minitransformer[vision]' (or pip install scikit-learn); "
                          "or train on the generated shapes instead (--data shapes)") from None
    digits = load_digits()
    images = (digits.images / DIGITS_MAX_VALUE).astype(np.float32)[:, None]   # (n,8,8) -> (n,1,8,8)
    labels = digits.target.astype(np.int64)
    _check_fraction("test_fraction", test_fraction, "all the images")      # before the name formats it
    _check_fraction("val_fraction", val_fraction, "the training part")
    return _split(f"8x8 digits (scikit-learn, stratified {1 - test_fraction:.0%}/{test_fraction:.0%} "
                  f"train/test, {val_fraction:.0%} of train held out for validation)",
                  images, labels, 10, test_fraction, val_fraction, seed)


# --8<-- [start:shapes]
def make_shapes(n: int, image_size: int = 8, channels: int = 1, seed: int = 0, noise: float = 0.1):
    """n images (n, channels, S, S) float32 and labels (n,) int64 of the four SHAPE_CLASSES.

    Each image: one shape drawn at a random place with brightness in [0.6, 1] times a random colour
    (one weight per channel in [0.5, 1]), plus N(0, noise^2) on every pixel."""
    if image_size < 4:
        raise ValueError(f"make_shapes: image_size must be at least 4, got {image_size}")
    if n < 1 or channels < 1:
        raise ValueError(f"make_shapes: need n >= 1 and channels >= 1, got n={n}, channels={channels}")
    rng = np.random.default_rng(seed)
    S = image_size
    labels = rng.integers(0, len(SHAPE_CLASSES), n)
    canvas = np.zeros((n, S, S), np.float32)
    for i, k in enumerate(labels):
        _draw(canvas[i], k, rng)
    brightness = rng.uniform(0.6, 1.0, (n, 1, 1, 1))
    colour = rng.uniform(0.5, 1.0, (n, channels, 1, 1))
    images = canvas[:, None] * brightness * colour                     # (n,1,S,S) -> (n,channels,S,S)
    images += rng.normal(0.0, noise, images.shape)
    return images.astype(np.float32), labels.astype(np.int64)


def _draw(img, k: int, rng) -> None:
    """Draw shape k into the (S, S) array img, at a random place."""
    S = img.shape[0]
    length = int(rng.integers(S // 2, S + 1))                          # bars and diagonals
    a, b = int(rng.integers(0, S)), int(rng.integers(0, S - length + 1))
    if k == 0:
        img[a, b:b + length] = 1.0                                     # horizontal bar
    elif k == 1:
        img[b:b + length, a] = 1.0                                     # vertical bar
    elif k == 2:
        r, c = int(rng.integers(0, S - length + 1)), b
        img[np.arange(r, r + length), np.arange(c, c + length)] = 1.0  # diagonal
    else:
        side = int(rng.integers(3, S // 2 + 2))                        # hollow square
        r, c = int(rng.integers(0, S - side + 1)), int(rng.integers(0, S - side + 1))
        img[r, c:c + side] = img[r + side - 1, c:c + side] = 1.0
        img[r:r + side, c] = img[r:r + side, c + side - 1] = 1.0
# --8<-- [end:shapes]


def shapes_split(n_train: int = 1024, n_test: int = 256, image_size: int = 8, channels: int = 1,
                 seed: int = 0, val_fraction: float = VAL_FRACTION) -> ImageSplit:
    """Generated shapes: the test images come from another seed than the training images, and
    `val_fraction` of the n_train generated training images (stratified) are held out for validation."""
    _check_fraction("val_fraction", val_fraction, "the training part")
    if n_train < 2:
        raise ValueError(f"shapes_split: n_train must be at least 2 (a training and a validation image), got {n_train}")
    images, labels = make_shapes(n_train, image_size, channels, seed)
    tr, va = stratified_split(labels, val_fraction, seed + 2)
    test = make_shapes(n_test, image_size, channels, seed + 1)
    return ImageSplit(f"generated shapes ({image_size}x{image_size}, {channels} channel(s))",
                      images[tr], labels[tr], images[va], labels[va], *test, len(SHAPE_CLASSES))
