"""The GPU paths (pytest marker ``cuda``; every test skips without CUDA, NCCL DDP without two GPUs).

Run them with ``pytest -m cuda`` or ``benchmarks/gpu_check.sh``. Tolerances:

* float32 on CUDA against the CPU: tower outputs and head outputs within 1e-3 absolute (TF32 off);
  the same detections above score 0.4 (boxes within 0.5 px);
* float16 / bfloat16 autocast against CPU float32: tower outputs within 5e-2 / 1e-1 of the output's
  largest magnitude; every CPU detection above score 0.4 found again (same class, IoU >= 0.9);
* a few AMP training steps: the mean loss of the last 3 of 15 steps below 0.85 x the first 3;
* DDP on NCCL, 2 GPUs x batch 1 against 1 GPU x batch 2: losses within 1e-3 relative.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp

from dyhead.config import DyHeadConfig
from dyhead.data import demo
from dyhead.tower import DyHeadTower
from tests.dyhead.detector_fixtures import make_image, tiny_detector

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")]

SIZES = [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]


@pytest.fixture(autouse=True)
def no_tf32():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _tower_inputs():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 32, h, w, generator=g) for h, w in SIZES]


@pytest.mark.parametrize("dtype,rel", [(None, None), (torch.float16, 5e-2), (torch.bfloat16, 1e-1)])
def test_tower_on_cuda_matches_the_cpu(dtype, rel):
    torch.manual_seed(0)
    tower = DyHeadTower(DyHeadConfig(num_blocks=2, channels=32)).eval()
    x = _tower_inputs()
    with torch.inference_mode():
        ref = tower(x)
        gpu = tower.cuda()
        if dtype is None:
            out = gpu([t.cuda() for t in x])
        else:
            with torch.autocast("cuda", dtype=dtype):
                out = gpu([t.cuda() for t in x])
    for r, o in zip(ref, out):
        o = o.float().cpu()
        if dtype is None:
            assert torch.allclose(o, r, atol=1e-3), (o - r).abs().max()
        else:
            assert (o - r).abs().max() <= rel * r.abs().max(), ((o - r).abs().max(), r.abs().max())


def _matched(ref, other, min_score=0.4, iou=0.9, px=None) -> None:
    from torchvision.ops import box_iou

    keep = ref.scores > min_score
    assert keep.any(), "no CPU detection above the score: the test model is too weak"
    boxes, labels = ref.boxes[keep], ref.labels[keep]
    ious = box_iou(boxes, other.boxes.cpu().float())
    for i in range(len(boxes)):
        same_class = other.labels.cpu() == labels[i]
        assert (ious[i][same_class] >= iou).any(), f"CPU detection {i} not found on CUDA"
        if px is not None:
            j = int(torch.where(same_class, ious[i], torch.zeros_like(ious[i])).argmax())
            assert (other.boxes[j].cpu() - boxes[i]).abs().max() <= px


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_detector_on_cuda_gives_the_cpu_detections(precision):
    model = tiny_detector(num_blocks=2)
    images = [make_image(), make_image(70, 100, seed=3)]
    ref = model.infer(images, precision="float32").detections
    out = model.cuda().infer(images, precision=precision).detections
    for r, o in zip(ref, out):
        _matched(r, o, px=0.5 if precision == "float32" else None)


def test_amp_training_steps_lower_the_loss(tmp_path):
    from tests.dyhead.test_train import TINY
    from dyhead.train import Trainer

    root = tmp_path / "data"
    demo.generate(root, seed=0, train=4, val=0, spec=demo.DemoSpec(size=128, min_object=10, max_object=60,
                                                                   min_objects=3, max_objects=4))
    trainer = Trainer(TINY, root, tmp_path / "run", device="cuda", progress=False, amp=True, workers=2)
    assert trainer.use_amp
    trainer.train(stop_at=15)
    losses = [r["loss"] for r in trainer.history]
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3, losses


def test_app_runs_on_cuda():
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import APP_MAIN

    at = AppTest.from_file(str(APP_MAIN), default_timeout=300)
    at.run()
    at.sidebar.selectbox(key="device").select("cuda").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("running on **cuda" in m.value for m in at.sidebar.markdown), [m.value for m in at.sidebar.markdown]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nccl_worker(rank: int, port: int, data: str, out: str) -> None:
    from tests.dyhead.test_distributed import PRESET
    from dyhead.train import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    trainer = Trainer(PRESET, data, out, device="cuda", progress=False, amp=False, workers=0)
    assert torch.distributed.get_backend() == "nccl"
    trainer.train(stop_at=3)
    if rank == 0:
        torch.save([r["loss"] for r in trainer.history], os.path.join(out, "losses.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP on NCCL needs two GPUs")
def test_ddp_on_nccl_matches_one_gpu(tmp_path):
    from tests.dyhead.test_distributed import PRESET
    from dyhead.train import Trainer

    root = tmp_path / "data"
    demo.generate(root, seed=0, train=4, val=0, spec=demo.DemoSpec(size=128, min_object=10, max_object=60,
                                                                   min_objects=3, max_objects=4))
    mp.spawn(_nccl_worker, args=(_free_port(), str(root), str(tmp_path / "ddp")), nprocs=2, join=True)
    single = Trainer(replace(PRESET), root, tmp_path / "one", device="cuda", progress=False, amp=False, workers=0)
    single.train(stop_at=3)
    ddp = torch.load(tmp_path / "ddp" / "losses.pt", weights_only=True)
    assert ddp == pytest.approx([r["loss"] for r in single.history], rel=1e-3)
