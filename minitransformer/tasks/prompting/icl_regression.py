r"""In-context learning of linear functions (after Garg et al. 2022), and the estimators to beat.

Every prompt has its own function $f(x) = w^\top x$, $w \sim \mathcal{N}(0, I_d)$, and points
$x_i \sim \mathcal{N}(0, I_d)$. The model reads $x_1, f(x_1), x_2, f(x_2), \dots$ as vectors of
$d + 1$ numbers (an $x$ is $(x, 0)$, a value is $(0, \dots, 0, y)$) and at every $x_{k+1}$ predicts
$f(x_{k+1})$ from the $k$ examples before it. Errors are reported normalised by $d$,
$e(k) = \mathbb{E}\,(\hat y - y)^2 / d$, so that predicting 0 scores 1.

Two estimators computed from the same prompts, with their expected errors in closed form
(noise-free data; derivations in the chapter):

* least squares (minimum-norm for $k < d$): $e(k) = (d - k)/d$ for $k < d$, 0 for $k \ge d$;
* averaging, $\hat w = \frac1k \sum_i y_i x_i$: $e(k) = (d + 1)/k$.
"""
from __future__ import annotations

import numpy as np  # host side: the generator and the reference estimators

from ... import backend
from ..base import Task


class ICLRegressionFamily:
    name = "icl-linear"
    summary = "in-context linear regression: x_1, f(x_1), ..., x_k, f(x_k), x_query"

    def __init__(self, dim: int = 4, n_points: int = 12):
        if dim < 1 or n_points < 1:
            raise ValueError(f"ICLRegressionFamily: dim and n_points must be >= 1, got {dim}, {n_points}")
        self.dim, self.n_points = dim, n_points
        self.max_len = 2 * n_points

    # --8<-- [start:icl_sample]
    def sample(self, rng, batch_size: int):
        """(xs (B, k, d), ys (B, k)): k = n_points examples of one random linear function per row."""
        w = rng.standard_normal((batch_size, self.dim))              # (B, d) one function per prompt
        xs = rng.standard_normal((batch_size, self.n_points, self.dim))   # (B, k, d)
        ys = np.einsum("bkd,bd->bk", xs, w)                           # (B, k) y_i = w . x_i
        return xs, ys
    # --8<-- [end:icl_sample]

    # --8<-- [start:icl_encode]
    def encode(self, xs, ys):
        """The model's (inputs (B, 2k, d+1), targets (B, 2k, 1), weights (B, 2k)): x_i at even
        positions, y_i at odd ones; the prediction of y_i is read at x_i's position."""
        B, k, d = xs.shape
        inputs = np.zeros((B, 2 * k, d + 1))
        inputs[:, 0::2, :d] = xs                                      # (x_i, 0)
        inputs[:, 1::2, d] = ys                                       # (0, ..., 0, y_i)
        targets = np.zeros((B, 2 * k, 1))
        targets[:, 0::2, 0] = ys                                      # at x_i: predict y_i
        weights = np.zeros((B, 2 * k))
        weights[:, 0::2] = 1.0
        return inputs, targets, weights
    # --8<-- [end:icl_encode]

    def describe(self) -> dict:
        return {"dim": self.dim, "n_points": self.n_points}


def model_icl_predictor(model):
    """(xs, ys) -> the model's predictions of every y_i from the examples before it, (B, k)."""
    def predict(xs, ys, family):
        inputs, _, _ = family.encode(xs, ys)
        with model.no_grad():
            pred, _ = model.forward(backend.to_device(inputs.astype(model.dtype), model.device))
        return backend.to_numpy(pred)[:, 0::2, 0].astype(np.float64)       # (B, 2k, 1) -> (B, k)
    return predict


# --8<-- [start:icl_baselines]
def least_squares_predictor(xs, ys, family=None):
    """At every i: the minimum-norm least-squares w from examples 0..i-1, applied to x_i."""
    B, k, d = xs.shape
    pred = np.zeros((B, k))
    for i in range(1, k):
        w = np.stack([np.linalg.pinv(xs[b, :i]) @ ys[b, :i] for b in range(B)])   # (B, d)
        pred[:, i] = np.einsum("bd,bd->b", w, xs[:, i])
    return pred


def averaging_predictor(xs, ys, family=None):
    """At every i: w = (1/i) sum_{j<i} y_j x_j, applied to x_i (0 with no examples)."""
    sums = np.cumsum(ys[:, :, None] * xs, axis=1)                      # (B, k, d) sum_{j<=i} y_j x_j
    w = np.zeros_like(xs)
    counts = np.arange(1, xs.shape[1])[None, :, None]
    w[:, 1:] = sums[:, :-1] / counts                                  # examples before i only
    return np.einsum("bkd,bkd->bk", w, xs)


def least_squares_expected(k: int, d: int) -> float:
    return (d - k) / d if k < d else 0.0


def averaging_expected(k: int, d: int) -> float:
    return 1.0 if k == 0 else (d + 1) / k
# --8<-- [end:icl_baselines]


def errors_by_k(predict, family: ICLRegressionFamily, n_prompts: int = 2000, seed: int = 0):
    """(mean, standard error) of the normalised squared error at every k = 0..n_points-1: arrays (k,)."""
    xs, ys = family.sample(np.random.default_rng(seed), n_prompts)
    err = (predict(xs, ys, family) - ys) ** 2 / family.dim                # (B, k)
    return err.mean(0), err.std(0) / np.sqrt(n_prompts)


class ICLRegressionTask(Task):
    """Batches (inputs, targets, weights) for the gpt-vector model; validation prompts from a fixed seed."""

    def __init__(self, family: ICLRegressionFamily, seed: int = 0):
        self.family, self.seed = family, seed
        self.name = f"prompt:{family.name}"

    def adapt(self, config):
        import dataclasses
        if not hasattr(config, "n_in"):
            raise ValueError(f"task {self.family.name!r} trains the vector GPT (--model gpt-vector), "
                             f"got {type(config).__name__}")
        if config.block_size < self.family.max_len:
            raise ValueError(f"task {self.family.name!r} needs block_size >= {self.family.max_len}, got "
                             f"{config.block_size}")
        return dataclasses.replace(config, n_in=self.family.dim + 1, n_out=1)

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        inputs, targets, weights = self.family.encode(*self.family.sample(rng, batch_size))
        return inputs.astype(np.float32), targets.astype(np.float32), weights.astype(np.float32)

    def forward_backward(self, model, batch, dloss: float = 1.0) -> float:
        return super().forward_backward(model, self._cast(model, batch), dloss)

    def loss(self, model, batch) -> float:
        return super().loss(model, self._cast(model, batch))

    @staticmethod
    def _cast(model, batch):
        return tuple(a.astype(model.dtype) for a in batch)

    def counted(self, batch) -> int:
        return int(batch[-1].sum())

    def baseline(self) -> float:
        """The loss of predicting 0: E[y^2] = d."""
        return float(self.family.dim)

    def metrics(self, model) -> dict:
        mean, _ = errors_by_k(model_icl_predictor(model), self.family, n_prompts=256, seed=self.seed + 99)
        k = min(self.family.dim, self.family.n_points - 1)
        return {"error_at_k_max": float(mean[-1]), f"error_at_k={k}": float(mean[k])}

    def state(self) -> dict:
        return {"name": self.name, **self.family.describe()}

    def describe(self) -> str:
        return f"prompt task {self.family.name}: {self.family.summary} (d={self.family.dim}, k<={self.family.n_points})"
