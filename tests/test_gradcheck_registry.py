"""Every differentiable piece registered with minitransformer.gradcheck passes in float64."""
import pytest

from minitransformer import gradcheck

CASES = gradcheck.registered()


@pytest.mark.parametrize("name", sorted(CASES))
def test_registered_case(name, device):
    results = CASES[name](device)
    for result in results if isinstance(results, list) else [results]:
        assert result.passed, str(result)
