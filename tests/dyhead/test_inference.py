"""The detector's public inference API: one pass, exactly the intermediates a TraceSpec asks for,
per-call switches and coarser-branch mode, the one autocast policy."""

from __future__ import annotations

import pytest
import torch

from dyhead.config import AttentionSwitches, CoarserBranchMode
from dyhead.device import inference_autocast, inference_dtype
from dyhead.trace import TraceSpec
from tests.dyhead.detector_fixtures import make_image, tiny_detector


@pytest.fixture(scope="module")
def model():
    return tiny_detector(num_blocks=3)


@pytest.fixture(scope="module")
def image():
    return make_image(120, 150, seed=3)


def _same_detections(a, b):
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.boxes, b.boxes, rtol=0, atol=0)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)


def test_infer_is_one_pass_and_matches_predict(model, image, network_passes):
    result = model.infer([image], trace=TraceSpec.everything())
    assert len(network_passes) == 1
    assert result.trace is not None and result.head_outputs is None
    _same_detections(result.detections[0], model.predict([image])[0])
    assert result.original_sizes == [image.shape[:2]]
    h, w = result.resized_sizes[0]
    assert result.input_size[0] % 128 == 0 and result.input_size[0] >= h and result.input_size[1] >= w
    assert result.seconds > 0 and result.device == "cpu"


def test_trace_holds_only_what_the_spec_asks_for(model, image):
    scale_only = model.infer([image], trace=TraceSpec(scale=True), detections=False)
    assert scale_only.detections is None
    t = scale_only.trace
    assert t.inputs == [] and len(t.blocks) == 3
    for block in t.blocks:
        assert len(block.levels) == 5
        for level, lt in enumerate(block.levels):
            expected_sources = {level} | ({level - 1} if level > 0 else set()) | ({level + 1} if level < 4 else set())
            assert set(lt.scale_weights) == expected_sources
            assert all(v.shape == (1,) for v in lt.scale_weights.values())
            assert lt.offset is None and lt.mask is None and lt.dyrelu is None
            assert lt.output is None and lt.after_spatial_scale is None and lt.branches == {}

    one_block = model.infer([image], trace=TraceSpec(spatial=(1,), dyrelu=[2]), detections=False).trace
    assert one_block.blocks[0].levels == []
    assert all(lt.offset is not None and lt.offset.shape[1] == 18 and lt.dyrelu is None
               for lt in one_block.blocks[1].levels)
    assert all(lt.offset is None and lt.dyrelu is not None and lt.scale_weights == {}
               for lt in one_block.blocks[2].levels)

    # the scale weights are the same numbers the full trace records
    full = model.infer([image], trace=TraceSpec.everything(), detections=False).trace
    for b in range(3):
        for lt_a, lt_b in zip(t.blocks[b].levels, full.blocks[b].levels):
            for src in lt_b.scale_weights:
                assert torch.equal(lt_a.scale_weights[src], lt_b.scale_weights[src])


def test_reduced_and_cropped_feature_maps(model, image):
    full = model.infer([image], trace=TraceSpec(outputs=True, pyramid=True), detections=False)
    seen = []

    def reduce(x, level):
        seen.append(tuple(x.shape))
        return x.abs().mean(1)  # [N, h, w]

    reduced = model.infer([image], trace=TraceSpec(outputs=True, pyramid=True, crop=True, reduce=reduce),
                          detections=False)
    cells = reduced.level_cells(0, model.config.strides)
    padded = [tuple(x.shape[-2:]) for x in full.trace.inputs]
    assert any(c != p for c, p in zip(cells, padded))  # the crop removes padding cells
    for level, (h, w) in enumerate(cells):
        assert tuple(reduced.trace.inputs[level].shape) == (1, h, w)
        expected = full.trace.blocks[2].levels[level].output[:, :, :h, :w].abs().mean(1)
        torch.testing.assert_close(reduced.trace.blocks[2].levels[level].output, expected)
    assert len(seen) == 5 + 3 * 5  # pyramid + every block's outputs, each reduced once


def test_switches_and_coarser_mode_are_per_call(model, image):
    off = model.infer([image], switches=AttentionSwitches(scale=False, scale_off="fixed-1"), trace=TraceSpec(scale=True)).trace
    assert all(float(v) == 1.0 for b in off.blocks for lt in b.levels for v in lt.scale_weights.values())

    batch, _, _ = model.preprocess([image])
    crop_cfg = model.config.replace(tower=model.config.tower.__class__(
        **{**model.config.tower.to_dict(), "coarser_branch": "crop"}))
    built = type(model)(crop_cfg).eval()
    built.load_state_dict(model.state_dict())
    with torch.inference_mode():
        expected = built(batch).features
        per_call = model(batch, coarser_branch=CoarserBranchMode.CROP).features
        official = model(batch).features
    for a, b in zip(per_call, expected):
        assert torch.equal(a, b)
    assert not torch.equal(per_call[0], official[0])  # the mode changes the result
    assert model.config.tower.coarser_branch is CoarserBranchMode.OFFICIAL  # and nothing is stored
    via_infer = model.infer([image], coarser_branch="crop", trace=TraceSpec(outputs=True), detections=False)
    assert torch.equal(via_infer.trace.blocks[-1].levels[0].output, expected[0])


def test_autocast_policy():
    assert inference_dtype("cpu") is None and inference_dtype("cpu", "bfloat16") is torch.bfloat16
    assert inference_dtype("cuda") is torch.float16 and inference_dtype("cuda", "float32") is None
    with pytest.raises(ValueError, match="precision"):
        inference_dtype("cpu", "fp8")
    with inference_autocast("cpu", "bfloat16"):
        assert torch.is_autocast_enabled("cpu")


def test_bfloat16_on_cpu_runs_in_bfloat16(model, image):
    """bfloat16 autocast really runs (FPN features within bfloat16's ~1 % of float32). Deeper in the
    tower the offsets' rounding moves sampling points, so it is opt-in (benchmarks measure it)."""
    ref = model.infer([image], trace=TraceSpec(pyramid=True, outputs=True), detections=False).trace
    bf = model.infer([image], trace=TraceSpec(pyramid=True, outputs=True), detections=False, precision="bfloat16").trace
    assert bf.blocks[0].levels[0].output.dtype == torch.bfloat16
    a, b = ref.inputs[0], bf.inputs[0].float()
    rel = float((a - b).abs().max() / a.abs().max())
    assert 0 < rel < 0.05


def test_infer_refuses_training_mode_and_no_images(image):
    m = tiny_detector(num_blocks=1).train()
    with pytest.raises(RuntimeError, match="eval mode"):
        m.infer([image])
    with pytest.raises(ValueError, match="at least one image"):
        m.eval().infer([])
