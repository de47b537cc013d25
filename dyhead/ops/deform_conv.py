"""Modulated deformable convolution (DCNv2), the one place the tower calls it.

Shapes (kh x kw kernel, K = kh*kw taps; the tower uses 3x3, K = 9):
    input  Tensor[N, C_in, H_in, W_in]
    offset Tensor[N, 2*K, H_out, W_out]   channel 2k = dy, 2k+1 = dx of tap k = kw*i + j
    mask   Tensor[N, K, H_out, W_out]     in [0, 1]
    weight Tensor[C_out, C_in, kh, kw]
    bias   Tensor[C_out] or None
    ->     Tensor[N, C_out, H_out, W_out]

The convention is torchvision's `deform_conv2d`, which is also the official DyHead CUDA kernel's
(conformance README, section 3), so offsets are passed on unchanged.

Two implementations give the same numbers (to float round-off):

* ``"torchvision"``: `torchvision.ops.deform_conv2d`. Its CPU kernel runs an im2col loop at roughly a
  tenth of a dense convolution's speed and its backward is slower still.
* ``"fast"``: bilinear sampling written as a weighted gather (`F.embedding_bag` with per-sample
  weights, one bag per sampled value holding its 4 bilinear neighbours) and one matrix multiply,
  a few hundred output positions at a time (`_sample_and_multiply`): the [positions, K*C_in]
  columns of one step stay in cache and no whole-map column buffer is ever allocated. Training
  (`_SampleThenMultiply`) runs the same forward and keeps only the inputs; backward samples the
  columns again and lets autograd differentiate the gather for the input, offset and mask
  gradients (an indexed add and row-wise dot products, far cheaper than torchvision's CPU col2im).

Which one runs is decided in one place, `resolve_impl`: an explicit ``impl="fast"`` or
``"torchvision"`` argument wins; ``impl="auto"`` (the default) takes the process-wide default set
by `set_default_impl` (e.g. once by a benchmark that builds a reference model), and when that is
``"auto"`` as well, ``"fast"`` on CPU and ``"torchvision"`` on CUDA, where torchvision's kernel is
a native GPU kernel. The environment variable ``DYHEAD_DEFORM_IMPL`` (``auto`` | ``fast`` |
``torchvision``) gives the process default; it is read once, when this module is imported.

Sampling rules reproduced from torchvision's kernel (`ops/cpu/deform_conv2d_kernel.cpp`): the sample
position of tap k = (i, j) for output (h, w) is
``(h*stride - padding + i + dy, w*stride - padding + j + dx)``; with ``h0 = floor(y)``, ``w0 = floor(x)``
each of the four neighbours (h0|h0+1, w0|w0+1) that lies outside the map contributes 0. torchvision
also returns 0 unless ``-1 < y < H`` and ``-1 < x < W``; that check never changes a value (outside it,
every neighbour with a non-zero bilinear weight is outside the map), and leaving it out gives exactly
torchvision's backward as well, whose offset gradient checks only the neighbours.
"""

from __future__ import annotations

import functools
import os
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torchvision.ops import deform_conv2d as _torchvision_deform_conv2d

from . import workspace

Impl = Literal["auto", "fast", "torchvision"]
IMPLS = ("auto", "fast", "torchvision")
IMPL_ENV_VAR = "DYHEAD_DEFORM_IMPL"


class DeformConvInputError(ValueError):
    """Raised when the tensors passed to `modulated_deform_conv2d` do not fit together."""


def _impl_from_environment() -> str:
    """The process-start default: ``DYHEAD_DEFORM_IMPL`` if set, else ``"auto"``."""
    impl = os.environ.get(IMPL_ENV_VAR, "auto").strip().lower() or "auto"
    if impl not in IMPLS:
        raise DeformConvInputError(
            f"environment variable {IMPL_ENV_VAR} must be one of {IMPLS}, got {impl!r}"
        )
    return impl


# Read once, when the module is imported; afterwards only `set_default_impl` changes it.
_default_impl: str = _impl_from_environment()


