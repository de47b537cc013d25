"""Checkpoints: own format round trip, official detectron2 import, mmdetection tower import, errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from dyhead.checkpoint import (
    MissingKeysError,
    NotATorchFileError,
    ShapeMismatchError,
    UnexpectedKeysError,
    UnknownLayoutError,
    UnsafeCheckpointError,
    CheckpointNotFoundError,
    load_detector,
    load_tower_state,
    official_key_map,
    save_checkpoint,
)
from dyhead.config import CoarserBranchMode
from tests.dyhead.detector_fixtures import make_image, tiny_detector


@pytest.fixture(scope="module")
def model():
    return tiny_detector(num_blocks=2)


def official_state(model) -> dict:
    key_map = official_key_map(model)
    return {key_map[k]: v.clone() for k, v in model.state_dict().items()}


def same_predictions(a, b, images) -> None:
    for da, db in zip(a.predict(images), b.predict(images)):
        assert len(da) > 0
        assert torch.equal(da.boxes, db.boxes) and torch.equal(da.scores, db.scores) and torch.equal(da.labels, db.labels)


def test_own_format_round_trip_is_bit_identical(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model, extra_meta={"epochs": 3, "data": {"name": "demo"}})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "dyhead-explorer" and raw["version"] == 1 and raw["meta"]["epochs"] == 3
    loaded, info = load_detector(path)
    assert info.kind == "own" and loaded.config == model.config and not loaded.training
    same_predictions(model, loaded, [make_image(), make_image(70, 100, seed=3)])


def test_save_refuses_meta_that_would_need_code_to_load(tmp_path, model):
    with pytest.raises(ValueError, match="meta.when"):
        save_checkpoint(tmp_path / "m.pt", model, extra_meta={"when": object()})


def test_official_detectron2_file_loads_with_inferred_widths(tmp_path, model):
    path = tmp_path / "release.pth"
    torch.save({"model": official_state(model), "__author__": "someone", "iteration": 90000}, path)
    loaded, info = load_detector(path, min_size=96, max_size=160)
    assert info.kind == "detectron2" and info.notes == ()
    cfg = loaded.config
    assert (cfg.backbone.stem_out, cfg.backbone.base_width, cfg.backbone.res2_out) == (8, 8, 32)
    assert (cfg.fpn_channels, cfg.tower.num_blocks, cfg.tower.channels, cfg.num_classes) == (32, 2, 32, 3)
    assert cfg.tower.coarser_branch == CoarserBranchMode.OFFICIAL
    loaded.config = loaded.config.replace(class_names=model.config.class_names, category_ids=model.config.category_ids)
    same_predictions(model, loaded, [make_image()])


def test_bare_state_dict_and_legacy_anchor_buffers(tmp_path, model):
    state = official_state(model)
    state.update({f"anchor_generator.cell_anchors.{i}": torch.zeros(1, 4) for i in range(5)})
    path = tmp_path / "v04.pth"
    torch.save(state, path)
    _, info = load_detector(path, coarser_branch="crop")
    assert "ignored 5 anchor buffer(s)" in info.notes[0]
    assert info.config.tower.coarser_branch.value == "crop"


def test_missing_unexpected_and_misshapen_keys(tmp_path, model):
    state = official_state(model)
    broken = dict(state)
    del broken["backbone.dyhead_tower.1.relu.fc.2.bias"]
    torch.save({"model": broken}, tmp_path / "missing.pth")
    with pytest.raises(MissingKeysError, match=r"1 expected key\(s\) missing.*dyhead_tower\.1\.relu\.fc\.2\.bias") as err:
        load_detector(tmp_path / "missing.pth")
    assert err.value.keys == ["backbone.dyhead_tower.1.relu.fc.2.bias"]

    extra = dict(state, **{"head.cls_tower.0.weight": torch.zeros(3)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(UnexpectedKeysError, match="head.cls_tower.0.weight"):
        load_detector(tmp_path / "extra.pth")

    wrong = dict(state)
    wrong["backbone.backbone.top_block.p7.weight"] = torch.zeros(32, 32, 1, 1)
    torch.save({"model": wrong}, tmp_path / "shape.pth")
    with pytest.raises(ShapeMismatchError, match=r"top_block\.p7\.weight: expected \[32, 32, 3, 3\], found \[32, 32, 1, 1\]"):
        load_detector(tmp_path / "shape.pth")


class NeedsCode:
    pass


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        load_detector(tmp_path / "nope.pth")
    text = tmp_path / "readme.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(NotATorchFileError, match="readme.pth: not a torch checkpoint"):
        load_detector(text)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(NotATorchFileError, match="empty file"):
        load_detector(empty)
    code = tmp_path / "code.pth"
    torch.save({"model": NeedsCode()}, code)
    with pytest.raises(UnsafeCheckpointError, match="needs arbitrary code"):
        load_detector(code)
    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps({"model": NeedsCode()}))
    with pytest.raises(UnsafeCheckpointError):
        load_detector(plain_pickle)
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2)}, other)
    with pytest.raises(UnknownLayoutError, match="unknown checkpoint layout"):
        load_detector(other)


def test_mmdetection_tower_import(tmp_path, model):
    """An mmdetection DyHead neck holding our tower's weights (conv biases zeroed: mmdetection has
    none) gives our tower's outputs in CROP mode, mmdetection's coarser-branch behaviour."""
    from dyhead.tower import DyHeadTower

    tower = DyHeadTower(model.config.tower.__class__.from_dict({**model.config.tower.to_dict(), "coarser_branch": "crop"}))
    tower.load_state_dict(model.tower.state_dict())
    with torch.no_grad():
        for block in tower.blocks:
            for branch in (block.from_coarser, block.same_level, block.from_finer):
                branch.conv.bias.zero_()
    names = {
        "spatial_offsets": "spatial_conv_offset", "from_coarser.conv": "spatial_conv_high.conv",
        "from_coarser.norm": "spatial_conv_high.norm", "same_level.conv": "spatial_conv_mid.conv",
        "same_level.norm": "spatial_conv_mid.norm", "from_finer.conv": "spatial_conv_low.conv",
        "from_finer.norm": "spatial_conv_low.norm", "scale_attention.fc": "scale_attn_module.1",
        "task_attention.fc1": "task_attn_module.conv1.conv", "task_attention.fc2": "task_attn_module.conv2.conv",
    }
    mm = {"backbone.conv1.weight": torch.zeros(1)}
    for key, value in tower.state_dict().items():
        _, b, rest = key.split(".", 2)
        module, param = rest.rsplit(".", 1)
        if module.endswith(".conv") and "attention" not in module and param == "bias":
            continue
        if module.startswith("task_attention"):
            value = value[:, :, None, None] if param == "weight" else value
        mm[f"neck.1.dyhead_blocks.{b}.{names[module]}.{param}"] = value
    assert "neck.1.dyhead_blocks.0.spatial_conv_high.norm.weight" in mm
    path = tmp_path / "mmdet.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": mm}, path)
    loaded, info = load_tower_state(path)
    assert info.kind == "mmdet" and info.prefix == "neck.1."
    assert loaded.config.coarser_branch == CoarserBranchMode.CROP and loaded.config.num_blocks == 2
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 32, s, s, generator=g) for s in (16, 8, 4, 2, 1)]
    with torch.no_grad():
        for a, b in zip(tower(feats), loaded(feats)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(UnknownLayoutError, match="load_tower_state"):
        load_detector(path)


def test_own_file_does_not_need_the_imagenet_weights_again(tmp_path):
    import torchvision

    from dyhead.backbone import BackboneConfig
    from dyhead.detector import build_detector
    from tests.dyhead.detector_fixtures import tiny_config

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    cfg = tiny_config().replace(backbone=BackboneConfig(kind="resnet_torchvision", depth=18, weights_path=str(weights)))
    model = build_detector(cfg).eval()
    path = save_checkpoint(tmp_path / "tv.pt", model)
    weights.unlink()
    loaded, info = load_detector(path)
    assert loaded.config.backbone.weights_path is None and "not read again" in info.notes[0]
    assert torch.equal(loaded.backbone.body.conv1.weight, model.backbone.body.conv1.weight)
