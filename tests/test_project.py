"""Project-level checks: import layering and the README's code."""

from __future__ import annotations

import re
import subprocess
import sys

import torch

from tests.conftest import REPO_ROOT


def test_dyhead_imports_neither_plots_nor_streamlit():
    code = (
        "import sys, dyhead, dyhead.tower, dyhead.config, dyhead.conformance.tower; "
        "bad = [m for m in ('streamlit', 'matplotlib', 'plotly', 'pandas', 'analysis', 'app') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_model_snippet_runs():
    readme = (REPO_ROOT / "README.md").read_text()
    snippet = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    # Same code at a small width so it stays fast: 32 channels instead of 256.
    namespace: dict = {}
    exec(snippet.replace("256", "32"), namespace)
    trace = namespace["trace"]
    assert len(trace.blocks) == 6
    assert set(trace.blocks[5].levels[0].scale_weights) == {0, 1}
    assert namespace["outputs"][0].shape == torch.Size([1, 32, 100, 168])
