"""The fast modulated deformable conv against torchvision's `deform_conv2d` (values and gradients)."""

import pytest
import torch
from torchvision.ops import deform_conv2d

from dyhead.ops import deform_conv, workspace
from dyhead.ops.deform_conv import (
    DeformConvInputError,
    get_default_impl,
    modulated_deform_conv2d,
    resolve_impl,
    set_default_impl,
)


def _make_case(n, c_in, c_out, h, w, stride, dtype, offset_kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    h_out = (h + 2 - 3) // stride + 1
    w_out = (w + 2 - 3) // stride + 1
    x = torch.randn(n, c_in, h, w, generator=g, dtype=dtype)
    if offset_kind == "smooth":
        offset = torch.randn(n, 18, h_out, w_out, generator=g, dtype=dtype) * 1.5
    elif offset_kind == "far":
        # Most samples land outside the map or straddle its border.
        offset = torch.randn(n, 18, h_out, w_out, generator=g, dtype=dtype) * max(h, w)
    else:
        # Exact 0.5 / 1 px grid: positions hit -1, 0, H-1, H and half-way points exactly.
        offset = torch.randint(-6, 7, (n, 18, h_out, w_out), generator=g).to(dtype) * 0.5
    mask = torch.rand(n, 9, h_out, w_out, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=dtype) * 0.2
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias


CASES = [
    # n, c_in, c_out, h, w, stride, dtype, offsets
    (2, 5, 7, 9, 11, 1, torch.float64, "smooth"),
    (3, 4, 6, 13, 10, 2, torch.float64, "far"),
    (2, 6, 3, 7, 9, 1, torch.float64, "grid"),
    (1, 3, 4, 11, 7, 2, torch.float64, "grid"),
    (2, 16, 8, 12, 15, 1, torch.float32, "smooth"),
    (2, 8, 16, 15, 12, 2, torch.float32, "grid"),
    (1, 4, 4, 1, 1, 1, torch.float32, "far"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[3]}x{c[4]}s{c[5]}{str(c[6])[-2:]}{c[7]}")
def test_forward_and_gradients_match_torchvision(case):
    *shape, dtype, kind = case
    tensors = _make_case(*shape, dtype, kind)
    stride = shape[5]
    tol = dict(atol=1e-10, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-5, rtol=1e-4)

    ours_in = [t.clone().requires_grad_() for t in tensors]
    ref_in = [t.clone().requires_grad_() for t in tensors]
    x, off, m, w, b = ours_in
    ours = modulated_deform_conv2d(x, off, m, w, b, stride=stride, padding=1, impl="fast")
    x, off, m, w, b = ref_in
    ref = deform_conv2d(x, off, w, b, stride=stride, padding=1, mask=m)
    torch.testing.assert_close(ours, ref, **tol)

    upstream = torch.randn_like(ref)
    ours.backward(upstream)
    ref.backward(upstream)
    for name, a, r in zip(("input", "offset", "mask", "weight", "bias"), ours_in, ref_in):
        torch.testing.assert_close(a.grad, r.grad, **tol, msg=lambda s: f"grad {name}: {s}")

    # Inference path (multiply first, then gather) gives the same values.
    with torch.no_grad():
        again = modulated_deform_conv2d(*tensors, stride=stride, padding=1, impl="fast")
    torch.testing.assert_close(again, ref.detach(), **tol)


def test_gradcheck_float64_tiny():
    x, off, m, w, b = _make_case(1, 2, 2, 4, 5, 1, torch.float64, "smooth", seed=3)
    # Fractional part 0.3 everywhere: away from integer positions, where bilinear sampling has a kink.
    off = off.round() + 0.3
    inputs = [t.clone().requires_grad_() for t in (x, off, m, w, b)]

    def fn(*args):
        return modulated_deform_conv2d(*args, stride=1, padding=1, impl="fast")

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def test_zero_offsets_unit_mask_is_ordinary_conv():
    x, _, _, w, b = _make_case(2, 4, 5, 8, 9, 2, torch.float64, "smooth")
    off = torch.zeros(2, 18, 4, 5, dtype=torch.float64)
    m = torch.ones(2, 9, 4, 5, dtype=torch.float64)
    ours = modulated_deform_conv2d(x, off, m, w, b, stride=2, padding=1, impl="fast")
    torch.testing.assert_close(ours, torch.nn.functional.conv2d(x, w, b, stride=2, padding=1))


def test_impl_switch(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(deform_conv, "_default_impl", "auto")
    assert resolve_impl("auto", cpu) == "fast"
    assert resolve_impl("auto", torch.device("cuda")) == "torchvision"
    assert resolve_impl("torchvision", cpu) == "torchvision"
    # The environment is read once, at import: setting it later changes nothing.
    monkeypatch.setenv("DYHEAD_DEFORM_IMPL", "torchvision")
    assert resolve_impl("auto", cpu) == "fast"
    previous = set_default_impl("torchvision")
    assert previous == "auto" and get_default_impl() == "torchvision"
    assert resolve_impl("auto", cpu) == "torchvision"
    assert resolve_impl("fast", cpu) == "fast"
    assert set_default_impl("auto") == "torchvision"
    with pytest.raises(DeformConvInputError, match="impl must be one of"):
        resolve_impl("cuda", cpu)
    with pytest.raises(DeformConvInputError, match="impl must be one of"):
        set_default_impl("bogus")
    assert get_default_impl() == "auto"


def test_process_default_from_environment(monkeypatch):
    monkeypatch.delenv("DYHEAD_DEFORM_IMPL", raising=False)
    assert deform_conv._impl_from_environment() == "auto"
    monkeypatch.setenv("DYHEAD_DEFORM_IMPL", " Torchvision ")
    assert deform_conv._impl_from_environment() == "torchvision"
    monkeypatch.setenv("DYHEAD_DEFORM_IMPL", "bogus")
    with pytest.raises(DeformConvInputError, match="DYHEAD_DEFORM_IMPL"):
        deform_conv._impl_from_environment()


def test_default_impl_is_used_by_auto_calls(monkeypatch):
    tensors = _make_case(1, 4, 4, 6, 7, 1, torch.float64, "smooth", seed=11)
    calls = []
    monkeypatch.setattr(deform_conv, "_torchvision_deform_conv2d", lambda *a, **k: calls.append(1) or deform_conv2d(*a, **k))
    monkeypatch.setattr(deform_conv, "_default_impl", "auto")
    modulated_deform_conv2d(*tensors)
    assert calls == []
    set_default_impl("torchvision")
    modulated_deform_conv2d(*tensors)
    assert calls == [1]
    modulated_deform_conv2d(*tensors, impl="fast")
    assert calls == [1]


def test_bad_shapes_are_named():
    x, off, m, w, b = _make_case(1, 4, 4, 8, 8, 1, torch.float32, "smooth")
    with pytest.raises(DeformConvInputError, match="offset must have shape"):
        modulated_deform_conv2d(x, off[:, :, :4], m, w, b)
    with pytest.raises(DeformConvInputError, match="mask must have shape"):
        modulated_deform_conv2d(x, off, m[:, :8], w, b)
    with pytest.raises(DeformConvInputError, match="input channels"):
        modulated_deform_conv2d(x[:, :3], off, m, w, b)


@pytest.mark.parametrize("needs", ["weight", "input", "offset_mask"])
def test_partial_gradients_match_torchvision(needs):
    tensors = _make_case(2, 4, 5, 9, 8, 2, torch.float64, "smooth", seed=5)
    requires = {
        "weight": (False, False, False, True, True),
        "input": (True, False, False, False, False),
        "offset_mask": (False, True, True, False, False),
    }[needs]
    ours_in = [t.clone().requires_grad_(r) for t, r in zip(tensors, requires)]
    ref_in = [t.clone().requires_grad_(r) for t, r in zip(tensors, requires)]
    x, off, m, w, b = ours_in
    ours = modulated_deform_conv2d(x, off, m, w, b, stride=2, impl="fast")
    x, off, m, w, b = ref_in
    ref = deform_conv2d(x, off, w, b, stride=2, padding=1, mask=m)
    upstream = torch.randn_like(ref)
    ours.backward(upstream)
    ref.backward(upstream)
    for a, r, req in zip(ours_in, ref_in, requires):
        if req:
            torch.testing.assert_close(a.grad, r.grad)
        else:
            assert a.grad is None


def test_float32_without_onednn_matches_too(monkeypatch):
    tensors = _make_case(2, 8, 6, 10, 9, 1, torch.float32, "smooth", seed=7)
    with torch.no_grad():
        fast = modulated_deform_conv2d(*tensors, impl="fast")
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
        plain = modulated_deform_conv2d(*tensors, impl="fast")
    torch.testing.assert_close(fast, plain, atol=2e-5, rtol=1e-4)
    assert torch.backends.mkldnn.enabled is False


@pytest.mark.parametrize("stride", [1, 2])
def test_chunked_forward_matches_torchvision_across_chunk_and_image_boundaries(monkeypatch, stride):
    # Steps of 7 positions: every step boundary falls inside a row, and images split unevenly.
    monkeypatch.setattr(deform_conv, "CHUNK_VALUES", 7 * 9 * 6)
    x, off, m, w, b = _make_case(3, 6, 5, 11, 13, stride, torch.float64, "far", seed=13)
    with torch.no_grad():
        ours = modulated_deform_conv2d(x, off, m, w, b, stride=stride, impl="fast")
        no_bias = modulated_deform_conv2d(x, off, m, w, None, stride=stride, impl="fast")
    ref = deform_conv2d(x, off, w, b, stride=stride, padding=1, mask=m)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(no_bias, ref - b.view(1, -1, 1, 1), atol=1e-10, rtol=1e-9)
    # Written as channels-last rows, the layout GroupNorm, upsampling and the next gathers want.
    assert ours.is_contiguous(memory_format=torch.channels_last)


def test_bfloat16_computes_row_numbers_in_integers():
    # 20x20 = 400 rows is past what bfloat16 represents exactly (256), so the row numbers must be
    # formed in integers: a wrong neighbour would show as an O(1) error.
    x, off, m, w, b = _make_case(1, 8, 8, 20, 20, 1, torch.float32, "smooth", seed=17)
    with torch.no_grad():
        ref = modulated_deform_conv2d(x, off, m, w, b, impl="fast")
        low = modulated_deform_conv2d(*(t.bfloat16() for t in (x, off, m, w, b)), impl="fast")
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_reused_weight_reordering_is_scoped_to_its_block():
    """Inside a `workspace` a weight is reordered once; outside it (and in a later block) a changed
    weight is never served the old reordering; a nested block keeps its own copies."""
    x, offset, mask, weight, bias = _make_case(1, 8, 6, 9, 11, 1, torch.float32, "smooth")

    def run(w):
        with torch.inference_mode():
            return modulated_deform_conv2d(x, offset, mask, w, bias, padding=1, impl="fast")

    def expected(w):
        return deform_conv2d(x, offset, w, bias, padding=1, mask=mask)

    calls = []
    original = deform_conv._tap_major
    deform_conv._tap_major = lambda w: calls.append(id(w)) or original(w)
    try:
        with workspace.workspace():
            first = run(weight)
            for _ in range(3):
                assert torch.equal(run(weight), first)
            assert calls == [id(weight)]  # reordered once for four calls
            with workspace.workspace():  # nested (a block inside a tower): copies of its own
                assert torch.equal(run(weight), first)
                assert torch.equal(run(weight), first)
            assert len(calls) == 2
            assert torch.equal(run(weight), first)  # the outer block's copy again
            assert len(calls) == 2
        assert torch.allclose(first, expected(weight), atol=1e-5)
        # outside a workspace the weight is neither kept nor packed for oneDNN: the same numbers
        assert torch.equal(run(weight), first)
        assert len(calls) == 3
        weight.mul_(-0.5)  # changed between blocks
        with workspace.workspace():
            assert torch.allclose(run(weight), expected(weight), atol=1e-5)
        assert len(calls) == 4 and not workspace.active()
        assert torch.allclose(run(weight * 2), expected(weight * 2), atol=1e-5)  # outside: no copies kept
    finally:
        deform_conv._tap_major = original


def test_workspace_outputs_are_reused_only_when_nothing_else_holds_them():
    x, offset, mask, weight, bias = _make_case(1, 8, 6, 9, 11, 1, torch.float32, "smooth")
    expected = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)

    def run():
        return modulated_deform_conv2d(x, offset, mask, weight, bias, padding=1, impl="fast")

    with torch.inference_mode():
        outside = run(), run()  # no workspace: fresh outputs
        assert outside[0].data_ptr() != outside[1].data_ptr()
        with workspace.workspace():
            a = run()
            pointer = a.data_ptr()
            held = run()  # `a` is still alive: a new buffer, `a` untouched
            assert held.data_ptr() != pointer
            torch.testing.assert_close(a, expected, atol=1e-5, rtol=1e-5)
            del a
            again = run()  # the first buffer, free again
            assert again.data_ptr() == pointer
            assert torch.equal(again, outside[0]) and torch.equal(held, outside[0])
            view = again[:, :2]  # a view keeps the buffer in use
            del again
            assert run().data_ptr() != view.data_ptr()
        assert not workspace.active()
    with torch.enable_grad():  # autograd: never a workspace buffer, nor a kept weight
        x.requires_grad_(True)
        with workspace.workspace():
            assert run().grad_fn is not None
            assert workspace._LOCAL.current.buffers == {} and workspace._LOCAL.current.weights == {}


@pytest.mark.parametrize("case", CASES + [(2, 4, 4, 300, 9, 1, torch.bfloat16, "far")])
def test_taps_without_autograd_are_the_differentiable_taps_bit_for_bit(case):
    """Inference builds the taps in place and writes the four neighbours straight into the result;
    training builds them out of place for autograd. Both must give the same indices and weights.
    The bfloat16 case has 300 rows: bfloat16 holds neither 299 (the last row) nor every row number
    above 256, so rows clamped in bfloat16 would point past the table (they are clamped in
    integers)."""
    n, c_in, c_out, h, w, stride, dtype, kind = case
    _, offset, mask, _, _ = _make_case(n, c_in, c_out, h, w, stride, dtype, kind, seed=5)
    with torch.no_grad():
        index, weight = deform_conv._bilinear_taps(offset, mask, (h, w), (3, 3), stride, 1)
    leaf = offset.clone().requires_grad_(True)
    with torch.enable_grad():
        index_ad, weight_ad = deform_conv._bilinear_taps(leaf, mask, (h, w), (3, 3), stride, 1)
    assert weight_ad.requires_grad and not weight.requires_grad
    assert index.dtype == index_ad.dtype == torch.int32
    assert torch.equal(index, index_ad)
    assert torch.equal(weight, weight_ad.detach())
    assert int(index.min()) >= 0 and int(index.max()) < n * h * w  # clamped into the table
    # the caller's offsets and masks are never written to
    again, _ = _make_case(n, c_in, c_out, h, w, stride, dtype, kind, seed=5)[1:3], None
    assert torch.equal(offset, again[0]) and torch.equal(mask, again[1])


@pytest.mark.parametrize("pack_from", [1, 10**9])
def test_weights_packed_for_onednn_give_the_same_numbers(monkeypatch, pack_from):
    """Inside a workspace a weight used by enough multiplies is packed once for oneDNN; the products
    are those of the unpacked weight bit for bit."""
    monkeypatch.setattr(deform_conv, "PACK_MIN_MULTIPLIES", pack_from)
    monkeypatch.setattr(deform_conv, "CHUNK_VALUES", 9 * 16 * 10)  # 10 positions per multiply
    x, offset, mask, weight, bias = _make_case(2, 16, 12, 9, 11, 1, torch.float32, "smooth", seed=3)
    with torch.inference_mode():
        plain = modulated_deform_conv2d(x, offset, mask, weight, bias, impl="fast")
        with workspace.workspace():
            kept = modulated_deform_conv2d(x, offset, mask, weight, bias, impl="fast")
            (_, (_, packed)), = workspace._LOCAL.current.weights.values()
    assert torch.equal(kept, plain)
    if pack_from == 1 and deform_conv._onednn_linear_works():
        assert packed is not None and packed.is_mkldnn
    else:
        assert packed is None
