"""Training data-loader throughput: images per second through decode, resize, flip and collate
(`dyhead.data.loader.train_loader`, no model), with 0 workers and with N workers, in one run.

    python -m benchmarks.data_loader --data data/demo --split val --batches 30 --workers 0 2
"""

from __future__ import annotations

import argparse
import time

import torch

from dyhead.data.coco import CocoDetection
from dyhead.data.loader import TrainBatches, train_loader


def images_per_second(root, split: str, workers: int, batches: int, batch_size: int, size: tuple[int, int]) -> float:
    ds = CocoDetection(root, split, min_size=size[0], max_size=size[1], cache=False, skip_empty=True)
    source = TrainBatches(ds, batch_size=batch_size, seed=0, size_divisibility=128)
    loader = iter(train_loader(source, 0, batches + 1, workers))
    next(loader)  # start-up (worker processes, first batch) not timed
    start = time.perf_counter()
    count = sum(len(batch.indices) for batch, _ in loader)
    return count / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--min-size", type=int, default=320)
    parser.add_argument("--max-size", type=int, default=384)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"| workers | images/s ({args.batches} batches of {args.batch_size}, {args.data} {args.split}, "
          f"{args.min_size}/{args.max_size} px) |\n| --- | --- |")
    for w in args.workers:
        rate = images_per_second(args.data, args.split, w, args.batches, args.batch_size, (args.min_size, args.max_size))
        print(f"| {w} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
