"""Tiny detectors for the detector tests (official layout, 16-32 channels, fast on one CPU thread)."""

from __future__ import annotations

import numpy as np
import torch

from dyhead.backbone import BackboneConfig
from dyhead.config import DyHeadConfig
from dyhead.detector import DetectorConfig, DyHeadDetector, build_detector


def tiny_config(num_blocks: int = 1, num_classes: int = 3, **changes) -> DetectorConfig:
    """resnet_msra at widths stem 8 / bottleneck 8 / res2 32, FPN and tower 32 channels (GroupNorm(16) needs 2 per group at 1x1 P7)."""
    cfg = DetectorConfig(
        backbone=BackboneConfig(kind="resnet_msra", depth=50, stem_out=8, base_width=8, res2_out=32),
        fpn_channels=32,
        tower=DyHeadConfig(num_blocks=num_blocks, channels=32),
        num_classes=num_classes,
        class_names=tuple(f"c{i}" for i in range(num_classes)),
        category_ids=tuple(range(11, 11 + num_classes)),
        min_size=96,
        max_size=160,
    )
    return cfg.replace(**changes) if changes else cfg


def randomized(model: DyHeadDetector, seed: int = 0) -> DyHeadDetector:
    """Every weight redrawn (small std, unit BN) so that features and detections are non-trivial:
    class probabilities spread around 0.05-0.6 and boxes of many sizes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0, generator=g)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.normal_(0.0, 0.1, generator=g)
            elif name.endswith("norm.weight") or name.endswith("scale"):
                t.uniform_(0.8, 1.2, generator=g)
            elif t.dim() > 1:
                fan_in = t[0].numel()
                t.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=g)
            else:
                t.normal_(0.0, 0.1, generator=g)
        model.backbone.body.stem.conv1.weight.mul_(1 / 64)  # input in 0-255 units
    return model.eval()


def tiny_detector(seed: int = 0, **changes) -> DyHeadDetector:
    torch.manual_seed(seed)
    return randomized(build_detector(tiny_config(**changes)), seed)


def make_image(h: int = 90, w: int = 120, seed: int = 0) -> np.ndarray:
    """A smooth random RGB uint8 image with a few bright rectangles."""
    rng = np.random.default_rng(seed)
    img = (rng.random((h // 6 + 1, w // 6 + 1, 3)) * 255).astype(np.uint8)
    img = np.kron(img, np.ones((6, 6, 1), dtype=np.uint8))[:h, :w]
    img[10:40, 20:70] = (250, 30, 30)
    img[50:80, 60:110] = (30, 200, 240)
    return np.ascontiguousarray(img)
