"""Tensor parallelism (Megatron): the split model equals the serial one under `mpiexec -n 2`
(loss, every gradient, the weights after AdamW steps, float64), and it all-reduces exactly the
volume of the formula. In-process: the split layers' gradient check and their bad-input errors."""
import json

import pytest

from minitransformer.blocks import EncoderBlock
from minitransformer.distributed import LocalWorld
from minitransformer.distributed.tensor_parallel import _gradcheck_tensor_parallel, tensor_parallel
from test_distributed import HERE, mpiexec, needs_mpi


@needs_mpi
def test_two_ranks_equal_the_serial_model_and_the_communication_formula(tmp_path):
    report = tmp_path / "tp.json"
    mpiexec(2, HERE / "mpi" / "tensor_parallel_check.py", str(report))
    result = json.loads(report.read_text())
    assert result["ranks"] == 2
    assert result["worst"]["loss"] < 1e-12
    assert result["worst"]["grad"] < 1e-12
    assert result["worst"]["weights"] < 1e-12
    assert result["allreduced_per_step"] == [result["formula"]] * 3      # 4 L B T C per step
    assert 2 * result["split_parameters_per_rank"] == result["split_parameters_serial"]


def test_split_layers_pass_their_gradient_check(device):
    for res in _gradcheck_tensor_parallel(device):
        assert res.passed, res


class _TwoRanks(LocalWorld):
    def __init__(self):
        super().__init__()
        self.size = 2


def test_what_cannot_be_split_is_refused():
    with pytest.raises(ValueError, match="n_head = 3 is not divisible by 2 ranks"):
        tensor_parallel(EncoderBlock(6, 3, 8), _TwoRanks())
    with pytest.raises(ValueError, match="kernel 'performer' is not supported"):
        tensor_parallel(EncoderBlock(8, 2, 8, attention="performer"), _TwoRanks())
    with pytest.raises(ValueError, match="no Transformer blocks"):
        from minitransformer.nn.linear import Linear
        tensor_parallel(Linear(2, 2), _TwoRanks())
