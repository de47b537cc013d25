"""`--init` sources on small synthetic files with the real key layouts: a torchvision ResNet-50 state
dict, detectron2's MSRA R-50.pkl (numpy pickle, reduced widths), DyHead detector checkpoints with
another class list; and the numpy-only unpickler refusing a pickle that would run code."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from dyhead.backbone import BackboneConfig
from dyhead.checkpoint import official_key_map, save_checkpoint
from dyhead.config import DyHeadConfig
from dyhead.detector import DetectorConfig
from dyhead.weights.errors import UnsafeCheckpointError
from dyhead.weights.init import build_initialised, read_init_source
from dyhead.weights.pickle_safe import load_numpy_pickle
from tests.dyhead.detector_fixtures import tiny_config, tiny_detector


def small_config(num_classes: int = 2) -> DetectorConfig:
    """A target detector: 16-channel FPN and one DyHead block (the backbone comes from the file)."""
    return DetectorConfig(
        backbone=BackboneConfig(kind="small"), fpn_channels=16, tower=DyHeadConfig(num_blocks=1, channels=16, norm_groups=8),
        num_classes=num_classes, class_names=tuple(f"new{i}" for i in range(num_classes)),
        category_ids=tuple(range(1, num_classes + 1)), min_size=64, max_size=96)


def test_torchvision_resnet50_state_dict(tmp_path):
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    state = net.state_dict()
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(state, path)
    model, report = build_initialised(small_config(), path)
    cfg = model.config.backbone
    assert (report.kind, cfg.kind, cfg.depth, cfg.pixel_format) == ("torchvision_resnet", "resnet_torchvision", 50, "RGB")
    body = model.backbone.body.state_dict()
    assert len(report.loaded) == len(body) == 265 and all(k.startswith("backbone.body.") for k in report.loaded)
    assert torch.equal(body["layer3.5.conv2.weight"], state["layer3.5.conv2.weight"])
    assert torch.equal(body["bn1.running_var"], state["bn1.running_var"])
    assert {"fc.weight", "fc.bias", "bn1.num_batches_tracked"} <= set(report.left_out)
    assert all(k.endswith("num_batches_tracked") or k.startswith("fc.") for k in report.left_out)
    assert "head.cls_logits.bias" in report.reinitialised and "tower.blocks.0.same_level.conv.weight" in report.reinitialised


def msra_pickle_dict(stem: int = 8, width: int = 8, res2: int = 32, seed: int = 0) -> dict:
    """detectron2's ImageNetPretrained/MSRA/R-50.pkl layout (Detectron names, numpy float32) at reduced widths."""
    rng = np.random.default_rng(seed)
    arrays = {}

    def conv(name, out_ch, in_ch, k):
        arrays[name + "_w"] = rng.normal(0, 0.1, (out_ch, in_ch, k, k)).astype(np.float32)
        arrays[name + "_bn_s"] = rng.uniform(0.5, 1.5, out_ch).astype(np.float32)
        arrays[name + "_bn_b"] = rng.normal(0, 0.1, out_ch).astype(np.float32)

    arrays["conv1_w"] = rng.normal(0, 0.1, (stem, 3, 7, 7)).astype(np.float32)
    arrays["res_conv1_bn_s"] = np.ones(stem, np.float32)
    arrays["res_conv1_bn_b"] = np.zeros(stem, np.float32)
    in_ch, mid, out = stem, width, res2
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for b in range(blocks):
            prefix = f"res{stage}_{b}_"
            if b == 0:
                conv(prefix + "branch1", out, in_ch, 1)
            conv(prefix + "branch2a", mid, in_ch if b == 0 else out, 1)
            conv(prefix + "branch2b", mid, mid, 3)
            conv(prefix + "branch2c", out, mid, 1)
        in_ch, mid, out = out, mid * 2, out * 2
    arrays["fc1000_w"] = rng.normal(0, 0.1, (1000, in_ch)).astype(np.float32)
    arrays["fc1000_b"] = np.zeros(1000, np.float32)
    arrays["res2_0_branch2a_w_momentum"] = np.zeros_like(arrays["res2_0_branch2a_w"])  # solver state: dropped
    return arrays


def test_msra_r50_pickle_reduced_widths(tmp_path):
    arrays = msra_pickle_dict()
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    model, report = build_initialised(small_config(), path)
    cfg = model.config.backbone
    assert report.kind == "msra_pickle"
    assert (cfg.kind, cfg.depth, cfg.stem_out, cfg.base_width, cfg.res2_out, cfg.pixel_format) == (
        "resnet_msra", 50, 8, 8, 32, "BGR")
    body = model.backbone.body.state_dict()
    assert torch.equal(body["stem.conv1.weight"], torch.from_numpy(arrays["conv1_w"]))
    assert torch.equal(body["res4.5.conv2.weight"], torch.from_numpy(arrays["res4_5_branch2b_w"]))
    assert torch.equal(body["res3.0.shortcut.norm.weight"], torch.from_numpy(arrays["res3_0_branch1_bn_s"]))
    assert torch.equal(body["res5.2.conv3.norm.bias"], torch.from_numpy(arrays["res5_2_branch2c_bn_b"]))
    # The affine _s/_b is the whole frozen BN: mean 0, variance 1 - eps, so FrozenBN applies x * s + b.
    assert torch.equal(body["res2.0.conv1.norm.running_mean"], torch.zeros(8))
    assert torch.allclose(body["res2.0.conv1.norm.running_var"] + 1e-5, torch.ones(8))
    assert set(report.left_out) == {"fc1000_w", "fc1000_b"}
    x = torch.randn(1, 8, 5, 5)
    norm = model.backbone.body.res2[0].conv1.norm
    expected = x * torch.from_numpy(arrays["res2_0_branch2a_bn_s"]).view(1, -1, 1, 1) + torch.from_numpy(
        arrays["res2_0_branch2a_bn_b"]).view(1, -1, 1, 1)
    assert torch.allclose(norm(x), expected, atol=1e-6)
    # 53 convs x (weight, scale, shift) loaded; the BN statistics filled, not read.
    assert len(report.loaded) == 159


