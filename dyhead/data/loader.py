"""The data pipeline on `torch.utils.data.DataLoader`: decoding, resizing, flips and collation in
worker processes, the same batches for the same seed whatever the number of workers or processes.

Training (`TrainBatches`, `train_loader`): item *i* of the dataset is the whole batch of iteration
*i* for one rank, so the batch depends on (seed, iteration, rank, world size) alone:

* sample order: `DistributedSampler(shuffle=True, seed, drop_last=True)` re-seeded per epoch; the
  epochs are cut into consecutive batches of the global batch size, rank r taking its slots
  (r, r + W, ...) — with W processes of batch B/W the global batch is the same images as one
  process of batch B;
* flips: a generator seeded by (seed, iteration) draws one flip per slot of the *global* batch and
  each rank takes its slots', so flips do not depend on the world size either;
* a resumed run starts the sampler at the saved iteration and reads exactly the batches an
  uninterrupted run would.

`IterationSampler` hands the iterations to the workers in order; the loader returns batches in that
order (DataLoader keeps the sampler's order whatever the number of workers). The in-memory cache of
decoded, resized images (`CocoDetection(cache=True)`) stays an option for small datasets: with
``workers=0`` it lives in the training process; with workers each worker keeps its own (persistent
workers), so on few cores and small data ``workers=0`` and the cache is the fast choice.

Evaluation (`ImageFiles`, `image_loader`): decoding of the evaluation images in workers, batches in
image order; the model resizes (its own test-time resize).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from dyhead.data.coco import Batch, CocoDetection, DatasetError, collate
from dyhead.preprocess import ImageLoadError, load_image

__all__ = ["TrainBatches", "IterationSampler", "train_loader", "ImageFiles", "image_loader", "default_workers"]


def default_workers(device: torch.device) -> int:
    """Loader workers when none are asked for: 4 (at most the spare cores) on CUDA, none on the CPU,
    where workers compete with the model for the same cores."""
    if device.type != "cuda":
        return 0
    import os

    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding and resizing are single-threaded; keep workers off the model's cores


class TrainBatches(Dataset):
    """Iteration -> (this rank's `Batch`, [(dataset index, reason) of images that could not be read])."""

    def __init__(self, dataset: CocoDetection, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 flip_prob: float = 0.5, pixel_format: str = "RGB", pixel_mean: Sequence[float] = (0.0, 0.0, 0.0),
                 pixel_std: Sequence[float] = (1.0, 1.0, 1.0), size_divisibility: int = 32) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.dataset = dataset
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.flip_prob = flip_prob
        self.collate_args = dict(pixel_format=pixel_format, pixel_mean=tuple(pixel_mean), pixel_std=tuple(pixel_std),
                                 size_divisibility=size_divisibility)
        self.sampler = DistributedSampler(range(len(dataset)), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self._epoch: tuple[Optional[int], list[int]] = (None, [])

    def __len__(self) -> int:  # the loader is driven by `IterationSampler`, not by this length
        return 2**62

    @property
    def iterations_per_epoch(self) -> int:
        return len(self.sampler) // self.local_batch

    def indices(self, iteration: int) -> list[int]:
        """This rank's dataset indices for `iteration`."""
        per_epoch = self.iterations_per_epoch
        if per_epoch == 0:
            raise DatasetError(f"{len(self.dataset)} training images are fewer than one batch of {self.batch_size}")
        epoch, pos = divmod(iteration, per_epoch)
        if self._epoch[0] != epoch:
            self.sampler.set_epoch(epoch)
            self._epoch = (epoch, list(iter(self.sampler)))
        return self._epoch[1][pos * self.local_batch:(pos + 1) * self.local_batch]

    def flips(self, iteration: int) -> np.ndarray:
        """This rank's flips: its slots of one draw per global-batch slot."""
        flips = np.random.default_rng([self.seed, iteration]).random(self.batch_size) < self.flip_prob
        # DistributedSampler gives rank r every W-th index of the epoch: global slot r + W * j.
        return flips.reshape(self.local_batch, self.world_size)[:, self.rank]

    def __getitem__(self, iteration: int) -> tuple[Batch, list[tuple[str, str]]]:
        samples, kept_flips, skipped = [], [], []
        for index, flip in zip(self.indices(iteration), self.flips(iteration)):
            sample = self.dataset.load(index)
            if sample is None:
                skipped.append((index, self.dataset.skip_reason(index)))
                continue
            samples.append(sample)
            kept_flips.append(bool(flip))
        return collate(samples, kept_flips, **self.collate_args), skipped


class IterationSampler(Sampler[int]):
    """start, start + 1, ... (up to `stop`, or without end for a time budget)."""

    def __init__(self, start: int, stop: Optional[int] = None) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop)) if self.stop is not None else itertools.count(self.start)

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless iteration sampler has no length")
        return max(0, self.stop - self.start)


def train_loader(batches: TrainBatches, start: int, stop: Optional[int], workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """Batches of iterations start..stop-1 (endless with stop None), decoded in `workers` processes."""
    return DataLoader(batches, batch_size=None, sampler=IterationSampler(start, stop), num_workers=workers,
                      pin_memory=pin_memory, worker_init_fn=_one_thread if workers else None,
                      persistent_workers=workers > 0, prefetch_factor=2 if workers else None)


class ImageFiles(Dataset):
    """i -> (i, HxWx3 uint8 RGB image or None, reason it could not be read or "")."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Optional[np.ndarray], str]:
        try:
            return i, load_image(self.paths[i]), ""
        except ImageLoadError as exc:
            return i, None, str(exc)


def _as_list(items: list) -> list:
    return items


def image_loader(paths: Sequence[str | Path], batch_size: int, workers: int = 0) -> DataLoader:
    """Lists of (position, image or None, reason) in `paths` order, `batch_size` per list."""
    return DataLoader(ImageFiles(paths), batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=_as_list, worker_init_fn=_one_thread if workers else None,
                      prefetch_factor=2 if workers else None)