def set_default_impl(impl: Impl) -> str:
    """Set the implementation that ``impl="auto"`` calls use, for the whole process; returns the
    previous setting. ``"auto"`` restores the device rule (fast on CPU, torchvision elsewhere).

    Meant to be called once at start-up (a benchmark's reference build, a command-line flag), not
    per request: the setting is shared by every thread.
    """
    global _default_impl
    if impl not in IMPLS:
        raise DeformConvInputError(f"impl must be one of {IMPLS}, got {impl!r}")
    previous, _default_impl = _default_impl, impl
    return previous


def get_default_impl() -> str:
    """What ``impl="auto"`` resolves through: ``"auto"``, ``"fast"`` or ``"torchvision"``."""
    return _default_impl


def resolve_impl(impl: Impl, device: torch.device) -> str:
    """The implementation that runs for `impl` on `device`: "fast" or "torchvision".

    An explicit ``"fast"`` / ``"torchvision"`` wins; ``"auto"`` takes the process default
    (`set_default_impl`); if that is ``"auto"`` too, CPU gets ``"fast"`` and every other device
    ``"torchvision"``.
    """
    if impl not in IMPLS:
        raise DeformConvInputError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = _default_impl
    if impl == "auto":
        impl = "fast" if device.type == "cpu" else "torchvision"
    return impl


def modulated_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    stride: int = 1,
    padding: int = 1,
    impl: Impl = "auto",
) -> Tensor:
    """Modulated deformable convolution, torchvision's `deform_conv2d(..., mask=mask)` semantics.

    Without autograd and inside an open `dyhead.ops.workspace.workspace` block, the fast op keeps
    each weight's reordering for the block and may write into a buffer of the block that nothing
    else uses any more.
    """
    _check_shapes(input, offset, mask, weight, bias, stride, padding)
    if resolve_impl(impl, input.device) == "torchvision":
        return _torchvision_deform_conv2d(
            input, offset, weight, bias, stride=stride, padding=padding, mask=mask
        )
    return _fast_modulated_deform_conv2d(input, offset, mask, weight, bias, stride, padding)