class RunsCode:
    """A pickle payload whose reduce would call os.system (what a malicious .pkl carries)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-50.pkl"
    arrays = {"conv1_w": np.zeros((8, 3, 7, 7), np.float32), "res2_0_branch2a_w": np.zeros((8, 8, 1, 1), np.float32),
              "evil": RunsCode(marker)}
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"refused: the pickle asks for (posix|os)\.system"):
        read_init_source(path)
    with pytest.raises(UnsafeCheckpointError, match="never runs code"):
        load_numpy_pickle(path)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        bad = tmp_path / "eval.pkl"
        bad.write_bytes(b"\x80\x02cbuiltins\neval\nX\x0b\x00\x00\x001+1 and 0\x85R.")
        load_numpy_pickle(bad)
    assert not marker.exists()


def test_detector_checkpoint_with_other_classes_reinitialises_the_classifier(tmp_path):
    source = tiny_detector(num_classes=3)
    path = save_checkpoint(tmp_path / "own.pt", source)
    target = tiny_config(num_classes=2).replace(class_names=("a", "b"), category_ids=(1, 2), min_size=64)
    torch.manual_seed(0)
    model, report = build_initialised(target, path)
    assert model.config.num_classes == 2 and model.config.min_size == 64
    assert report.reinitialised == ("head.cls_logits.weight", "head.cls_logits.bias")
    assert set(report.left_out) == {"head.cls_logits.weight", "head.cls_logits.bias"}
    assert torch.allclose(model.head.cls_logits.bias, torch.full((2,), -math.log(99)))
    ours, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in report.loaded) and len(report.loaded) == len(ours) - 2
    assert "re-initialised 2: head.cls_logits.weight, head.cls_logits.bias" in report.summary()

    # The same class list: everything, classifier included, is loaded.
    same = tiny_config(num_classes=3)
    _, report = build_initialised(same, path)
    assert report.reinitialised == () and report.left_out == ()


def test_official_detectron2_release_as_init(tmp_path):
    source = tiny_detector(num_classes=3)
    key_map = official_key_map(source)
    path = tmp_path / "dyhead_r50_atss_fpn_1x.pth"
    torch.save({"model": {key_map[k]: v for k, v in source.state_dict().items()}}, path)
    model, report = build_initialised(tiny_config(num_classes=5), path)
    assert report.kind == "detector" and "detectron2 checkpoint" in report.notes[0]
    assert report.reinitialised == ("head.cls_logits.weight", "head.cls_logits.bias")
    assert torch.equal(model.state_dict()["tower.blocks.0.spatial_offsets.weight"],
                       source.state_dict()["tower.blocks.0.spatial_offsets.weight"])


def test_swin_imagenet_release_layout(tmp_path):
    """``swin_tiny_patch4_window7_224.pth`` layout at embed 16: {"model": ...} with mlp.fc1/fc2, the
    classifier's final norm and head, and the shifted blocks' attn_mask buffers."""
    from dyhead.backbone import build_backbone

    cfg = BackboneConfig(kind="swin", swin_embed_dim=16, swin_depths=(2, 2, 2, 2), swin_num_heads=(1, 2, 2, 4))
    torch.manual_seed(1)
    body = build_backbone(cfg, 16).body
    state = {k.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2."): v.clone()
             for k, v in body.state_dict().items() if not k.startswith(("norm1.", "norm2.", "norm3."))}
    state.update({"norm.weight": torch.ones(128), "norm.bias": torch.zeros(128), "head.weight": torch.zeros(1000, 128),
                  "head.bias": torch.zeros(1000), "layers.0.blocks.1.attn_mask": torch.zeros(4, 49, 49)})
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": state}, path)
    model, report = build_initialised(small_config(), path)
    got = model.config.backbone
    assert report.kind == "swin_imagenet"
    assert (got.kind, got.swin_embed_dim, got.swin_depths, got.swin_num_heads, got.swin_window_size, got.swin_mlp_ratio) == (
        "swin", 16, (2, 2, 2, 2), (1, 2, 2, 4), 7, 4.0)
    ours = model.backbone.body.state_dict()
    assert torch.equal(ours["layers.2.blocks.1.mlp.0.weight"], state["layers.2.blocks.1.mlp.fc1.weight"])
    assert torch.equal(ours["layers.1.downsample.reduction.weight"], state["layers.1.downsample.reduction.weight"])
    assert {"backbone.body.norm1.weight", "backbone.body.norm3.bias"} <= set(report.reinitialised)
    assert set(report.left_out) == {"norm.weight", "norm.bias", "head.weight", "head.bias", "layers.0.blocks.1.attn_mask"}
