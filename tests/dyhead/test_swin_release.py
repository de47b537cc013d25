"""The official ATSS + DyHead Swin-T release (dyhead_swint_atss_fpn_2x_ms): loading a file with exactly
its keys (random values from the kit's key manifest), errors that name the key, inference, and the
end-to-end golden of conformance README section 12."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dyhead.checkpoint import (MissingKeysError, UnexpectedKeysError, detector_from_official_state_dict, load_detector,
                               official_key_map)
from dyhead.conformance.__main__ import main as conformance_main
from dyhead.conformance.detector import compare_detector, golden_threads
from dyhead.weights import CheckpointError, detect_layout, read_checkpoint
from dyhead.weights.manifest import read_manifest, save_random_release, state_from_manifest

MANIFEST = "official_atss_swint_dyhead_keys.json"
GOLDEN = "official_swint_atss_e2e_golden.pt"
BOTTOM_UP = "backbone.backbone.bottom_up."


@pytest.fixture(scope="module")
def release_file(conformance_dir, tmp_path_factory):
    return save_random_release(conformance_dir / MANIFEST, tmp_path_factory.mktemp("swint") / "swint_random.pth")


@pytest.fixture(scope="module")
def release(release_file):
    return load_detector(release_file)


def test_the_release_layout_is_recognised_and_loads_with_every_key(conformance_dir, release_file, release):
    kind, tensors = detect_layout(read_checkpoint(release_file))
    assert kind == "detectron2" and len(tensors) == 334
    model, info = release
    bb = model.config.backbone
    assert (bb.kind, bb.swin_embed_dim, bb.swin_depths, bb.swin_num_heads, bb.swin_window_size, bb.swin_mlp_ratio) == (
        "swin", 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 4.0)
    assert bb.swin_out_features == ("stage3", "stage4", "stage5")
    assert (bb.pixel_format, bb.pixel_mean, bb.pixel_std) == ("RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    assert (model.config.fpn_channels, model.config.tower.num_blocks, model.config.num_classes) == (256, 6, 80)
    # Our model holds exactly the manifest's names and shapes, and the file's values.
    key_map = official_key_map(model)
    manifest = read_manifest(conformance_dir / MANIFEST)
    ours = {key_map[k]: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest
    assert sum(p.numel() for p in model.parameters()) == 42_341_244  # the manifest's parameter count
    state = model.state_dict()
    name = "backbone.body.layers.2.blocks.5.mlp.0.weight"
    assert key_map[name] == BOTTOM_UP + "layers.2.blocks.5.mlp.fc1.weight"
    assert torch.equal(state[name], tensors[key_map[name]])
    assert info.kind == "detectron2" and not info.notes


def test_a_removed_or_added_key_is_named(conformance_dir, tmp_path):
    state = state_from_manifest(conformance_dir / MANIFEST)
    removed = BOTTOM_UP + "layers.2.blocks.5.attn.relative_position_bias_table"
    torch.save({"model": {k: v for k, v in state.items() if k != removed}}, tmp_path / "missing.pth")
    with pytest.raises(MissingKeysError, match=r"layers\.2\.blocks\.5\.attn\.relative_position_bias_table") as err:
        load_detector(tmp_path / "missing.pth")
    assert err.value.keys == [removed]

    extra = BOTTOM_UP + "absolute_pos_embed"
    torch.save({"model": dict(state, **{extra: torch.zeros(1, 96, 56, 56)})}, tmp_path / "extra.pth")
    with pytest.raises(UnexpectedKeysError, match="absolute_pos_embed") as err:
        load_detector(tmp_path / "extra.pth")
    assert err.value.keys == [extra]


def test_a_wrong_relative_position_index_is_refused(conformance_dir):
    golden = torch.load(conformance_dir / GOLDEN, map_location="cpu", weights_only=True)
    state = {k[len("state_dict."):]: v for k, v in golden.items() if k.startswith("state_dict.")}
    key = BOTTOM_UP + "layers.1.blocks.0.attn.relative_position_index"
    state[key] = state[key].flip(0)
    with pytest.raises(CheckpointError, match=r"layers\.1\.blocks\.0\.attn\.relative_position_index"):
        detector_from_official_state_dict(state, "golden")


def test_predict_runs_on_the_full_size_release(release_file):
    """A 128-pixel side gives stage5 a 4 x 4 grid, one padded window (shifted and masked)."""
    model, _ = load_detector(release_file, min_size=128, max_size=256)
    image = np.random.default_rng(0).integers(0, 256, (96, 200, 3), dtype=np.uint8)
    result = model.infer([image], keep_head_outputs=True)
    assert result.input_size == (128, 256)
    assert [tuple(c.shape) for c in result.head_outputs.bottom_up] == [(1, 192, 16, 32), (1, 384, 8, 16), (1, 768, 4, 8)]
    (dets,) = result.detections
    assert dets.boxes.shape[1] == 4 and len(dets) <= 100
    assert torch.isfinite(dets.boxes).all() and (dets.boxes[:, 2] <= 200).all() and (dets.boxes[:, 3] <= 96).all()


# ---- end-to-end golden (conformance README section 12)


@pytest.fixture(scope="module")
def golden(conformance_dir):
    return torch.load(conformance_dir / GOLDEN, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def meta(conformance_dir):
    return json.loads((conformance_dir / GOLDEN).with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def checks(golden, meta):
    assert golden_threads(meta) == 1  # the Swin-T golden was computed with one thread
    return compare_detector(golden, meta, threads=golden_threads(meta))


def test_golden_every_check_passes(checks):
    failed = [f"{c.name}: {c.max_abs_diff:.3e} ({c.detail})" for c in checks if not c.ok]
    assert not failed, failed
    names = {c.name for c in checks}
    assert {"swin.stage2", "swin.stage5", "stage3", "stage4", "stage5"} <= names


def test_golden_swin_is_bit_exact_and_detections_match(checks):
    backbone = {c.name: c.max_abs_diff for c in checks if c.section == "backbone"}
    assert backbone == {"swin.stage2": 0.0, "swin.stage5": 0.0, "stage3": 0.0, "stage4": 0.0, "stage5": 0.0}
    assert all(c.max_abs_diff == 0.0 for c in checks if c.section in ("input", "anchors", "fpn", "postprocess"))
    final = next(c for c in checks if c.name == "det (our network)")
    assert final.detail.startswith("57 dets") and final.max_abs_diff <= 1e-3
    candidates = next(c for c in checks if c.section == "prenms")
    assert "90 candidates [61, 14, 4, 2, 9]" in candidates.detail


def test_golden_conformance_cli_exits_zero(conformance_dir, capsys):
    assert conformance_main([str(conformance_dir / GOLDEN)]) == 0
    out = capsys.readouterr().out
    assert "swin.stage5" in out and "Pillow resize of input.original_rgb" in out and out.rstrip().endswith("PASS")
