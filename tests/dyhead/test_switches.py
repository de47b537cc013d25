"""Attention switches: neutral values, per-block control, no state left behind."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from dyhead.config import AttentionSwitches, DyHeadConfig, knock_out, switches_per_block
from tests.dyhead.test_tower import SIZES, pyramid, randomized_tower

OFF = AttentionSwitches.all_off(scale_off="fixed-1")  # the neutral values, no calibration


@pytest.fixture(scope="module")
def tower():
    return randomized_tower(DyHeadConfig(num_blocks=2, channels=32))


@pytest.fixture(scope="module")
def inputs():
    return pyramid()


def plain_block(block, features):
    """All three attentions at their neutral values, written out independently: ordinary 3x3 convs
    (zero offsets, masks of one), a plain mean over the branches, and ReLU."""
    outs = []
    for l, x in enumerate(features):
        branches = [block.same_level.norm(F.conv2d(x, block.same_level.conv.weight, block.same_level.conv.bias, padding=1))]
        if l > 0:
            conv = block.from_finer.conv
            branches.append(block.from_finer.norm(F.conv2d(features[l - 1], conv.weight, conv.bias, stride=2, padding=1)))
        if l < len(features) - 1:
            conv = block.from_coarser.conv
            y = block.from_coarser.norm(F.conv2d(features[l + 1], conv.weight, conv.bias, padding=1))
            branches.append(F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True))
        outs.append(F.relu(sum(branches) / len(branches)))
    return outs


def test_all_off_is_a_plain_conv_pyramid(tower, inputs):
    with torch.no_grad():
        expected = plain_block(tower.blocks[1], plain_block(tower.blocks[0], inputs))
        got = tower(inputs, switches=OFF)
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-5)


def test_neutral_values_in_the_trace(tower, inputs):
    _, trace = tower(inputs, switches=OFF, return_trace=True)
    for t in trace.blocks[0].levels:
        assert all(torch.equal(w, torch.ones(2)) for w in t.scale_weights.values())
        assert torch.count_nonzero(t.offset) == 0 and torch.all(t.mask == 1)
        assert torch.all(t.dyrelu.a1 == 1) and torch.count_nonzero(t.dyrelu.a2) == 0
        assert torch.equal(t.output, F.relu(t.after_spatial_scale))


def test_scale_off_averages_the_same_branches(tower, inputs):
    _, on = tower(inputs, return_trace=True)
    _, off = tower(inputs, switches=AttentionSwitches(scale=False, scale_off="fixed-1"), return_trace=True)
    t_on, t_off = on.blocks[0].levels[2], off.blocks[0].levels[2]
    for src in (1, 2, 3):  # the spatial step is unchanged, only the weights become 1
        assert torch.equal(t_on.branches[src], t_off.branches[src])
    plain_mean = sum(t_on.branches.values()) / 3
    assert torch.allclose(t_off.after_spatial_scale, plain_mean, atol=1e-6)
    assert not torch.allclose(t_on.after_spatial_scale, plain_mean, atol=1e-3)


def test_spatial_off_equals_zero_offsets_and_unit_masks(tower, inputs):
    from dyhead.ops import modulated_deform_conv2d

    _, off = tower(inputs, switches=AttentionSwitches(spatial=False), return_trace=True)
    block, x = tower.blocks[0], inputs[1]
    zeros, ones = torch.zeros(2, 18, *SIZES[1]), torch.ones(2, 9, *SIZES[1])
    deform = modulated_deform_conv2d(x, zeros, ones, block.same_level.conv.weight, block.same_level.conv.bias)
    assert torch.allclose(off.blocks[0].levels[1].branches[1], block.same_level.norm(deform), atol=1e-5)


def test_task_off_is_relu(tower, inputs):
    _, trace = tower(inputs, switches=AttentionSwitches(task=False), return_trace=True)
    _, on = tower(inputs, return_trace=True)
    t = trace.blocks[0].levels[0]
    assert torch.equal(t.output, F.relu(t.after_spatial_scale))
    assert torch.equal(t.after_spatial_scale, on.blocks[0].levels[0].after_spatial_scale)
    assert not torch.allclose(on.blocks[0].levels[0].output, F.relu(t.after_spatial_scale), atol=1e-3)


def test_per_block_switches(tower, inputs):
    _, on = tower(inputs, return_trace=True)
    _, second_off = tower(inputs, switches=knock_out(2, 1, "scale", scale_off="fixed-1"), return_trace=True)
    for a, b in zip(on.blocks[0].levels, second_off.blocks[0].levels):
        assert torch.equal(a.output, b.output)  # block 0 untouched
    assert all(torch.equal(w, torch.ones(2)) for w in second_off.blocks[1].levels[0].scale_weights.values())
    assert not torch.equal(on.blocks[1].levels[0].output, second_off.blocks[1].levels[0].output)


def test_off_and_on_again_is_bit_identical(tower, inputs):
    first = tower(inputs)
    for switches in (OFF, AttentionSwitches(spatial=False), knock_out(2, 0, "task")):
        tower(inputs, switches=switches)
    again = tower(inputs)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_concurrent_calls_do_not_see_each_others_switches(tower, inputs):
    settings = [AttentionSwitches(), OFF, AttentionSwitches(scale=False, scale_off="fixed-1"), knock_out(2, 1, "spatial")]
    expected = [tower(inputs, switches=s) for s in settings]
    results: dict[tuple[int, int], list] = {}

    def worker(i):
        for rep in range(3):
            results[(i, rep)] = tower(inputs, switches=settings[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(settings))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (i, _), got in results.items():
        assert all(torch.equal(a, b) for a, b in zip(expected[i], got))


def test_switch_argument_validation():
    assert switches_per_block(None, 3) == (AttentionSwitches(),) * 3
    assert switches_per_block(OFF, 2) == (OFF, OFF)
    with pytest.raises(ValueError, match="one per block"):
        switches_per_block([OFF], 2)
    with pytest.raises(ValueError, match="unknown attention"):
        knock_out(2, 0, "channel")
    assert AttentionSwitches(spatial=False).label == "scale+task"
    assert OFF.label == "none"
    assert OFF.description == "scale off (fixed-1), spatial off (zero-offsets), task off (relu)"
    with pytest.raises(ValueError, match="scale_off"):
        AttentionSwitches(scale=False, scale_off="one")


def test_calibrated_variants_need_constants(tower, inputs):
    for switches in (AttentionSwitches(scale=False), AttentionSwitches(task=False, task_off="static")):
        assert switches.needs_constants
        with pytest.raises(ValueError, match="knock-out constants"):
            tower(inputs, switches=switches)
    assert not AttentionSwitches(task=False).needs_constants
