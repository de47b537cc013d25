"""Whole detector (ResNet-50 + FPN + DyHead x6 + ATSS head) at 800x1333: ours vs a reference build.

    python -m benchmarks.detector [--device cpu|cuda] [--repeats 2] [--preset atss_r50_dyhead6]

The reference build is the same model with `modulated_deform_conv2d` forced to torchvision's kernel
(`dyhead.ops.set_default_impl("torchvision")` for its calls); "ours" uses the default choice ("auto": the fast op on CPU,
torchvision's kernel on CUDA). Weights are the random initialisation (seeded); the input is one
random image resized and padded the way the model's own preprocessing does. Times the network
forward (backbone, FPN, tower, head) under `torch.inference_mode()`; on CUDA also under float16
autocast, as `predict` runs it.
"""

from __future__ import annotations


import numpy as np
import torch

from dyhead.device import inference_autocast
from dyhead.detector import PRESETS, build_detector

from .common import (
    base_parser,
    deform_impl,
    describe_machine,
    max_abs_diff,
    peak_memory_mb,
    print_table,
    time_interleaved,
)


def main(argv=None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--preset", default="atss_r50_dyhead6", choices=sorted(PRESETS))
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(describe_machine(device, args.threads))

    torch.manual_seed(0)
    model = build_detector(PRESETS[args.preset]).to(device).eval()
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    batch, _, _ = model.preprocess([image])

    def forward(impl: str, amp: bool = False):
        def run():
            with deform_impl(impl), torch.inference_mode(), inference_autocast(device, "float16" if amp else "float32"):
                out = model(batch)
            return [out.cls_logits, out.bbox_deltas, out.centerness]

        return run

    fns = {"reference (torchvision kernel)": forward("torchvision"), "ours": forward("auto")}
    if device.type == "cuda":
        fns["ours fp16 autocast"] = forward("auto", amp=True)
    ref_out = fns["reference (torchvision kernel)"]()
    diffs = {label: max_abs_diff(fn(), ref_out) for label, fn in fns.items()}
    scale = max(t.abs().max().item() for level in ref_out for t in level)
    timings = time_interleaved(fns, device, args.repeats)
    memory = {label: peak_memory_mb(fn, device) for label, fn in fns.items()}
    ref_t = timings["reference (torchvision kernel)"].median_s
    case = f"{args.preset}, input {args.height}x{args.width} padded to {batch.shape[-2]}x{batch.shape[-1]}"
    rows = [
        [label, diffs[label], t.median_s, t.median_s / ref_t, 1.0 / t.median_s, memory[label]]
        for label, t in timings.items()
    ]
    print_table(
        f"Detector forward: {case} (head outputs up to {scale:.3g} in magnitude)",
        ["variant", "max |diff| vs ref", "time s", "ratio vs ref", "images/s", "peak MB"],
        rows,
    )


if __name__ == "__main__":
    main()
