"""The package metadata: every console script names a callable entry point, and the packages it
lists are the ones that exist."""

from __future__ import annotations

import importlib
import tomllib

from tests.conftest import REPO_ROOT


def _project() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_console_scripts_resolve():
    scripts = _project()["project"]["scripts"]
    assert {"dyhead-predict", "dyhead-train", "dyhead-evaluate", "dyhead-analysis", "dyhead-conformance"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_dependencies_match_requirements():
    """The installable package asks for the same torch/torchvision range as requirements.txt."""
    reqs = {line.split(">=")[0].split("<=")[0].strip(): line.strip()
            for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    deps = {d.split(">=")[0].split("<=")[0].strip(): d for d in _project()["project"]["dependencies"]}
    for name in ("torch", "torchvision", "numpy", "pycocotools"):
        assert deps[name].replace(" ", "") == reqs[name].replace(" ", ""), name