def _check_shapes(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: int,
    padding: int,
) -> None:
    for name, t in (("input", input), ("offset", offset), ("mask", mask), ("weight", weight)):
        if t.dim() != 4:
            raise DeformConvInputError(f"{name} must be 4-D, got shape {tuple(t.shape)}")
    if stride < 1 or padding < 0:
        raise DeformConvInputError(f"need stride >= 1 and padding >= 0, got {stride}, {padding}")
    n, c_in, h_in, w_in = input.shape
    c_out, w_c_in, kh, kw = weight.shape
    if w_c_in != c_in:
        raise DeformConvInputError(
            f"weight expects {w_c_in} input channels but input has {c_in} (shape {tuple(input.shape)})"
        )
    h_out = (h_in + 2 * padding - kh) // stride + 1
    w_out = (w_in + 2 * padding - kw) // stride + 1
    taps = kh * kw
    if tuple(offset.shape) != (n, 2 * taps, h_out, w_out):
        raise DeformConvInputError(
            f"offset must have shape {(n, 2 * taps, h_out, w_out)} for input {tuple(input.shape)}, "
            f"a {kh}x{kw} kernel, stride {stride} and padding {padding}; got {tuple(offset.shape)}"
        )
    if tuple(mask.shape) != (n, taps, h_out, w_out):
        raise DeformConvInputError(
            f"mask must have shape {(n, taps, h_out, w_out)}, got {tuple(mask.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise DeformConvInputError(f"bias must have shape {(c_out,)}, got {tuple(bias.shape)}")


def _bilinear_taps(
    offset: Tensor,
    mask: Tensor,
    in_size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: int,
    padding: int,
) -> tuple[Tensor, Tensor]:
    """Neighbour indices and weights of every sampled value.

    Returns ``index`` Int[N, H_out, W_out, K, 4] (int32, int64 past 2**31 rows) into the input
    flattened to rows ``[N*H_in*W_in, C]`` and ``weight`` [N, H_out, W_out, K, 4] = bilinear weight *
    mask, zero for neighbours outside the map (whose index is clamped to a valid row). Neighbour
    order: (y0, x0), (y0, x1), (y1, x0), (y1, x1). Differentiable in offset and mask.

    Every factor is computed on [N, H_out, W_out, K] tensors and the four neighbours are put side by
    side once at the end: elementwise ops that broadcast over a trailing dimension of 2 or 4 run
    several times slower than contiguous ones, and these taps are recomputed for every call. Without
    autograd the same operations run in place and write the four neighbours straight into the
    result (1.8x faster at P3 of the official size; the same numbers bit for bit, tested).
    """
    n = offset.shape[0]
    h_in, w_in = in_size
    differentiable = torch.is_grad_enabled() and (offset.requires_grad or mask.requires_grad)
    y, x = _sample_positions(offset, kernel_size, stride, padding)  # [N, H_out, W_out, K] each
    y_low = y.detach().floor()
    x_low = x.detach().floor()
    m = mask.permute(0, 2, 3, 1)  # [N, H_out, W_out, K]
    # Neighbour rows and columns, clamped into the map, in integers; a neighbour whose row or column
    # had to be clamped lies outside the map and gets weight 0.
    index_dtype = torch.int32 if n * h_in * w_in < 2**31 else torch.int64
    y0, y1, top_inside, bottom_inside = _clamped_pair(y_low, h_in, index_dtype)
    x0, x1, left_inside, right_inside = _clamped_pair(x_low, w_in, index_dtype)
    if differentiable:
        frac_y = y - y_low
        frac_x = x - x_low
        top = (1 - frac_y) * m * top_inside
        bottom = frac_y * m * bottom_inside
        left = (1 - frac_x) * left_inside
        right = frac_x * right_inside
        weight = torch.stack((top * left, top * right, bottom * left, bottom * right), dim=-1)
    else:  # the same operations, in place where a value is not needed again
        frac_y = y.sub_(y_low)
        frac_x = x.sub_(x_low)
        top = (1 - frac_y).mul_(m).mul_(top_inside)
        bottom = (frac_y * m).mul_(bottom_inside)
        left = (1 - frac_x).mul_(left_inside)
        right = frac_x.mul_(right_inside)
        weight = top.new_empty(*top.shape, 4)
        for k, (vertical, horizontal) in enumerate(((top, left), (top, right), (bottom, left), (bottom, right))):
            torch.mul(vertical, horizontal, out=weight[..., k])
    return _neighbour_rows(y0, y1, x0, x1, n, h_in, w_in), weight


def _clamped_pair(low: Tensor, size: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For floor(position) `low` (floats holding whole numbers) along an axis of `size` pixels: the
    two neighbours low and low + 1 clamped into [0, size - 1] as integers of `dtype`, and whether
    each lay inside (was not clamped).

    Formed in integers: a float type may not hold size - 1 itself (bfloat16 holds whole numbers
    exactly only up to 256, so clamping to 299 there gives 300, a row outside the map). Positions
    far outside are first clamped to [-2, 2**24] (exact in every float type), so that the
    conversion cannot overflow.
    """
    below = low.clamp(-2, 2**24).to(dtype)
    above = below + 1
    first = below.clamp(0, size - 1)
    second = above.clamp(0, size - 1)
    return first, second, first == below, second == above


def _sample_positions(offset: Tensor, kernel_size: tuple[int, int], stride: int, padding: int) -> tuple[Tensor, Tensor]:
    """Sampling rows y and columns x of every tap, [N, H_out, W_out, K] each (new tensors)."""
    n, _, h_out, w_out = offset.shape
    kh, kw = kernel_size
    dtype, device = offset.dtype, offset.device
    tap_i = torch.arange(kh, dtype=dtype, device=device).repeat_interleave(kw)  # [K]
    tap_j = torch.arange(kw, dtype=dtype, device=device).repeat(kh)  # [K]
    row0 = torch.arange(h_out, dtype=dtype, device=device) * stride - padding  # [H_out]
    col0 = torch.arange(w_out, dtype=dtype, device=device) * stride - padding  # [W_out]
    dydx = offset.view(n, kh * kw, 2, h_out, w_out).permute(0, 3, 4, 1, 2)  # [N, H_out, W_out, K, 2]
    # Same order of additions as torchvision: (base + tap) + offset.
    y = (row0.view(1, h_out, 1, 1) + tap_i) + dydx[..., 0]
    x = (col0.view(1, 1, w_out, 1) + tap_j) + dydx[..., 1]
    return y, x


def _neighbour_rows(y0: Tensor, y1: Tensor, x0: Tensor, x1: Tensor, n: int, h_in: int, w_in: int) -> Tensor:
    """Rows of the four neighbours in the [N*H_in*W_in, C] table, [N, H_out, W_out, K, 4], from the
    clamped integer rows y0, y1 and columns x0, x1 (y0 and y1 are overwritten)."""
    batch = torch.arange(n, dtype=y0.dtype, device=y0.device).view(n, 1, 1, 1) * (h_in * w_in)
    row_top = y0.mul_(w_in).add_(batch)
    row_bottom = y1.mul_(w_in).add_(batch)
    index = row_top.new_empty(*row_top.shape, 4)
    for k, (row, column) in enumerate(((row_top, x0), (row_top, x1), (row_bottom, x0), (row_bottom, x1))):
        torch.add(row, column, out=index[..., k])
    return index


#: Output positions per gather + matrix-multiply step are chosen so that one step's columns
#: ([positions, K*C_in]) hold about this many values (2 MiB in float32: 227 positions at 256
#: channels, 910 at 64). Whole-map buffers of 100+ MiB are slower, not faster: each is fresh memory
#: from the OS (glibc maps allocations over 32 MiB anew every time) and is written once and read
#: once from RAM. Between 2 and 8 MiB, the smaller steps were about 5 % faster at the official size
#: (1 thread; the columns are read back by the matrix multiply while still in the core's caches);
#: the products are the same bit for bit whatever the step.
CHUNK_VALUES = 1 << 19


def _fast_modulated_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: int,
    padding: int,
) -> Tensor:
    """Gather-based bilinear sampling of the K taps, then one matrix multiply."""
    if torch.is_grad_enabled() and _any_requires_grad(input, offset, mask, weight, bias):
        return _SampleThenMultiply.apply(input, offset, mask, weight, bias, stride, padding)
    return _sample_and_multiply(input, offset, mask, weight, bias, stride, padding, use_workspace=True)


def _input_rows(input: Tensor) -> Tensor:
    """[N, C, H, W] -> [N*H*W, C], the embedding table the gathers read (channels-last rows).

    Contiguous on purpose: for N = 1, ``reshape`` alone returns a view with strides (1, H*W), and
    `embedding_bag` on such a table leaves its fast kernel for a strided loop about 10x slower.
    A channels-last input needs no copy.
    """
    c = input.shape[1]
    return input.permute(0, 2, 3, 1).contiguous().view(-1, c)


def _sample_and_multiply(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: int,
    padding: int,
    use_workspace: bool = False,
) -> Tensor:
    """Forward without autograd, a few hundred output positions at a time: sample their
    [positions, K*C_in] columns (one `embedding_bag`), multiply by the weight, write the result
    into the output's channels-last rows. Never holds more than one step's columns. use_workspace
    (inference calls only): take the weight's reordering and the output buffer from an open
    `workspace` block, when there is one.

    The output has the NCHW shape in channels-last memory (`torch.channels_last`): the matrix
    multiply writes it that way at no cost, and what follows in a DyHead block (GroupNorm, the
    coarser branch's upsampling, the next block's gathers and offset conv) runs faster on it than
    on NCHW (benchmarks/RESULTS.md). Values are those of the NCHW product bit for bit (oneDNN gives
    the same sums in either orientation, bias included)."""
    n, c_in, h_in, w_in = input.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    h_out, w_out = offset.shape[-2:]
    positions = h_out * w_out
    with torch.no_grad():
        index, tap_weight = _bilinear_taps(offset, mask, (h_in, w_in), (kh, kw), stride, padding)
        rows = _input_rows(input)  # [N*H_in*W_in, C_in]
        step = max(1, CHUNK_VALUES // (taps * c_in))
        # [C_out, K*C_in], and the same packed for oneDNN when a workspace keeps it
        multiplies = n * -(-positions // step)
        w_tap, w_packed = (
            _tap_major_kept(weight, step, multiplies) if use_workspace else (_tap_major(weight), None)
        )
        # the packed weight where oneDNN runs this multiply (`_linear` hands it to oneDNN), else plain
        matrix = w_packed if w_packed is not None and _runs_on_onednn(rows, w_tap) else w_tap
        index = index.view(n, positions, taps * 4)
        tap_weight = tap_weight.view(n, positions, taps * 4)
        shape = (n, positions, c_out)  # channels-last rows
        out = workspace.empty(shape, input) if use_workspace else input.new_empty(shape)
        for b in range(n):
            for start in range(0, positions, step):
                stop = min(positions, start + step)
                columns = F.embedding_bag(
                    index[b, start:stop].reshape(-1, 4),
                    rows,
                    per_sample_weights=tap_weight[b, start:stop].reshape(-1, 4),
                    mode="sum",
                ).view(stop - start, taps * c_in)  # [P, K*C_in]
                # columns @ weight^T with the bias added inside the matrix multiply: [P, C_out],
                # one channels-last row per output position.
                out[b, start:stop] = _linear(columns, matrix, bias)
    return out.view(n, h_out, w_out, c_out).permute(0, 3, 1, 2)  # [N, C_out, H_out, W_out], channels-last


def _sample_columns(
    input: Tensor, offset: Tensor, mask: Tensor, kernel_size, stride: int, padding: int
) -> Tensor:
    """columns [N, H_out*W_out, K*C_in]: the K modulated bilinear samples of every output position
    (tap-major), each the weighted sum of its 4 neighbours (one `embedding_bag` bag)."""
    n, c_in, h_in, w_in = input.shape
    kh, kw = kernel_size
    h_out, w_out = offset.shape[-2:]
    index, tap_weight = _bilinear_taps(offset, mask, (h_in, w_in), (kh, kw), stride, padding)
    columns = F.embedding_bag(
        index.view(-1, 4), _input_rows(input), per_sample_weights=tap_weight.reshape(-1, 4), mode="sum"
    )  # [N*H_out*W_out*K, C_in]
    return columns.view(n, h_out * w_out, kh * kw * c_in)


def _tap_major(weight: Tensor) -> Tensor:
    """[C_out, C_in, kh, kw] -> [C_out, K*C_in] in the columns' (tap, channel) order."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


#: A weight is packed for oneDNN only when the call that first uses it in a workspace makes at least
#: this many matrix multiplies: packing costs about one multiply's worth of copying, and for small
#: maps (the demo model at batch 1) it did not pay (37 vs 35 ms per tower forward).
PACK_MIN_MULTIPLIES = 8


def _tap_major_kept(weight: Tensor, rows: int, multiplies: int) -> tuple[Tensor, Optional[Tensor]]:
    """`_tap_major(weight)` and, where oneDNN's matmul runs and `multiplies` reaches
    `PACK_MIN_MULTIPLIES`, the same packed in oneDNN's own layout (else None), made once per open
    `workspace` block. The matrix multiplies read a packed weight directly: about 5 % faster than
    packing it inside every multiply at the official size, the same products bit for bit.
    rows: the multiplies' row count (a packing hint)."""
    if not workspace.active():
        return _tap_major(weight), None

    def make(w: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        tap_major = _tap_major(w)
        packed = _packed_for_onednn(tap_major, rows) if multiplies >= PACK_MIN_MULTIPLIES else None
        return tap_major, packed

    return workspace.kept(weight, make)


def _packed_for_onednn(weight: Tensor, rows: int) -> Optional[Tensor]:
    """weight [M, K] packed in oneDNN's layout for `_linear(x, weight)`, or None where that
    multiply would not run on oneDNN or this PyTorch cannot pack."""
    if not _runs_on_onednn(weight, weight):
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    except (AttributeError, RuntimeError, NotImplementedError):
        return None


@functools.lru_cache(maxsize=None)
def _onednn_linear_works() -> bool:
    try:
        probe = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 3), torch.ones(4, 3), None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.equal(probe, torch.full((2, 4), 3.0)))


def _runs_on_onednn(a: Tensor, b: Tensor) -> bool:
    return (
        a.device.type == "cpu"
        and a.dtype == b.dtype == torch.float32
        and torch.backends.mkldnn.enabled  # respects torch.backends.mkldnn.flags(enabled=False)
        and _onednn_linear_works()
    )


def _linear(a: Tensor, b: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """a [M, K] @ b[N, K]^T (+ bias [N]) -> [M, N].

    float32 on CPU goes to oneDNN's matmul (the kernel behind `torch.nn.Linear` when PyTorch
    freezes a model for CPU inference): on the AVX-512 AMD EPYC this was measured on it is 1.5-3.7x
    faster than `torch.mm`'s BLAS for these shapes (benchmarks/RESULTS.md). Anything else, or
    oneDNN switched off with `torch.backends.mkldnn.flags(enabled=False)`, uses `torch.mm`.
    """
    if _runs_on_onednn(a, b):
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")
    out = torch.mm(a, b.t())
    return out if bias is None else out + bias


class _SampleThenMultiply(torch.autograd.Function):
    """Training path. Saves only the inputs (like torchvision's kernel) instead of the
    [N, L, K*C_in] columns, which are K times the input's size; backward samples them again
    (a gather, cheap next to the two matrix multiplies) and lets autograd differentiate the
    sampling for the input, offset and mask gradients."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding):
        ctx.save_for_backward(input, offset, mask, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return _sample_and_multiply(input, offset, mask, weight, bias, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        input, offset, mask, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        n, c_out = grad_out.shape[:2]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip((input, offset, mask), needs)]
            columns = _sample_columns(*leaves, weight.shape[-2:], ctx.stride, ctx.padding)
        grad_input = grad_offset = grad_mask = grad_weight = grad_bias = None
        if needs[3]:
            # [C_out, N*L] @ [N*L, K*C_in], back to [C_out, C_in, kh, kw]
            g = grad_out.transpose(0, 1).reshape(c_out, -1)  # [C_out, N*L]
            grad_tap_major = _linear(g, columns.detach().reshape(g.shape[1], -1).t())
            c_in, kh, kw = weight.shape[1:]
            grad_weight = grad_tap_major.view(c_out, kh, kw, c_in).permute(0, 3, 1, 2)
        if ctx.has_bias and needs[4]:
            grad_bias = grad_out.sum(dim=(0, 2, 3))
        wanted = [t for t in leaves if t.requires_grad]
        if wanted:
            g_rows = grad_out.permute(0, 2, 3, 1).reshape(-1, c_out)  # [N*L, C_out]
            grad_columns = _linear(g_rows, _tap_major(weight).t())  # [N*L, K*C_in]
            grads = iter(torch.autograd.grad(columns, wanted, grad_columns.view(columns.shape)))
            grad_input, grad_offset, grad_mask = (
                next(grads) if t.requires_grad else None for t in leaves
            )
        return grad_input, grad_offset, grad_mask, grad_weight, grad_bias, None, None


def _any_requires_grad(*tensors: Optional[Tensor]) -> bool:
    return any(t is not None and t.requires_grad for t in tensors)
