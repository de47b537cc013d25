"""Fixtures for the app tests: a checkpoint (the bundled demo model, or a random-weight demo-preset
model saved in a temporary folder when it is absent), a tiny generated dataset and a private cache
folder, handed to the app through its environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis.sources import DEFAULT_CHECKPOINT
from dyhead.data.demo import DemoSpec, generate_split

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
TINY_IMAGES = 4


@pytest.fixture(scope="session")
def app_checkpoint(tmp_path_factory) -> Path:
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    from dyhead.checkpoint import save_checkpoint
    from dyhead.detector import PRESETS, build_detector

    torch.manual_seed(0)
    model = build_detector(PRESETS["demo"]).eval()
    return save_checkpoint(tmp_path_factory.mktemp("app_model") / "random_demo.pt", model,
                           extra_meta={"note": "random weights, for the app tests"})


@pytest.fixture(scope="session")
def app_data(tmp_path_factory) -> Path:
    """A 4-image demo val split of about 192 px."""
    root = tmp_path_factory.mktemp("app_data")
    generate_split(root, "val", TINY_IMAGES, seed=0, spec=DemoSpec(size=192))
    return root


@pytest.fixture(scope="session")
def app_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app_cache")


@pytest.fixture()
def app_env(monkeypatch, app_checkpoint, app_data, app_cache) -> dict:
    env = {"DYHEAD_APP_CHECKPOINT": str(app_checkpoint), "DYHEAD_APP_DATA": str(app_data),
           "DYHEAD_APP_CACHE": str(app_cache)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def tiny_detector_config(num_blocks: int = 1):
    """A very small detector configuration (8-16 channels, 96-128 px inputs) for edge-case models."""
    from dyhead.backbone import BackboneConfig
    from dyhead.config import DyHeadConfig
    from dyhead.data.demo import CATEGORY_NAMES
    from dyhead.detector import DetectorConfig

    return DetectorConfig(
        backbone=BackboneConfig(kind="small", small_widths=(8, 8, 16, 16, 16)),
        fpn_channels=16,
        tower=DyHeadConfig(num_blocks=num_blocks, channels=16, norm_groups=8),
        num_classes=len(CATEGORY_NAMES),
        class_names=CATEGORY_NAMES,
        category_ids=tuple(range(1, len(CATEGORY_NAMES) + 1)),
        min_size=96,
        max_size=128,
    )
