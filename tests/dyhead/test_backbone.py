"""Backbones: the official R50 layout, MSRA block details, FPN equal to detectron2's, torchvision and
small variants."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from dyhead.backbone import BackboneConfig, BackboneWeightsError, FrozenBN, build_backbone
from dyhead.checkpoint import official_key_map
from dyhead.detector import PRESETS, build_detector


def test_official_r50_state_dict_is_the_release_manifest(conformance_dir):
    manifest = json.loads((conformance_dir / "official_atss_r50_dyhead_keys.json").read_text())["keys"]
    model = build_detector(PRESETS["atss_r50_dyhead6"])
    key_map = official_key_map(model)
    ours = {key_map[k]: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest  # every name and shape, none more, none less
    assert sum(p.numel() for p in model.parameters()) == 38_849_090  # the manifest's parameter count


def test_msra_stride_sits_in_the_first_1x1_conv():
    body = build_backbone(BackboneConfig(stem_out=8, base_width=8, res2_out=32), 16).body
    first = body.res3[0]
    assert first.conv1.stride == (2, 2) and first.conv1.kernel_size == (1, 1)
    assert first.conv2.stride == (1, 1)
    assert first.shortcut.stride == (2, 2)
    assert body.res2[1].shortcut is None  # identity when shape is unchanged
    assert all(m.bias is None for m in body.modules() if isinstance(m, torch.nn.Conv2d))
    assert isinstance(body.res2[0].conv1.norm, FrozenBN) and body.res2[0].conv1.norm.eps == 1e-5
    widths = [body.res2[0].conv3.out_channels, body.res3[0].conv3.out_channels, body.res3[0].conv2.out_channels]
    assert widths == [32, 64, 16]
    assert len(body.res4) == 6


def test_frozen_bn_matches_batch_norm_with_and_without_grad():
    bn = FrozenBN(4)
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 5, 5)
    ref = (x - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 1e-5)
    ref = ref * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), ref, atol=1e-5, rtol=1e-5)
    xg = x.clone().requires_grad_(True)
    out = bn(xg)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert xg.grad is not None


def _detectron2_fpn(fpn, c3, c4, c5):
    """detectron2's FPN written out: laterals, nearest x2 (scale_factor), sum, outputs, P6/P7 from P5."""
    convs = lambda blocks, i: blocks[i][0]  # noqa: E731
    lateral = [convs(fpn.inner_blocks, i) for i in range(3)]
    output = [convs(fpn.layer_blocks, i) for i in range(3)]
    prev = lateral[2](c5)
    outs = [output[2](prev)]
    for i, c in ((1, c4), (0, c3)):
        prev = lateral[i](c) + F.interpolate(prev, scale_factor=2.0, mode="nearest")
        outs.insert(0, output[i](prev))
    p6 = fpn.extra_blocks.p6(outs[-1])
    p7 = fpn.extra_blocks.p7(F.relu(p6))
    return outs + [p6, p7]


def test_fpn_equals_detectron2_fpn_for_inputs_padded_to_128():
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(stem_out=8, base_width=8, res2_out=32), 16).eval()
    for p in backbone.fpn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(1, 3, 128, 256) * 50
    with torch.no_grad():
        bottom_up, pyramid = backbone.forward_features(x)
        ref = _detectron2_fpn(backbone.fpn, *bottom_up)
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
    for ours, theirs in zip(pyramid, ref):
        assert torch.equal(ours, theirs)
    assert backbone.fpn.extra_blocks.use_P5  # P6 is fed by P5, not C5


def test_small_backbone_strides_and_widths():
    cfg = BackboneConfig(kind="small", small_widths=(8, 8, 16, 24, 32), small_norm="group")
    backbone = build_backbone(cfg, 16)
    assert cfg.pixel_format == "RGB" and cfg.pixel_std[0] == pytest.approx(58.395)
    out = backbone(torch.randn(2, 3, 128, 96))
    assert [tuple(p.shape) for p in out] == [(2, 16, 16, 12), (2, 16, 8, 6), (2, 16, 4, 3), (2, 16, 2, 2), (2, 16, 1, 1)]


def test_torchvision_resnet_with_local_weights(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    backbone = build_backbone(BackboneConfig(kind="resnet_torchvision", depth=18, weights_path=str(path)), 16)
    assert torch.equal(backbone.body.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    assert torch.equal(backbone.body.bn1.running_var, ref.bn1.running_var)
    c3, c4, c5 = backbone.body(torch.randn(1, 3, 64, 64))
    assert (c3.shape[1], c4.shape[1], c5.shape[1]) == (128, 256, 512) and c5.shape[-1] == 2


def test_torchvision_resnet_weight_errors(tmp_path):
    import torchvision

    with pytest.raises(BackboneWeightsError, match="not found"):
        build_backbone(BackboneConfig(kind="resnet_torchvision", depth=18, weights_path=str(tmp_path / "x.pth")))
    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(BackboneWeightsError, match="does not fit torchvision resnet18"):
        build_backbone(BackboneConfig(kind="resnet_torchvision", depth=18, weights_path=str(wrong)))
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(BackboneWeightsError, match="weights_only"):
        build_backbone(BackboneConfig(kind="resnet_torchvision", depth=18, weights_path=str(text)))


def test_backbone_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="unknown backbone kind"):
        BackboneConfig(kind="vgg")
    with pytest.raises(ValueError, match="depth"):
        BackboneConfig(kind="resnet_msra", depth=18)
    cfg = BackboneConfig(kind="small", small_widths=(8, 8, 16, 24, 32))
    assert BackboneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    msra = BackboneConfig()
    assert msra.pixel_format == "BGR" and msra.pixel_mean == (103.53, 116.28, 123.675) and msra.pixel_std == (1.0,) * 3
