"""Data parallelism over MPI ranks, ZeRO-1, resume with another number of ranks, gradient
accumulation. The multi-rank runs start `mpiexec -n 2 python tests/mpi/train_run.py` and compare
with the same run in this process (a world of one); they skip when mpi4py or mpiexec is missing."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.distributed import LocalWorld, ZeroAdamW, bucket_ranges, shard_range, world
from minitransformer.distributed.buckets import GradientBuckets
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.optim import AdamW, clip_grad_norm, decay_groups

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "mpi"))
import train_run  # noqa: E402


def mpi_available() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which("mpiexec") is not None


needs_mpi = pytest.mark.skipif(not mpi_available(), reason="needs mpi4py and mpiexec "
                               "(pip install '.[distributed]')")


def mpiexec(ranks: int, script: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `script` on `ranks` MPI ranks; fail the test with its output if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "PMI_RANK", "PMI_FD", "PMI_PORT")}
    done = subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, str(script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"mpiexec failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def run_ranks(ranks: int, tmp: Path, name: str, **spec) -> tuple[dict, dict]:
    """Train with `ranks` MPI ranks (1: in this process); return (final weights, summary)."""
    spec = {"out": str(tmp / f"run-{name}"), "data": str(tmp / f"text-{name}.txt"),
            "weights": str(tmp / f"{name}.npz"), **spec}
    if ranks == 1:
        train_run.run(spec)
    else:
        mpiexec(ranks, HERE / "mpi" / "train_run.py", json.dumps(spec))
    weights = dict(np.load(spec["weights"]))
    return weights, json.loads(Path(spec["weights"]).with_suffix(".json").read_text())


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


@needs_mpi
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_two_ranks_equal_one_process_at_the_same_global_batch(tmp_path, dtype):
    one, s1 = run_ranks(1, tmp_path, "one", steps=4, dtype=dtype)
    two, s2 = run_ranks(2, tmp_path, "two", steps=4, dtype=dtype)
    assert s2["ranks"] == 2 and s2["communicator"] == "MPI"
    assert largest_difference(one, two) < TOLERANCE[dtype]
    assert largest_difference(one, run_ranks(1, tmp_path, "init", steps=1, dtype=dtype)[0]) > 1e-3  # it trained
    np.testing.assert_allclose(s2["batch_losses"], s1["batch_losses"], rtol=1e-10 if dtype == "float64" else 1e-5)
    # one bucketed all-reduce of every gradient per step (plus the scalar loss, not counted)
    assert s2["traffic"]["allreduce"]["calls"] == 4
    assert s2["traffic"]["allreduce"]["elements"] == 4 * s2["parameters"]


@needs_mpi
def test_zero1_equals_plain_data_parallelism_with_clipping(tmp_path):
    plain, _ = run_ranks(2, tmp_path, "plain", steps=4, dtype="float64")
    zero, summary = run_ranks(2, tmp_path, "zero", steps=4, dtype="float64", zero=1)
    assert largest_difference(plain, zero) < 1e-12
    traffic, n = summary["traffic"], summary["parameters"]
    assert traffic["reduce_scatter"]["calls"] == 4 and "allreduce" not in traffic    # no all-reduce of gradients
    chunk = -(-n // 2)
    assert traffic["reduce_scatter"]["elements"] == 4 * 2 * chunk                    # the padded flat gradient
    assert traffic["allgather"]["elements"] >= 4 * 2 * chunk                         # the weights (+ checkpoints)


@needs_mpi
def test_resume_with_another_number_of_ranks(tmp_path):
    """Two ranks stop after 2 of 4 steps; one process resumes; and the other way round with ZeRO.
    Both end where an uninterrupted single run ends."""
    straight, _ = run_ranks(1, tmp_path, "straight", steps=4, dtype="float64")
    common = dict(steps=4, dtype="float64", out=str(tmp_path / "shared-run"), data=str(tmp_path / "t.txt"))
    run_ranks(2, tmp_path, "first-half", stop_after=2, **common)
    resumed, summary = run_ranks(1, tmp_path, "second-half", resume=True, **common)
    assert summary["steps"] == 4 and largest_difference(straight, resumed) < 1e-12
    common["out"] = str(tmp_path / "shared-run-2")
    run_ranks(1, tmp_path, "first-half-2", stop_after=2, zero=1, **common)
    resumed, _ = run_ranks(2, tmp_path, "second-half-2", resume=True, zero=1, **common)
    assert largest_difference(straight, resumed) < 1e-12


def test_gradient_accumulation_in_fit_equals_the_big_batch(tmp_path):
    """batch 6 in one micro-batch, 3 x 2 and 2 x 3: the same draws, the same weights."""
    big, _ = run_ranks(1, tmp_path, "big", steps=3, dtype="float64", batch_size=6)
    for b, k in ((3, 2), (2, 3)):
        acc, _ = run_ranks(1, tmp_path, f"acc{b}", steps=3, dtype="float64", batch_size=b, grad_accum=k)
        assert largest_difference(big, acc) < 1e-12
    other, _ = run_ranks(1, tmp_path, "other", steps=3, dtype="float64", batch_size=3)
    assert largest_difference(big, other) > 1e-6                     # half the batch is another run


def test_bucket_ranges_respect_the_size_and_keep_the_order():
    assert bucket_ranges([10, 10, 10, 50, 1], 8, 160) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert bucket_ranges([3, 3], 8, 10 ** 6) == [(0, 2)]
    with pytest.raises(ValueError, match="bucket_bytes"):
        bucket_ranges([1], 8, 0)


class _DoublingWorld(LocalWorld):
    """A stand-in for two ranks holding the same gradients: all-reduce doubles."""

    def _allreduce(self, array):
        array *= 2


def test_buckets_reduce_every_gradient_once():
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=2, d_model=8)).to("cpu", "float64")
    for i, p in enumerate(model.parameters()):
        p.grad[...] = np.arange(p.grad.size).reshape(p.grad.shape) + i
    before = [p.grad.copy() for p in model.parameters()]
    buckets = GradientBuckets(model.parameters(), bucket_bytes=512)
    assert len(buckets) > 2
    comm = _DoublingWorld()
    buckets.allreduce_(comm)
    for p, g in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.grad, 2 * g)
    assert comm.traffic.calls["allreduce"] == len(buckets)
    assert comm.traffic.elements["allreduce"] == model.num_parameters()


def test_shard_range_covers_every_element_once():
    for total, size in ((10, 3), (9, 3), (2, 4)):
        covered = []
        for r in range(size):
            a, b, chunk = shard_range(total, size, r)
            assert chunk * size >= total and b - a <= chunk
            covered += list(range(a, b))
        assert covered == list(range(total))


def test_zero_on_one_rank_is_adamw_with_clipping():
    """In a world of one, ZeroAdamW is AdamW + global-norm clipping, element for element."""
    cfg = GPTConfig(vocab_size=9, block_size=6, n_layer=1, n_head=2, d_model=8)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 9, (3, 6)), rng.integers(0, 9, (3, 6))
    models = [GPT(cfg, seed=3).to("cpu", "float64") for _ in range(2)]
    plain = AdamW(decay_groups(models[0].named_parameters(), 0.1), lr=1e-2)
    zero = ZeroAdamW(AdamW(decay_groups(models[1].named_parameters(), 0.1), lr=1e-2), LocalWorld(), max_norm=0.1)
    for _ in range(3):
        for m in models:
            m.forward(x, y)
            m.backward()
        norm = float(clip_grad_norm(models[0].parameters(), 0.1))
        plain.step()
        assert zero.step() == pytest.approx(norm, rel=1e-12)
        plain.zero_grad()
        zero.zero_grad()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_allclose(q.data, p.data, rtol=0, atol=1e-14)
    full = zero.state_arrays()
    assert set(full) == set(plain.state_arrays())
    for key, value in plain.state_arrays().items():
        np.testing.assert_allclose(full[key], value, atol=1e-15)
    with pytest.raises(TypeError, match="AdamW"):
        from minitransformer.optim import SGD
        ZeroAdamW(SGD(models[0].parameters()), LocalWorld())
    with pytest.raises(ValueError, match="m.<i>"):
        zero.load_state_arrays({"velocity.0": full["m.0"]})


def test_without_a_launcher_the_world_is_one_process():
    comm = world("cpu")
    assert (comm.rank, comm.size, comm.name) == (0, 1, "local")
    a = np.arange(4.0)
    comm.allreduce_(a)
    out = np.empty(4)
    comm.allgather(a, out)
    np.testing.assert_array_equal(out, np.arange(4.0))
    with pytest.raises(ValueError, match="flat array"):
        comm.reduce_scatter(np.zeros(5), np.zeros(2))


def test_the_old_workers_option_points_to_mpiexec(capsys):
    from minitransformer.cli import main
    assert main(["train", "--workers", "2", "--steps", "1"]) == 2
    assert "mpiexec -n N" in capsys.readouterr().err


def test_nccl_all_reduce_smoke(device):
    """On a GPU, NCCL with one rank per GPU (at most two): collectives on device arrays and ZeRO-1
    steps against the host. Skips without a GPU or without MPI."""
    if device != "cuda":
        pytest.skip("needs --device cuda")
    if not mpi_available():
        pytest.skip("needs mpi4py and mpiexec")
    gpus = backend.xp_for("cuda").cuda.runtime.getDeviceCount()
    done = mpiexec(min(2, gpus), HERE / "mpi" / "nccl_smoke.py")
    assert "nccl all-reduce ok" in done.stdout


def test_accumulation_weighs_micro_batches_by_their_counted_targets():
    """With ignored targets the micro-batches count different numbers of targets; weighted by
    n_k / N, two micro-batches of 3 give the gradient of one batch of 6 (1/k each would not)."""
    from minitransformer.models.model import IGNORE_INDEX
    from minitransformer.tasks import CausalLMTask
    from minitransformer.tasks.base import Task
    from minitransformer.train import TrainConfig, fit

    class SomeIgnored(CausalLMTask):
        def batch(self, split, batch_size, rng):
            x, y = super().batch(split, batch_size, rng)
            y = y.copy()
            y[x % 3 == 0] = IGNORE_INDEX                 # from the content: uneven counts per row
            return x, y

        counted = Task.counted                           # the targets that are not ignored

    text = "the quick brown fox jumps over the lazy dog; " * 40
    weights = []
    for batch_size, accum in ((6, 1), (3, 2)):
        task = SomeIgnored.from_text(text, 8, 0.1)
        model = GPT(task.adapt(GPTConfig(block_size=8, n_layer=1, n_head=2, d_model=8, dropout=0.0)),
                    seed=1).to("cpu", "float64")
        cfg = TrainConfig(steps=3, batch_size=batch_size, grad_accum=accum, eval_interval=10, eval_iters=1,
                          num_samples=0, threads=1, dtype="float64", warmup=0)
        fit(model, task, cfg, progress=False, log=lambda *a: None)
        weights.append({n: p.data.copy() for n, p in model.named_parameters()})
    assert largest_difference(*weights) < 1e-12


def test_bad_settings_are_refused_with_what_was_expected():
    from minitransformer.distributed import DistributedDataParallel
    from minitransformer.train import TrainConfig
    with pytest.raises(ValueError, match="zero_stage must be 0 .* or 1"):
        TrainConfig(zero_stage=2)
    with pytest.raises(ValueError, match="needs optimizer"):
        TrainConfig(zero_stage=1, optimizer="sgd")
    with pytest.raises(ValueError, match="checkpoint_activations must be true or false"):
        TrainConfig(checkpoint_activations="yes")
    two = LocalWorld()
    two.size = 2                                                    # rank 0 of two (collectives not used)
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=2, d_model=8))
    ddp = DistributedDataParallel(model, two)
    x = np.zeros((1, 4), int)
    with pytest.raises(ValueError, match="global batch of 1 sequences cannot be split over 2 ranks"):
        ddp.forward_backward((x, x))
