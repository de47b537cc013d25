"""Tiny models and tiny generated datasets for the analysis tests (built here, in seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dyhead.backbone import BackboneConfig
from dyhead.config import DyHeadConfig
from dyhead.data.demo import CATEGORY_NAMES, DemoSpec, generate_split
from dyhead.detector import DetectorConfig, build_detector


def tiny_config(num_blocks: int = 2, channels: int = 16) -> DetectorConfig:
    return DetectorConfig(
        backbone=BackboneConfig(kind="small", small_widths=(8, 8, 16, 16, 16)),
        fpn_channels=channels,
        tower=DyHeadConfig(num_blocks=num_blocks, channels=channels, norm_groups=8),
        num_classes=len(CATEGORY_NAMES),
        class_names=CATEGORY_NAMES,
        category_ids=tuple(range(1, len(CATEGORY_NAMES) + 1)),
        min_size=96,
        max_size=128,
        score_thresh=0.0,
    )


def tiny_detector(seed: int = 0, num_blocks: int = 2):
    """A randomly initialised tiny detector; scale-attention and class biases are spread so that the
    weights and detections are not all equal."""
    torch.manual_seed(seed)
    model = build_detector(tiny_config(num_blocks))
    with torch.no_grad():
        for block in model.tower.blocks:
            block.scale_attention.fc.weight.normal_(0.0, 0.5)
            block.scale_attention.fc.bias.fill_(0.5)
        model.head.cls_logits.weight.normal_(0.0, 0.2)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_detector()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 5-image demo val split of about 192 px (the model resizes them to 96-128 px)."""
    root = tmp_path_factory.mktemp("demo_data")
    generate_split(root, "val", 5, seed=0, spec=DemoSpec(size=192))
    return root
