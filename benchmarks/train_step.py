"""One training step of the demo-size DyHead tower: forward + backward, fast op vs torchvision's kernel.

    python -m benchmarks.train_step [--device cpu|cuda] [--repeats 3] [--batch 8] [--size 320]

The same `DyHeadTower` (6 blocks, 64 channels, P3-P7 of a 320x320 image, batch 8) runs with
`modulated_deform_conv2d` forced to "fast" and to "torchvision" (`set_default_impl`).
The loss is a fixed random projection of all output levels, so every gradient is non-trivial.
Prints the median time per step, the ratio, and how far the gradients (all parameters and the
tower inputs) agree.
"""

from __future__ import annotations

import statistics

import torch

from .common import (
    base_parser,
    deform_impl,
    describe_machine,
    peak_memory_mb,
    print_table,
    pyramid_sizes,
    time_interleaved,
)
from .tower import make_features, make_tower


def main(argv=None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=320, help="square image side, padded to 32")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(describe_machine(device, args.threads))

    sizes = pyramid_sizes(args.size, args.size)
    tower = make_tower(args.blocks, args.channels, device).train()
    feats = [f.requires_grad_() for f in make_features(sizes, args.batch, args.channels, device)]
    g = torch.Generator().manual_seed(2)
    projections = [torch.randn(f.shape, generator=g).to(device) for f in feats]

    def step(impl: str):
        def run():
            for f in feats:
                f.grad = None
            tower.zero_grad(set_to_none=True)
            with deform_impl(impl):
                outs = tower(feats)
                loss = sum((o * p).sum() for o, p in zip(outs, projections))
                loss.backward()
            return loss

        return run

    fns = {"torchvision kernel": step("torchvision"), "fast (ours)": step("fast")}
    grads = {label: _gradients(fn, tower, feats) for label, fn in fns.items()}

    # Ground truth: the same step in float64 (fast op; it matches torchvision's float64 gradients
    # to ~1e-14, checked below on a smaller batch). Some gradients (e.g. the scale-attention bias,
    # a sum over a few cancelling terms) carry float32 round-off of ~1e-2 relative in *either*
    # implementation, so each float32 result is compared with float64 rather than with the other.
    tower64 = make_tower(args.blocks, args.channels, device).train().double()

    def run_double(feats64, proj64, impl):
        def run():
            with deform_impl(impl):
                outs = tower64(feats64)
                sum((o * p).sum() for o, p in zip(outs, proj64)).backward()

        return _gradients(run, tower64, feats64)

    feats64 = [f.detach().double().requires_grad_() for f in feats]
    truth = run_double(feats64, [p.double() for p in projections], "fast")
    small = [f.detach()[:2].double().requires_grad_() for f in feats]
    small_proj = [p[:2].double() for p in projections]
    exact = _agreement(run_double(small, small_proj, "fast"), run_double(small, small_proj, "torchvision"))

    timings = time_interleaved(fns, device, args.repeats)
    memory = {label: peak_memory_mb(fn, device) for label, fn in fns.items()}
    ref_t = timings["torchvision kernel"].median_s
    shape = f"{args.blocks} blocks, C{args.channels}, {args.size}x{args.size} (P3 {sizes[0][0]}x{sizes[0][1]}), batch {args.batch}"
    rows = [
        [label, t.median_s, ref_t / t.median_s, args.batch / t.median_s, memory[label]]
        for label, t in timings.items()
    ]
    print_table(
        f"Training step (forward + backward): {shape}",
        ["deformable conv", "time s/step", "speed-up vs torchvision", "images/s", "peak MB"],
        rows,
    )
    print(f"\ngradients: all {len(truth)} tensors (parameters and tower inputs)")
    comparisons = [
        (f"{label} float32 vs float64 truth", _agreement(g, truth)) for label, g in grads.items()
    ]
    comparisons.append(("fast vs torchvision, both float64, batch 2", exact))
    for label, (_, rel_max, rel_norm, name, median_norm) in comparisons:
        print(
            f"  {label}: worst max|diff|/max|grad| {rel_max:.2g} ({name}), "
            f"worst ||diff||/||grad|| {rel_norm:.2g}, median ||diff||/||grad|| {median_norm:.2g}"
        )
    # Images are independent (GroupNorm, scale and task attention are per image), so the input
    # gradient shows per image whether a discrepancy is everywhere or one image near a kink.
    for label, g in grads.items():
        per_image = [
            (g["input P3"][i].double() - truth["input P3"][i]).norm().item()
            / truth["input P3"][i].norm().item()
            for i in range(args.batch)
        ]
        print(f"  {label} float32, ||diff||/||grad|| of input P3 per image: "
              + " ".join(f"{e:.1e}" for e in per_image))


def _gradients(fn, tower, feats) -> dict:
    for f in feats:
        f.grad = None
    tower.zero_grad(set_to_none=True)
    fn()
    named = {f"input P{3 + i}": f.grad.clone() for i, f in enumerate(feats)}
    named.update({n: p.grad.clone() for n, p in tower.named_parameters()})
    return named


def _agreement(ours: dict, ref: dict) -> tuple[int, float, float, str, float]:
    """(tensor count, worst max-relative difference, worst norm-relative difference, the tensor
    with the worst max-relative difference, median norm-relative difference).

    A tensor whose reference gradient is zero up to round-off (e.g. a conv bias followed by a
    GroupNorm with one channel per group) is measured against sqrt(eps) times the largest gradient.
    """
    eps = max(torch.finfo(next(iter(d.values())).dtype).eps for d in (ours, ref))
    floor = eps**0.5 * max(r.abs().max().item() for r in ref.values())
    worst_max, worst_name, norms = 0.0, "", []
    for name, r in ref.items():
        d = (ours[name] - r).double()
        rel_max = d.abs().max().item() / max(r.abs().max().item(), floor)
        norms.append(d.norm().item() / max(r.double().norm().item(), floor * r.numel() ** 0.5))
        if rel_max >= worst_max:
            worst_max, worst_name = rel_max, name
    return len(ref), worst_max, max(norms), worst_name, statistics.median(norms)

if __name__ == "__main__":
    main()
