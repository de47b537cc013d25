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
