"""Knock-out variants: calibrated constants are dataset means of the traced values, and each variant
gives the all-on output back when its constants are an image's own traced values."""

from __future__ import annotations

import pytest
import torch

from dyhead.config import AttentionSwitches, DyHeadConfig, knock_out
from dyhead.data.demo import DemoSpec, generate_split
from dyhead.knockout import KnockoutConstants, calibrate, constants_path, load_or_calibrate
from dyhead.trace import TraceSpec
from tests.analysis.conftest import tiny_detector
from tests.dyhead.test_tower import pyramid, randomized_tower

SPEC = TraceSpec(scale=True, dyrelu=True)


@pytest.fixture(scope="module")
def tower():
    return randomized_tower(DyHeadConfig(num_blocks=2, channels=32))


def own_constants(tower, features):
    """Constants computed from one image's own all-on trace."""
    assert features[0].shape[0] == 1
    with torch.no_grad():
        out, trace = tower(features, trace=SPEC)
    return out, KnockoutConstants.from_traces([trace])


def assert_same(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_constants_are_the_means_of_the_traced_values(tower):
    images = [pyramid(n=1, seed=s) for s in range(3)]
    traces = [tower(f, trace=SPEC)[1] for f in images]
    k = KnockoutConstants.from_traces(traces)
    assert k.images == 3
    level, block = 2, 1
    for src, slot in ((2, 0), (1, 1), (3, 2)):  # same, finer, coarser
        expected = torch.stack([t.blocks[block].levels[level].scale_weights[src] for t in traces]).mean()
        torch.testing.assert_close(k.scale[block, level, slot], expected)
    assert torch.isnan(k.scale[0, 0, 1]) and torch.isnan(k.scale[0, 4, 2])  # P3 has no finer, P7 no coarser
    # "calibrated": one constant per (block, level), the mean of all the level's weights
    every = torch.cat([torch.cat(list(t.blocks[block].levels[level].scale_weights.values())) for t in traces])
    got = k.scale_weights(block, level, (2, 1, 3), per_source=False, like=every)
    for v in got.values():
        torch.testing.assert_close(v, every.mean())
    a1 = torch.cat([t.blocks[0].levels[3].dyrelu.a1 for t in traces]).mean(0)
    torch.testing.assert_close(k.a1[0, 3], a1)
    # a batch of 3 gives the same means as 3 single images
    _, batched = tower([torch.cat(x) for x in zip(*images)], trace=SPEC)
    torch.testing.assert_close(KnockoutConstants.from_traces([batched]).scale, k.scale, equal_nan=True)


def test_per_source_scale_with_own_weights_is_all_on(tower):
    features = pyramid(n=1, seed=4)
    on, k = own_constants(tower, features)
    off = tower(features, switches=AttentionSwitches(scale=False, scale_off="calibrated-per-source", constants=k))
    assert_same(on, off)
    fixed = tower(features, switches=AttentionSwitches(scale=False, scale_off="fixed-1"))
    assert not torch.allclose(on[0], fixed[0], atol=1e-3)


def test_calibrated_scale_with_own_weights_is_all_on_when_a_level_weighs_its_branches_alike():
    # One constant per (block, level) is the attention itself when every branch of a level gets the
    # same weight: here 0.7 everywhere (fc = 0, bias 1.2: relu6(1.2 + 3) / 6).
    tower = randomized_tower(DyHeadConfig(num_blocks=2, channels=32))
    with torch.no_grad():
        for block in tower.blocks:
            block.scale_attention.fc.weight.zero_()
            block.scale_attention.fc.bias.fill_(1.2)
    features = pyramid(n=1, seed=5)
    on, k = own_constants(tower, features)
    torch.testing.assert_close(k.scale[~torch.isnan(k.scale)], torch.full((2 * 13,), 0.7))
    for switches in (AttentionSwitches(scale=False, constants=k), knock_out(2, 1, "scale", constants=k)):
        torch.testing.assert_close(tower(features, switches=switches), on, rtol=1e-6, atol=1e-6)
    fixed = tower(features, switches=AttentionSwitches(scale=False, scale_off="fixed-1"))
    assert not torch.allclose(on[0], fixed[0], atol=1e-3)  # weight 1 rescales what 0.7 kept


def test_static_task_with_own_coefficients_is_all_on(tower):
    features = pyramid(n=1, seed=6)
    on, k = own_constants(tower, features)
    static = AttentionSwitches(task=False, task_off="static", constants=k)
    assert_same(on, tower(features, switches=static))
    both = AttentionSwitches(scale=False, task=False, scale_off="calibrated-per-source", task_off="static",
                             constants=k)
    assert_same(on, tower(features, switches=both))
    relu = tower(features, switches=AttentionSwitches(task=False))
    assert not torch.allclose(on[0], relu[0], atol=1e-3)


def test_trace_records_the_constants_used(tower):
    features = pyramid(n=2, seed=7)
    k = KnockoutConstants.from_traces([tower(pyramid(n=1, seed=8), trace=SPEC)[1]])
    _, trace = tower(features, switches=AttentionSwitches(scale=False, task=False, task_off="static", constants=k),
                     trace=SPEC)
    lt = trace.blocks[1].levels[2]
    level_mean = k.scale[1, 2].mean()
    assert all(torch.allclose(w, level_mean.expand(2)) for w in lt.scale_weights.values())
    torch.testing.assert_close(lt.dyrelu.b2, k.b2[1, 2].expand(2, -1))


def test_calibrate_on_a_split_saves_and_reuses(tmp_path):
    root = tmp_path / "data"
    generate_split(root, "train", 3, seed=1, spec=DemoSpec(size=192))
    model = tiny_detector()
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    k = load_or_calibrate(model, checkpoint, root, "train", progress=False)
    assert constants_path(checkpoint).is_file() and k.images == 3 and k.meta["split"] == "train"
    again = load_or_calibrate(model, checkpoint, None, progress=False)  # from the file, no data needed
    torch.testing.assert_close(again.a1, k.a1)
    assert again.meta["checkpoint_sha256"] == k.meta["checkpoint_sha256"]
    # the means over the split equal the means of the traces of each image
    direct = calibrate(model, root, "train", progress=False, max_images=2)
    assert direct.images == 2
    from dyhead.preprocess import load_image

    files = sorted((root / "train").iterdir())[:2]  # image ids follow the file order in the demo data
    traces = [model.infer([load_image(f)], trace=SPEC, detections=False).trace for f in files]
    weights = torch.cat([torch.cat(list(t.blocks[1].levels[2].scale_weights.values())) for t in traces])
    level_mean = direct.scale_weights(1, 2, (2, 1, 3), per_source=False, like=weights)[2]
    torch.testing.assert_close(level_mean, weights.mean())
    torch.testing.assert_close(direct.a2[0, 1], torch.cat([t.blocks[0].levels[1].dyrelu.a2 for t in traces]).mean(0))
    with pytest.raises(FileNotFoundError, match="give a dataset"):
        load_or_calibrate(model, tmp_path / "data" / "annotations" / "instances_train.json", None)


def test_evaluate_command_names_and_calibrates_its_variant(tmp_path, capsys):
    from dyhead.checkpoint import save_checkpoint
    from dyhead.evaluate import main

    root = tmp_path / "data"
    generate_split(root, "val", 2, seed=2, spec=DemoSpec(size=192))
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", tiny_detector())
    base = ["--checkpoint", str(checkpoint), "--data", str(root), "--batch-size", "1", "--no-progress"]
    fixed = main([*base, "--attention-off", "scale", "--scale-off", "fixed-1"])
    assert fixed["knockout"] == "scale off (fixed-1)" and not constants_path(checkpoint).exists()
    calibrated = main([*base, "--attention-off", "scale,task", "--task-off", "static", "--calibration-split", "val"])
    assert calibrated["knockout"] == "scale off (calibrated), task off (static)"
    assert constants_path(checkpoint).is_file()  # computed once on val of --data, saved beside the checkpoint
    assert "scale off (calibrated), task off (static)" in capsys.readouterr().out
