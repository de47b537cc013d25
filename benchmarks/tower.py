"""DyHead tower inference: our `DyHeadTower` vs the straightforward reference and vs the dense-conv floor.

    python -m benchmarks.tower [--device cpu|cuda] [--repeats 3] [--threads N] [--full] [--bf16]
                               [--only official|demo]

Shapes: the official model (6 blocks, 256 channels, P3-P7 of 800x1333 padded to a multiple of 32,
i.e. 800x1344) at batch 1 (and 4 with --full), and the demo model (6 blocks, 64 channels, 320x320) at
batch 1 and 8. Both towers hold the same weights; offsets have a spread of about 1 px.

The floor is what the tower's convolutions would cost if they were ordinary ones: per block and
level, dense 3x3 convs (`F.conv2d`, same library, same threads, the same NCHW tensors the tower is
given) of exactly the shapes the tower computes: the 27-channel offset conv, the same-level conv,
the stride-2 conv from the finer level and the conv of the coarser level at its own size. The
tower itself works channels-last inside; the same convs on channels-last copies of the inputs
(oneDNN's faster layout on CPU) are timed too and reported as a second, lower floor. Reference,
ours and the floors are timed interleaved in one process, so that the machine's load hits all alike.

On CPU every case runs with 1 thread and with torch's default thread count (or only with
``--threads N``). Prints max |ours - reference|, the median time, ours/floor (and ours over the
channels-last floor), ours/reference, images/s and peak memory. ``--bf16`` adds ours with the whole tower in bfloat16 (CPU: where oneDNN
has bf16 kernels); on CUDA ours also runs under float16 and bfloat16 autocast.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from dyhead.config import DyHeadConfig
from dyhead.tower import DyHeadTower

from .common import (
    base_parser,
    describe_machine,
    max_abs_diff,
    peak_memory_mb,
    print_table,
    pyramid_sizes,
    time_interleaved,
)
from .reference_tower import reference_from


def make_tower(num_blocks: int, channels: int, device: torch.device, seed: int = 0) -> DyHeadTower:
    torch.manual_seed(seed)
    tower = DyHeadTower(DyHeadConfig(num_blocks=num_blocks, channels=channels))
    with torch.no_grad():
        for block in tower.blocks:
            # Offsets with a spread of about 1 px for unit-variance inputs (default init gives ~0.2 px).
            std = 1.0 / (channels * 9) ** 0.5
            block.spatial_offsets.weight.normal_(0.0, std)
            block.spatial_offsets.bias.normal_(0.0, 0.5)
            # Away from the initial point, where every GroupNorm bias is 0 and with one channel per
            # group the scale-attention logit sits exactly on its ReLU's kink.
            for branch in (block.same_level, block.from_finer, block.from_coarser):
                branch.norm.weight.normal_(1.0, 0.1)
                branch.norm.bias.normal_(0.0, 0.1)
            block.scale_attention.fc.bias.normal_(0.0, 0.5)
    return tower.to(device).eval()


def make_features(sizes, batch: int, channels: int, device: torch.device, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, h, w, generator=g).to(device) for h, w in sizes]


def floor_convs(tower: DyHeadTower, features: list[torch.Tensor]) -> None:
    """The tower's convolutions as dense 3x3 convs: same shapes, weights and inputs, no deformation."""
    last = len(features) - 1
    for block in tower.blocks:
        offsets = block.spatial_offsets
        for level, x in enumerate(features):
            F.conv2d(x, offsets.weight, offsets.bias, padding=1)  # [N, 27, H_l, W_l]
            F.conv2d(x, block.same_level.conv.weight, block.same_level.conv.bias, padding=1)
            if level > 0:
                finer = block.from_finer.conv
                F.conv2d(features[level - 1], finer.weight, finer.bias, stride=2, padding=1)
            if level < last:
                coarser = block.from_coarser.conv
                F.conv2d(features[level + 1], coarser.weight, coarser.bias, padding=1)


