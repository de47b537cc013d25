"""The Swin backbone of the official Swin-T release (dyhead.swin): the official window attention
and where it differs from torchvision's, the index and mask layouts, padding, stage outputs, config."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.swin_transformer import ShiftedWindowAttention, shifted_window_attention

from dyhead.backbone import BackboneConfig, build_backbone
from dyhead.swin import PatchEmbed, SwinTransformer, WindowAttention, relative_position_index, shift_mask


def test_relative_position_index_is_the_official_formula_in_the_official_shape():
    index = relative_position_index(7)
    assert index.shape == (49, 49) and index.dtype == torch.int64
    # tokens (y1, x1) = (0, 0) and (y2, x2) = (6, 6): (0 - 6 + 6) * 13 + (0 - 6 + 6) = 0
    assert index[0, 48] == 0 and index[48, 0] == 168 and index[0, 0] == 6 * 13 + 6
    # (y1, x1) = (1, 2) is token 9, (y2, x2) = (3, 0) is token 21: (1 - 3 + 6) * 13 + (2 - 0 + 6) = 60
    assert index[9, 21] == 60
    tv = ShiftedWindowAttention(8, [7, 7], [0, 0], 2)
    assert torch.equal(index.flatten(), tv.relative_position_index)  # same values, flattened there


def test_shift_mask_regions_on_the_padded_grid():
    mask = shift_mask(14, 14, 7, 3)  # 2 x 2 windows
    assert mask.shape == (4, 49, 49)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all()  # the top-left window lies in one region
    # bottom-right window: rows 7..10 / 11..13 and the same columns -> 4 regions of 16, 12, 12, 9 tokens
    assert int((mask[3] == 0).sum()) == 16 * 16 + 12 * 12 * 2 + 9 * 9
    # a single window still has its regions (the official code shifts there too)
    assert (shift_mask(7, 7, 7, 3)[0] == -100).any()


def _attention(dim=16, heads=2, shift=0):
    torch.manual_seed(0)
    attn = WindowAttention(dim, [7, 7], [shift, shift], heads).eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()  # large, so a wrong index shows
    return attn


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("size", [(14, 14), (12, 17), (9, 20)])
def test_window_attention_equals_torchvision_where_the_grid_spans_several_windows(shift, size):
    attn = _attention(shift=shift)
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        ours = attn(x)
        theirs = shifted_window_attention(
            x, attn.qkv.weight, attn.proj.weight, attn.get_relative_position_bias(), [7, 7], 2, [shift, shift],
            qkv_bias=attn.qkv.bias, proj_bias=attn.proj.bias, training=False,
        )
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_window_attention_still_shifts_a_single_padded_window_unlike_torchvision():
    """A 4 x 4 grid (stage5 of a 128-pixel side) pads to one 7 x 7 window: the official block rolls
    and masks; torchvision turns the shift off there."""
    attn = _attention(shift=3)
    x = torch.randn(1, 4, 4, 16)
    with torch.no_grad():
        ours = attn(x)
        unshifted = _attention(shift=0)(x)
        tv = shifted_window_attention(
            x, attn.qkv.weight, attn.proj.weight, attn.get_relative_position_bias(), [7, 7], 2, [3, 3],
            qkv_bias=attn.qkv.bias, proj_bias=attn.proj.bias, training=False,
        )
    torch.testing.assert_close(tv, unshifted)
    assert (ours - tv).abs().max() > 1e-2


def test_padded_tokens_take_part_as_keys():
    """Window padding happens after norm1 and the zero tokens are not masked (README 12.3 step 4):
    one 6 x 6 grid padded to a 7 x 7 window, written out by hand with and without masking them."""
    attn = _attention()
    x = torch.randn(1, 6, 6, 16)
    with torch.no_grad():
        ours = attn(x)
        tokens = torch.nn.functional.pad(x, (0, 0, 0, 1, 0, 1)).reshape(1, 49, 16)
        q, k, v = attn.qkv(tokens).reshape(1, 49, 3, 2, 8).permute(2, 0, 3, 1, 4)  # q | k | v, heads x 8
        logits = (q * 8**-0.5) @ k.transpose(-2, -1) + attn.get_relative_position_bias()  # [1, 2, 49, 49]
        padded = torch.ones(7, 7, dtype=torch.bool)
        padded[:6, :6] = False

        def attend(lg):
            out = attn.proj((lg.softmax(-1) @ v).transpose(1, 2).reshape(1, 49, 16))
            return out.reshape(1, 7, 7, 16)[:, :6, :6]

        unmasked = attend(logits)
        masked = attend(logits.masked_fill(padded.flatten(), float("-inf")))
    torch.testing.assert_close(ours, unmasked, rtol=0, atol=1e-6)
    assert (ours - masked).abs().max() > 1e-2


def test_patch_embedding_pads_right_and_bottom_to_the_patch_size():
    embed = PatchEmbed(8)
    x = torch.randn(1, 3, 30, 33)
    out = embed(x)
    assert out.shape == (1, 8, 9, 8)  # [N, ceil(30/4), ceil(33/4), C]
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2))
    torch.testing.assert_close(out, embed(padded))


def test_stage_outputs_norms_and_names():
    swin = SwinTransformer(embed_dim=24, depths=(2, 2, 2, 2)).eval()
    names = [k for k in swin.state_dict() if not k.startswith("layers.")]
    assert names == ["patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight",
                     "patch_embed.norm.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
                     "norm3.weight", "norm3.bias"]  # no norm0: stage2 is not an output
    assert swin.out_channels == [48, 96, 192] and swin.strides == [8, 16, 32]
    block = swin.layers[1].blocks[1]
    assert block.attn.shift_size == [3, 3] and swin.layers[1].blocks[0].attn.shift_size == [0, 0]
    assert swin.layers[3].downsample is None
    x = torch.randn(1, 3, 100, 132)
    with torch.no_grad():
        raw, outs = swin.forward_stages(x)
    assert [tuple(r.shape[1:]) for r in raw] == [(24, 25, 33), (48, 13, 17), (96, 7, 9), (192, 4, 5)]
    assert [tuple(o.shape) for o in outs] == [(1, 48, 13, 17), (1, 96, 7, 9), (1, 192, 4, 5)]
    expected = swin.norm3(raw[3].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(outs[2], expected)


def test_drop_path_is_off_at_inference():
    swin = SwinTransformer(embed_dim=24, depths=(2, 2, 2, 2), drop_path_rate=0.5)
    x = torch.randn(1, 3, 64, 64)
    swin.train()
    with torch.no_grad():
        a, b = swin(x)[2], swin(x)[2]
    assert not torch.equal(a, b)  # stochastic depth drops residual branches while training
    swin.eval()
    with torch.no_grad():
        assert torch.equal(swin(x)[2], swin(x)[2])


def test_swin_backbone_config_round_trip_and_fpn():
    cfg = BackboneConfig(kind="swin", swin_embed_dim=24)
    assert cfg.pixel_format == "RGB" and cfg.pixel_std == (58.395, 57.12, 57.375)
    assert BackboneConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="stage3, stage4 and stage5"):
        BackboneConfig(kind="swin", swin_out_features=("stage2", "stage3", "stage4", "stage5"))
    with pytest.raises(ValueError, match="head counts"):
        BackboneConfig(kind="swin", swin_embed_dim=20)
    backbone = build_backbone(cfg, 16).eval()
    with torch.no_grad():
        c, p = backbone.forward_features(torch.randn(1, 3, 128, 256))
    assert [tuple(t.shape[1:]) for t in c] == [(48, 16, 32), (96, 8, 16), (192, 4, 8)]
    assert [tuple(t.shape[2:]) for t in p] == [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
