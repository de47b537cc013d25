"""The DataLoader pipeline: the same batches with and without worker processes, the same global
batch for any number of processes, and a loader started at a resumed iteration."""

from __future__ import annotations

import pytest
import torch

from dyhead.data import demo
from dyhead.data.coco import CocoDetection
from dyhead.data.loader import TrainBatches, image_loader, train_loader


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    demo.generate(root, seed=0, train=6, val=3, spec=demo.DemoSpec(size=128, min_object=10, max_object=60,
                                                                   min_objects=3, max_objects=4))
    return root


def batches(root, rank=0, world=1, batch=4, cache=False):
    ds = CocoDetection(root, "train", min_size=96, max_size=128, cache=cache, skip_empty=True)
    return TrainBatches(ds, batch_size=batch, seed=3, rank=rank, world_size=world, size_divisibility=128)


def same(a, b) -> None:
    assert a.indices == b.indices and torch.equal(a.images, b.images)
    assert all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))


def test_workers_give_the_batches_of_the_main_process(data):
    plain = [b for b, _ in train_loader(batches(data, cache=True), 0, 4, workers=0)]
    workers = [b for b, _ in train_loader(batches(data), 0, 4, workers=2)]
    assert len(plain) == len(workers) == 4
    for a, b in zip(plain, workers):
        same(a, b)
    assert plain[0].indices != plain[1].indices or plain[0].images.shape != plain[1].images.shape


def test_two_processes_share_one_global_batch(data):
    """Ranks 0 and 1 of 2 at batch 2 each hold exactly the images (and flips) of one process at batch 4."""
    one = batches(data)
    ranks = [batches(data, rank=r, world=2) for r in (0, 1)]
    for it in range(5):  # across an epoch boundary (6 images -> 1 iteration of 4 per epoch)
        whole, _ = one[it]
        parts = [r[it][0] for r in ranks]
        order = [i for pair in zip(*(p.indices for p in parts)) for i in pair]
        assert sorted(order) == sorted(whole.indices)
        for p in parts:
            for j, index in enumerate(p.indices):
                k = whole.indices.index(index)
                assert torch.equal(p.images[j], whole.images[k])  # the same flip, the same padding
                assert torch.equal(p.boxes[j], whole.boxes[k])


def test_loader_from_a_resumed_iteration(data):
    full = [b for b, _ in train_loader(batches(data), 0, 3)]
    resumed = [b for b, _ in train_loader(batches(data), 2, 3)]
    same(full[2], resumed[0])


def test_image_loader_keeps_order_and_reports_unreadable(data, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    paths = sorted((data / "val").glob("*.jpg")) + [bad]
    chunks = list(image_loader(paths, batch_size=2, workers=2))
    items = [item for chunk in chunks for item in chunk]
    assert [i for i, _, _ in items] == [0, 1, 2, 3] and [len(c) for c in chunks] == [2, 2]
    assert items[3][1] is None and items[3][2] and items[0][1].dtype.name == "uint8"
