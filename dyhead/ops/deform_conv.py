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
  weights, one bag per sampled value holding its 4 bilinear neighbours) and one matrix multiply.
  Training (`_SampleThenMultiply`) samples the [N, L, K*C_in] columns, multiplies, and keeps only
  the inputs for backward, where it samples again and lets autograd differentiate the gather for
  the input, offset and mask gradients (an indexed add and row-wise dot products, far cheaper than
  torchvision's CPU col2im). Inference at stride 1 multiplies first and gathers the products
  (`_multiply_then_sample`), which needs no column buffer.

Which one runs is decided in one place, `resolve_impl`: ``impl="auto"`` (the default) picks
``"fast"`` on CPU and ``"torchvision"`` on CUDA, where torchvision's kernel is a native GPU kernel.
The environment variable ``DYHEAD_DEFORM_IMPL`` (``auto`` | ``fast`` | ``torchvision``) overrides
the default for a whole process, e.g. to build a reference model for a benchmark.

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

Impl = Literal["auto", "fast", "torchvision"]
IMPLS = ("auto", "fast", "torchvision")
IMPL_ENV_VAR = "DYHEAD_DEFORM_IMPL"


class DeformConvInputError(ValueError):
    """Raised when the tensors passed to `modulated_deform_conv2d` do not fit together."""


def resolve_impl(impl: Impl, device: torch.device) -> str:
    """The implementation that runs for `impl` on `device`: "fast" or "torchvision".

    ``"auto"`` reads ``DYHEAD_DEFORM_IMPL`` first; if that is unset or ``auto`` too, CPU gets
    ``"fast"`` and every other device ``"torchvision"``.
    """
    if impl not in IMPLS:
        raise DeformConvInputError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = os.environ.get(IMPL_ENV_VAR, "auto").strip().lower() or "auto"
        if impl not in IMPLS:
            raise DeformConvInputError(
                f"environment variable {IMPL_ENV_VAR} must be one of {IMPLS}, got {impl!r}"
            )
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
    """Modulated deformable convolution, torchvision's `deform_conv2d(..., mask=mask)` semantics."""
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

    Returns ``index`` Long[N, H_out, W_out, K, 4] into the input flattened to rows
    ``[N*H_in*W_in, C]`` and ``weight`` [N, H_out, W_out, K, 4] = bilinear weight * mask, zero for
    neighbours outside the map (whose index is clamped to a valid row). Differentiable in offset
    and mask.
    """
    n, _, h_out, w_out = offset.shape
    h_in, w_in = in_size
    kh, kw = kernel_size
    taps = kh * kw
    dtype, device = offset.dtype, offset.device
    tap_i = torch.arange(kh, dtype=dtype, device=device).repeat_interleave(kw)  # [K]
    tap_j = torch.arange(kw, dtype=dtype, device=device).repeat(kh)  # [K]
    row0 = torch.arange(h_out, dtype=dtype, device=device) * stride - padding  # [H_out]
    col0 = torch.arange(w_out, dtype=dtype, device=device) * stride - padding  # [W_out]
    dydx = offset.view(n, taps, 2, h_out, w_out).permute(0, 3, 4, 1, 2)  # [N, H_out, W_out, K, 2]
    # Same order of additions as torchvision: (base + tap) + offset.
    y = (row0.view(1, h_out, 1, 1) + tap_i) + dydx[..., 0]  # [N, H_out, W_out, K]
    x = (col0.view(1, 1, w_out, 1) + tap_j) + dydx[..., 1]
    y_low = y.detach().floor()
    x_low = x.detach().floor()
    frac_y = y - y_low
    frac_x = x - x_low
    y_low = y_low.long()
    x_low = x_low.long()
    # Neighbour order: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
    ys = torch.stack((y_low, y_low, y_low + 1, y_low + 1), dim=-1)  # [N, H_out, W_out, K, 4]
    xs = torch.stack((x_low, x_low + 1, x_low, x_low + 1), dim=-1)
    wy = torch.stack((1 - frac_y, 1 - frac_y, frac_y, frac_y), dim=-1)
    wx = torch.stack((1 - frac_x, frac_x, 1 - frac_x, frac_x), dim=-1)
    inside = (ys >= 0) & (ys < h_in) & (xs >= 0) & (xs < w_in)
    batch = torch.arange(n, device=device).view(n, 1, 1, 1, 1) * (h_in * w_in)
    index = batch + ys.clamp(0, h_in - 1) * w_in + xs.clamp(0, w_in - 1)
    m = mask.permute(0, 2, 3, 1).unsqueeze(-1)  # [N, H_out, W_out, K, 1]
    weight = wy * wx * m * inside.to(dtype)
    return index, weight


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
    h_out, w_out = offset.shape[-2:]
    if h_out * w_out >= input.shape[-2] * input.shape[-1]:
        return _multiply_then_sample(input, offset, mask, weight, bias, stride, padding)
    columns = _sample_columns(input, offset, mask, weight.shape[-2:], stride, padding)
    return _columns_times_weight(columns, weight, bias, (h_out, w_out))


def _sample_columns(
    input: Tensor, offset: Tensor, mask: Tensor, kernel_size, stride: int, padding: int
) -> Tensor:
    """columns [N, H_out*W_out, K*C_in]: the K modulated bilinear samples of every output position
    (tap-major), each the weighted sum of its 4 neighbours (one `embedding_bag` bag)."""
    n, c_in, h_in, w_in = input.shape
    kh, kw = kernel_size
    h_out, w_out = offset.shape[-2:]
    index, tap_weight = _bilinear_taps(offset, mask, (h_in, w_in), (kh, kw), stride, padding)
    rows = input.permute(0, 2, 3, 1).reshape(n * h_in * w_in, c_in)  # [N*H_in*W_in, C_in]
    columns = F.embedding_bag(
        index.view(-1, 4), rows, per_sample_weights=tap_weight.reshape(-1, 4), mode="sum"
    )  # [N*H_out*W_out*K, C_in]
    return columns.view(n, h_out * w_out, kh * kw * c_in)


def _tap_major(weight: Tensor) -> Tensor:
    """[C_out, C_in, kh, kw] -> [C_out, K*C_in] in the columns' (tap, channel) order."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _columns_times_weight(
    columns: Tensor, weight: Tensor, bias: Optional[Tensor], out_size: tuple[int, int]
) -> Tensor:
    n, positions, k_c_in = columns.shape
    c_out = weight.shape[0]
    out = _linear(columns.reshape(n * positions, k_c_in), _tap_major(weight), bias)  # [N*L, C_out]
    return out.view(n, *out_size, c_out).permute(0, 3, 1, 2).contiguous()