CASES = [
    # name, blocks, channels, image (h, w), batch, only with --full
    ("official 800x1333", 6, 256, (800, 1333), 1, False),
    ("official 800x1333", 6, 256, (800, 1333), 4, True),
    ("demo 320x320", 6, 64, (320, 320), 1, False),
    ("demo 320x320", 6, 64, (320, 320), 8, False),
]

REFERENCE = "reference (torchvision per branch)"
OURS = "ours"
FLOOR = "floor (dense convs, same shapes)"
FLOOR_CL = "floor, channels-last inputs"


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def main(argv=None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the batch-4 official case")
    parser.add_argument("--bf16", action="store_true", help="also ours in bfloat16 (whole tower)")
    parser.add_argument("--only", choices=("official", "demo"), help="run only these cases")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    default_threads = torch.get_num_threads()
    thread_counts = [args.threads] if args.threads else sorted({1, default_threads})
    if device.type != "cpu":
        thread_counts = thread_counts[:1]
    print(describe_machine(device, None))

    rows, summary = [], []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for name, blocks, channels, image, batch, full_only in CASES:
            if (full_only and not args.full) or (args.only and not name.startswith(args.only)):
                continue
            sizes = pyramid_sizes(*image)
            shape = f"{name} b{batch} C{channels} P3 {sizes[0][0]}x{sizes[0][1]}"
            ratios = _run_case(args, device, blocks, channels, sizes, batch, rows, shape, threads)
            summary.append([shape, threads, *ratios])
            print(f"done: {shape}, {threads} thread(s): ours/floor {ratios[0]:.3f} "
                  f"(channels-last floor {ratios[1]:.3f}), ours/reference {ratios[2]:.3f}, "
                  f"max |diff| {ratios[3]:.2g}", flush=True)

    print_table(
        "DyHead tower inference (median of timed runs; reference, ours and floor interleaved)",
        ["case", "threads", "variant", "max |diff| vs ref", "time s", "/ floor", "/ reference", "images/s", "peak MB"],
        rows,
    )
    print_table(
        "Summary: ours (float32) against the dense-conv floor and the reference, same run",
        ["case", "threads", "ours / floor", "ours / channels-last floor", "ours / reference",
         "max |ours - reference|"],
        summary,
    )


def _run_case(args, device, blocks, channels, sizes, batch, rows, shape, threads):
    tower = make_tower(blocks, channels, device)
    reference = reference_from(tower).eval()
    feats = make_features(sizes, batch, channels, device)

    def runner(model, inputs, ctx=contextlib.nullcontext):
        def run():
            with torch.inference_mode(), ctx():
                return model(inputs)

        return run

    fns = {REFERENCE: runner(reference, feats), OURS: runner(tower, feats)}
    fns[FLOOR] = runner(lambda f: floor_convs(tower, f), feats)
    feats_cl = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    fns[FLOOR_CL] = runner(lambda f: floor_convs(tower, f), feats_cl)
    if device.type == "cuda":
        fns["ours fp16 autocast"] = runner(tower, feats, lambda: torch.autocast("cuda", dtype=torch.float16))
        fns["ours bf16 autocast"] = runner(tower, feats, lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    elif args.bf16 and cpu_has_bf16():
        tower_bf16 = make_tower(blocks, channels, device).to(torch.bfloat16)
        fns["ours bfloat16"] = runner(tower_bf16, [f.to(torch.bfloat16) for f in feats])

    ref_out = fns[REFERENCE]()
    diffs = {label: max_abs_diff(fn(), ref_out) for label, fn in fns.items() if label not in (FLOOR, FLOOR_CL)}
    del ref_out
    timings = time_interleaved(fns, device, args.repeats)
    memory = {label: peak_memory_mb(fn, device) for label, fn in fns.items()}
    ref_t, floor_t = timings[REFERENCE].median_s, timings[FLOOR].median_s
    for label in fns:
        t = timings[label].median_s
        rows.append([shape, threads, label, diffs.get(label, "-"), t, t / floor_t, t / ref_t, batch / t, memory[label]])
    ours_t = timings[OURS].median_s
    return ours_t / floor_t, ours_t / timings[FLOOR_CL].median_s, ours_t / ref_t, diffs[OURS]


if __name__ == "__main__":
    main()
