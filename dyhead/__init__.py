"""DyHead Explorer's model package: the Dynamic Head tower (Dai et al., CVPR 2021) as the official
implementation computes it, with attention switches and traces passed per call.

    from dyhead import DyHeadTower, DyHeadConfig, AttentionSwitches
    tower = DyHeadTower(DyHeadConfig(num_blocks=6, channels=256, num_levels=5))
    outputs, trace = tower(features, switches=AttentionSwitches(task=False), return_trace=True)  # plain ReLU

    # scale off = the calibrated dataset-mean weights (dyhead.knockout), or scale_off="fixed-1"
    outputs = tower(features, switches=AttentionSwitches(scale=False, constants=load_or_calibrate(...)))

    from dyhead import load_detector, load_image
    model, info = load_detector("checkpoints/demo_dyhead.pt")
    detections = model.predict([load_image("photo.jpg")])
"""

from .config import AttentionSwitches, CoarserBranchMode, DyHeadConfig, knock_out
from .weights import load_detector, save_checkpoint
from .detector import PRESETS, DetectorConfig, DyHeadDetector, build_detector
from .preprocess import load_image
from .tower import DyHeadTower, TowerTrace
from .trace import TraceSpec
from .weights import LoadInfo

__all__ = [
    "AttentionSwitches", "CoarserBranchMode", "DyHeadConfig", "DyHeadTower", "TowerTrace", "knock_out",
    "PRESETS", "DetectorConfig", "DyHeadDetector", "build_detector", "load_detector", "save_checkpoint",
    "load_image", "TraceSpec", "LoadInfo",
]