@functools.lru_cache(maxsize=None)
def _onednn_linear_works() -> bool:
    try:
        probe = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 3), torch.ones(4, 3), None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.equal(probe, torch.full((2, 4), 3.0)))


def _linear(a: Tensor, b: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """a [M, K] @ b[N, K]^T (+ bias [N]) -> [M, N].

    float32 on CPU goes to oneDNN's matmul (the kernel behind `torch.nn.Linear` when PyTorch
    freezes a model for CPU inference): on the AVX-512 AMD EPYC this was measured on it is 1.5-3.7x
    faster than `torch.mm`'s BLAS for these shapes (benchmarks/RESULTS.md). Anything else, or
    oneDNN switched off with `torch.backends.mkldnn.flags(enabled=False)`, uses `torch.mm`.
    """
    if (
        a.device.type == "cpu"
        and a.dtype == b.dtype == torch.float32
        and torch.backends.mkldnn.enabled  # respects torch.backends.mkldnn.flags(enabled=False)
        and _onednn_linear_works()
    ):
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")
    out = torch.mm(a, b.t())
    return out if bias is None else out + bias


def _multiply_then_sample(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: int,
    padding: int,
) -> Tensor:
    """Inference with at least as many outputs as inputs (stride 1): multiply first,
    Y[p, k] = x[p] @ W_k for every input pixel p, then gather the K*4 rows of Y that each output
    needs. Same FLOPs as a dense conv and no [N, L, K*C_in] column buffer."""
    n, c_in, h_in, w_in = input.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    h_out, w_out = offset.shape[-2:]
    index, tap_weight = _bilinear_taps(offset, mask, (h_in, w_in), (kh, kw), stride, padding)
    rows = input.permute(0, 2, 3, 1).reshape(n * h_in * w_in, c_in)  # [N*H_in*W_in, C_in]
    w_taps = weight.permute(2, 3, 0, 1).reshape(taps * c_out, c_in)  # [K*C_out, C_in]
    y_rows = _linear(rows, w_taps).view(-1, c_out)  # [N*H_in*W_in*K, C_out]
    tap_index = index * taps + torch.arange(taps, device=index.device).view(taps, 1)
    out = F.embedding_bag(
        tap_index.view(-1, taps * 4),
        y_rows,
        per_sample_weights=tap_weight.reshape(-1, taps * 4),
        mode="sum",
    )  # [N*H_out*W_out, C_out]
    out = out.view(n, h_out, w_out, c_out).permute(0, 3, 1, 2)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out.contiguous()


class _SampleThenMultiply(torch.autograd.Function):
    """Training path. Saves only the inputs (like torchvision's kernel) instead of the
    [N, L, K*C_in] columns, which are K times the input's size; backward samples them again
    (a gather, cheap next to the two matrix multiplies) and lets autograd differentiate the
    sampling for the input, offset and mask gradients."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding):
        ctx.save_for_backward(input, offset, mask, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        columns = _sample_columns(input, offset, mask, weight.shape[-2:], stride, padding)
        return _columns_times_weight(columns, weight, bias, tuple(offset.shape[-2:]))

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
