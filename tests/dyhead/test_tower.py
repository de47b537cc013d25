"""The DyHead tower: parity with the official golden data, shapes, coarser-branch modes, build flags."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dyhead.block import _coarser_offsets
from dyhead.config import AttentionSwitches, CoarserBranchMode, DyHeadConfig
from dyhead.conformance.tower import compare_tower, level_names, tower_config
from dyhead.tower import DyHeadTower
from dyhead.weights import official_tower_key_map
from tests.conftest import TEST_DATA

SIZES = [(25, 38), (13, 19), (7, 10), (4, 5), (2, 3)]  # odd on purpose: ceil halving


def pyramid(n=2, c=32, sizes=SIZES, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, h, w, generator=g, dtype=dtype) for h, w in sizes]


def randomized_tower(config: DyHeadConfig, seed=0, dtype=torch.float32) -> DyHeadTower:
    """A tower whose attentions are all far from neutral (default init makes DyReLU ~ ReLU)."""
    torch.manual_seed(seed)
    tower = DyHeadTower(config).to(dtype)
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if "spatial_offsets" in name:
                p.normal_(0, 0.05 if "weight" in name else 0.5)
            elif "scale_attention" in name:
                p.normal_(0, 0.2) if "weight" in name else p.fill_(1.0)
            elif "norm.weight" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.1)
    return tower.eval()


# --- parity with the official implementation --------------------------------------------------


def test_full_golden_float64_exact(conformance_dir):
    golden = torch.load(conformance_dir / "dyhead_tower_golden.pt", weights_only=True)
    rows = compare_tower(golden, dtype=torch.float64)
    assert len(rows) == 174
    assert max(r.max_abs_diff for r in rows) <= 1e-9


def test_full_golden_float32_within_round_off(conformance_dir):
    golden = torch.load(conformance_dir / "dyhead_tower_golden.pt", weights_only=True)
    rows = compare_tower(golden, dtype=torch.float32)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok][:3]


def test_golden_excerpt_in_repo_matches():
    """Runs without the conformance kit: block 0 of the official golden, first image, float32."""
    golden = torch.load(TEST_DATA / "tower_golden_block0_image0.pt", weights_only=True)
    assert tower_config(golden, CoarserBranchMode.OFFICIAL).num_blocks == 1
    rows = compare_tower(golden, dtype=torch.float64, atol=2e-5)
    outputs = [r for r in rows if r.name.endswith("output")]
    assert len(outputs) == 5 and all(r.ok for r in rows)
    # The excerpt discriminates: a plausible mistake (crop instead of the raw read) is far off.
    crop = compare_tower(golden, dtype=torch.float64, mode=CoarserBranchMode.CROP, atol=2e-5)
    assert max(r.max_abs_diff for r in crop if r.name.endswith("output")) > 0.1


def test_config_inferred_from_keys_for_other_depths_and_levels():
    """A golden of another depth/width/level count: config comes from the keys and shapes."""
    config = DyHeadConfig(num_blocks=3, channels=32, num_levels=3)
    tower = randomized_tower(config, dtype=torch.float64)
    inputs = pyramid(c=32, sizes=[(9, 11), (5, 6), (3, 3)], dtype=torch.float64)
    names = ["p2", "p3", "p4"]
    with torch.no_grad():
        outputs, trace = tower(inputs, return_trace=True)
    golden = {f"inputs.{n}": x for n, x in zip(names, inputs)}
    state = tower.state_dict()
    golden |= {f"state_dict.dyhead_tower.{theirs}": state[ours] for ours, theirs in official_tower_key_map(3).items()}
    for b, block in enumerate(trace.blocks):
        for l, n in enumerate(names):
            golden[f"block{b}.{n}"] = block.levels[l].output
    assert level_names(golden) == names
    assert tower_config(golden, CoarserBranchMode.OFFICIAL) == config
    rows = compare_tower(golden)
    assert len(rows) == 9 and all(r.max_abs_diff == 0 for r in rows)


# --- shapes and structure ---------------------------------------------------------------------


@pytest.mark.parametrize("num_levels,batch", [(2, 1), (3, 3), (5, 2)])
def test_odd_sizes_any_level_count_and_batch(num_levels, batch):
    config = DyHeadConfig(num_blocks=2, channels=16, num_levels=num_levels)
    tower = randomized_tower(config)
    inputs = pyramid(n=batch, c=16, sizes=SIZES[:num_levels])
    outputs, trace = tower(inputs, return_trace=True)
    assert [o.shape for o in outputs] == [x.shape for x in inputs]
    level = trace.blocks[1].levels[num_levels - 1]
    assert set(level.scale_weights) == {num_levels - 1, num_levels - 2}
    assert level.offset.shape == (batch, 18, *SIZES[num_levels - 1])
    assert level.dyrelu.a1.shape == (batch, 16)


def test_trace_values_are_consistent_with_the_output():
    tower = randomized_tower(DyHeadConfig(num_blocks=2, channels=32))
    inputs = pyramid()
    outputs, trace = tower(inputs, return_trace=True)
    assert [len(b.levels) for b in trace.blocks] == [5, 5]
    for l, t in enumerate(trace.blocks[0].levels):
        expected_sources = {s for s in (l - 1, l, l + 1) if 0 <= s < 5}
        assert set(t.scale_weights) == expected_sources
        for src, w in t.scale_weights.items():
            assert torch.all((w >= 0.5) & (w <= 1.0))  # ReLU before relu6(x+3)/6
            assert torch.allclose(w, torch.clamp((t.scale_logits[src] + 3) / 6, 0, 1))
        weighted = [t.branches[s] * t.scale_weights[s][:, None, None, None] for s in t.scale_weights]
        assert torch.allclose(t.after_spatial_scale, torch.stack(weighted).mean(0), atol=1e-6)
        c = t.dyrelu
        manual = torch.maximum(t.after_spatial_scale * c.a1[..., None, None] + c.b1[..., None, None],
                               t.after_spatial_scale * c.a2[..., None, None] + c.b2[..., None, None])
        assert torch.equal(manual, t.output)
        assert torch.all((c.a1 >= 0) & (c.a1 <= 2) & (c.a2 >= -1) & (c.a2 <= 1))
        assert torch.all(t.mask > 0) and torch.all(t.mask < 1)
    assert torch.equal(trace.blocks[0].levels[3].output, trace.blocks[1].levels[3].output) is False
    assert all(torch.equal(o, t.output) for o, t in zip(outputs, trace.blocks[1].levels))
    assert all(torch.equal(i, x) for i, x in zip(trace.inputs, inputs))


def test_pyramid_that_does_not_halve_by_ceil_is_refused():
    tower = randomized_tower(DyHeadConfig(num_blocks=1, channels=16, num_levels=2))
    with pytest.raises(ValueError, match="halve by ceil"):
        tower(pyramid(c=16, sizes=[(10, 10), (4, 4)]))


def test_wrong_inputs_are_refused_with_a_clear_message():
    tower = randomized_tower(DyHeadConfig(num_blocks=1, channels=16, num_levels=3))
    with pytest.raises(ValueError, match="3 levels"):
        tower(pyramid(c=16, sizes=SIZES[:2]))
    with pytest.raises(ValueError, match="expected"):
        tower(pyramid(c=32, sizes=SIZES[:3]))
    with pytest.raises(ValueError, match="multiple of norm_groups"):
        DyHeadConfig(channels=24)
    with pytest.raises(ValueError, match="at least 2"):
        DyHeadConfig(num_levels=1)


# --- the coarser-branch quirk -----------------------------------------------------------------


def test_official_reading_is_the_raw_buffer_and_crop_the_corner():
    offset = torch.arange(2 * 18 * 4 * 6, dtype=torch.float32).reshape(2, 18, 4, 6)
    mask = torch.arange(2 * 9 * 4 * 6, dtype=torch.float32).reshape(2, 9, 4, 6)
    off, m = _coarser_offsets(offset, mask, (2, 3), CoarserBranchMode.OFFICIAL)
    # The first 18*2*3 values of image 1's buffer, never image 0's.
    assert torch.equal(off[1].flatten(), offset[1].flatten()[: 18 * 6])
    assert torch.equal(off[1, 1], offset[1, 0].flatten()[6:12].reshape(2, 3))
    assert torch.equal(m[0].flatten(), mask[0].flatten()[: 9 * 6])
    off, m = _coarser_offsets(offset, mask, (2, 3), CoarserBranchMode.CROP)
    assert torch.equal(off, offset[:, :, :2, :3]) and torch.equal(m, mask[:, :, :2, :3])


def test_three_coarser_modes_differ_only_in_the_coarser_branch():
    inputs = pyramid()
    outs, traces = {}, {}
    for mode in CoarserBranchMode:
        tower = randomized_tower(DyHeadConfig(num_blocks=1, channels=32, coarser_branch=mode))
        outs[mode], traces[mode] = tower(inputs, return_trace=True)
    official, crop, first = (traces[m].blocks[0].levels for m in CoarserBranchMode)
    for l in range(4):  # every level with a coarser neighbour
        assert torch.equal(official[l].branches[l], crop[l].branches[l])  # same-level branch unaffected
        assert not torch.allclose(official[l].branches[l + 1], crop[l].branches[l + 1], atol=1e-3)
        assert not torch.allclose(official[l].branches[l + 1], first[l].branches[l + 1], atol=1e-3)
    # P7 has no coarser neighbour, but reads the other branches from the same inputs.
    assert torch.equal(official[4].branches[3], crop[4].branches[3])


def test_upsample_first_is_the_natural_order():
    config = DyHeadConfig(num_blocks=1, channels=16, num_levels=2, coarser_branch="upsample_first")
    tower = randomized_tower(config)
    fine, coarse = pyramid(c=16, sizes=[(9, 7), (5, 4)])
    _, trace = tower([fine, coarse], return_trace=True)
    t = trace.blocks[0].levels[0]
    block = tower.blocks[0]
    upsampled = F.interpolate(coarse, size=(9, 7), mode="bilinear", align_corners=True)
    expected = block.from_coarser(upsampled, t.offset, t.mask)
    assert torch.allclose(t.branches[1], expected, atol=1e-6)


# --- build-time ablations ---------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["scale", "spatial", "task"])
def test_build_flag_leaves_the_attention_out(attention):
    full = randomized_tower(DyHeadConfig(num_blocks=2, channels=16, num_levels=3))
    config = DyHeadConfig(num_blocks=2, channels=16, num_levels=3, **{f"use_{attention}_attention": False})
    ablated = DyHeadTower(config)
    missing = ablated.load_state_dict(full.state_dict(), strict=False)
    prefix = {"scale": "scale_attention", "spatial": "spatial_offsets", "task": "task_attention"}[attention]
    assert missing.missing_keys == [] and missing.unexpected_keys
    assert all(prefix in k for k in missing.unexpected_keys)
    inputs = pyramid(c=16, sizes=SIZES[:3])
    switched_off = full(inputs, switches=AttentionSwitches(**{attention: False}, scale_off="fixed-1"))  # not built = weights 1
    assert all(torch.equal(a, b) for a, b in zip(ablated.eval()(inputs), switched_off))


def test_key_map_covers_the_tower_exactly():
    tower = DyHeadTower(DyHeadConfig(num_blocks=6, channels=32))
    assert set(tower.state_dict()) == set(official_tower_key_map(6))
    assert official_tower_key_map(1)["blocks.0.from_finer.norm.weight"] == "0.DyConv.2.bn.weight"


@pytest.mark.parametrize("batch", [1, 2])
def test_inference_path_is_bit_identical_to_the_autograd_path(batch):
    """Without autograd the block writes its weighted mean and DyReLU in place (into the branches
    and the mean, when no trace keeps them); the numbers must not change (same operations, same
    order), neither with a trace that keeps branches and mean (which turns the reuse off)."""
    torch.manual_seed(0)
    tower = DyHeadTower(DyHeadConfig(num_blocks=2, channels=32)).eval()
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.1)  # offsets and weights far from the zero init
    feats = [torch.randn(batch, 32, h, w) for h, w in [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]]
    with torch.inference_mode():
        fast = tower(feats)
        traced, trace = tower(feats, return_trace=True)
    slow = tower([f.clone().requires_grad_(True) for f in feats])
    for a, b, c in zip(fast, slow, traced):
        assert torch.equal(a, b.detach())
        assert torch.equal(a, c)
    # The trace's kept maps were not overwritten by the in-place steps that followed them.
    level = trace.blocks[-1].levels[1]  # P4: same (1), finer (0) and coarser (2) branches
    assert list(level.branches) == [1, 0, 2]
    total = None
    for src, branch in level.branches.items():
        term = branch * level.scale_weights[src][:, None, None, None]
        total = term if total is None else total + term
    assert torch.equal(level.after_spatial_scale, total / 3)
