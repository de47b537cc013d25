"""Shared test set-up: one torch thread (the suite runs on 2-core machines), paths to test data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
#: The conformance kit lies beside the repository in the project's workspace (and in CI); a user's
#: fresh clone does not have it, so tests that need it skip with this reason.
SHARED = Path(os.environ.get("DYHEAD_SHARED_DIR", REPO_ROOT.parent / "shared"))
CONFORMANCE = SHARED / "conformance"
NO_KIT = f"conformance kit not found at {CONFORMANCE} (set DYHEAD_SHARED_DIR to its parent folder)"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.skip(NO_KIT)
    return CONFORMANCE


@pytest.fixture
def network_passes(monkeypatch) -> list:
    """Records one entry (the padded input shape) per network pass of any detector: a counting
    wrapper around the backbone's forward, which every pass runs exactly once."""
    from dyhead.backbone import BackboneWithFPN

    calls = []
    original = BackboneWithFPN.forward_features

    def counting(self, x):
        calls.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(BackboneWithFPN, "forward_features", counting)
    return calls
