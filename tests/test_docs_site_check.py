"""The built-site check (docs/checks/check_site.py) flags source code rendered as paragraphs, and only that."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "check_site", Path(__file__).resolve().parents[1] / "docs" / "checks" / "check_site.py")
check_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_site)


def test_flags_a_function_rendered_as_a_paragraph():
    # what an unfenced snippet include turns into
    html = ('<p>def lsh_buckets(x, rotations, n_buckets: int):\n'
            '    """bucket = argmax([x R; -x R]) per round."""\n'
            '    xp = get_array_module(x)\n'
            '    return xp.concatenate([proj, -proj], axis=-1).argmax(axis=-1)</p>')
    assert check_site.findings(html) == ["def lsh_buckets(x, rotations, n_buckets: int):"]


def test_flags_a_body_without_its_def_line():
    html = "<p>    xp = get_array_module(q)\n    B, H, T, D = q.shape\n    return out, cache</p>"
    assert len(check_site.findings(html)) == 1


def test_code_blocks_inline_code_math_and_prose_pass():
    html = ('<div class="highlight"><pre><code>def f(x):\n    return xp.exp(x)</code></pre></div>'
            '<p>The forward pass calls <code>def</code> and <code>xp.exp(s)</code>; it returns the\n'
            'output and a cache, and for each block it updates the running maximum.</p>'
            '<div class="arithmatex">\\[ s = \\max_j s_j \\]</div>'
            '<ul><li>return the rows whose keys are all masked as zeros</li></ul>')
    assert check_site.findings(html) == []
