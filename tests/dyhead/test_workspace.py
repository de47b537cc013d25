"""Buffers kept for one inference pass: handed out again only when nobody else uses them."""

from __future__ import annotations

import torch

from dyhead.ops import workspace


def test_outside_a_workspace_every_buffer_is_new():
    like = torch.zeros(1)
    assert not workspace.active()
    assert workspace.empty((4, 5), like).shape == (4, 5)
    assert workspace.kept(like, lambda w: [w]) is not workspace.kept(like, lambda w: [w])


def test_a_buffer_is_reused_only_when_free():
    like = torch.zeros(1, dtype=torch.float64)
    with workspace.workspace():
        a = workspace.empty((3, 4), like)
        assert a.dtype == torch.float64 and a.is_contiguous()
        b = workspace.empty((3, 4), like)
        assert b.data_ptr() != a.data_ptr()  # a is alive
        c = workspace.empty((4, 3), like)  # another shape: its own buffer
        pointer_a = a.data_ptr()
        row = a[1]
        del a
        assert workspace.empty((3, 4), like).data_ptr() not in (pointer_a, b.data_ptr())  # a view holds it
        del row
        assert workspace.empty((3, 4), like).data_ptr() in (pointer_a,)  # the first free one
        assert c.shape == (4, 3)
    assert not workspace.active()


def test_nested_blocks_share_buffers_but_not_weight_copies():
    like, weight = torch.zeros(1), torch.ones(2)
    made = []
    with workspace.workspace():
        outer_copy = workspace.kept(weight, lambda w: made.append(1) or w * 2)
        with workspace.workspace():
            inner = workspace.empty((2, 2), like)
            pointer = inner.data_ptr()
            del inner
            assert workspace.kept(weight, lambda w: made.append(1) or w * 2) is not outer_copy
        assert workspace.empty((2, 2), like).data_ptr() == pointer  # the inner block's buffer
        assert workspace.kept(weight, lambda w: made.append(1) or w * 2) is outer_copy
    assert len(made) == 2
