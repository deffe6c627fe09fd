"""Test options: `pytest --device cpu|cuda`. CUDA runs skip cleanly when no GPU is usable."""
import pytest

from minitransformer import backend


def pytest_addoption(parser):
    parser.addoption("--device", action="store", default="cpu", choices=backend.DEVICES,
                     help="run the suite on this device (cuda needs CuPy and a GPU)")


@pytest.fixture(scope="session")
def device(request):
    name = request.config.getoption("--device")
    if name == "cuda" and not backend.cuda_available():
        try:
            backend.check_device("cuda")
        except backend.DeviceError as err:
            pytest.skip(f"--device cuda: {err}")
    return name


@pytest.fixture
def xp(device):
    return backend.xp_for(device)
