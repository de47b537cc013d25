"""DyHead tower inference: our `DyHeadTower` vs the straightforward reference (`reference_tower.py`).

    python -m benchmarks.tower [--device cpu|cuda] [--repeats 3] [--full]

Shapes: the official model (6 blocks, 256 channels, P3-P7 of 800x1333 padded to a multiple of 32,
i.e. 800x1344) at batch 1 (and 4 with --full), and the demo model (6 blocks, 64 channels, 320x320) at
batch 1 and 8. Both towers hold the same weights; offsets have a spread of about 1 px.
Prints max |ours - reference|, the median time, the time ratio ours/reference, images/s and peak memory.
On CUDA it also runs ours under float16 and bfloat16 autocast.
"""

from __future__ import annotations

import contextlib

import torch

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


CASES = [
    # name, blocks, channels, image (h, w), batch, only with --full
    ("official 800x1333", 6, 256, (800, 1333), 1, False),
    ("official 800x1333", 6, 256, (800, 1333), 4, True),
    ("demo 320x320", 6, 64, (320, 320), 1, False),
    ("demo 320x320", 6, 64, (320, 320), 8, False),
]


def main(argv=None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the batch-4 official case")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(describe_machine(device, args.threads))

    rows = []
    for name, blocks, channels, image, batch, full_only in CASES:
        if full_only and not args.full:
            continue
        sizes = pyramid_sizes(*image)
        tower = make_tower(blocks, channels, device)
        reference = reference_from(tower).eval()
        feats = make_features(sizes, batch, channels, device)

        variants = {"reference (torchvision per branch)": (reference, contextlib.nullcontext)}
        variants["ours"] = (tower, contextlib.nullcontext)
        if device.type == "cuda":
            variants["ours fp16 autocast"] = (
                tower, lambda: torch.autocast("cuda", dtype=torch.float16)
            )
            variants["ours bf16 autocast"] = (
                tower, lambda: torch.autocast("cuda", dtype=torch.bfloat16)
            )

        def runner(model, ctx):
            def run():
                with torch.inference_mode(), ctx():
                    return model(feats)

            return run

        fns = {label: runner(m, ctx) for label, (m, ctx) in variants.items()}
        ref_out = fns["reference (torchvision per branch)"]()
        diffs = {label: max_abs_diff(fn(), ref_out) for label, fn in fns.items()}
        del ref_out
        timings = time_interleaved(fns, device, args.repeats)
        memory = {label: peak_memory_mb(fn, device) for label, fn in fns.items()}
        ref_t = timings["reference (torchvision per branch)"].median_s
        shape = f"{name} b{batch} C{channels} P3 {sizes[0][0]}x{sizes[0][1]}"
        for label in fns:
            t = timings[label].median_s
            rows.append([shape, label, diffs[label], t, t / ref_t, batch / t, memory[label]])
        print(f"done: {shape}", flush=True)

    print_table(
        "DyHead tower inference (median of timed runs, interleaved)",
        ["case", "variant", "max |diff| vs ref", "time s", "ratio vs ref", "images/s", "peak MB"],
        rows,
    )


if __name__ == "__main__":
    main()
