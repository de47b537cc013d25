"""The distributed path on the CPU: 2 processes on the gloo backend (torch.multiprocessing.spawn),
a tiny model, a few iterations.

* 2 processes at batch 1 each = 1 process at batch 2: the same losses and the same parameters after
  3 steps, within 1e-5 (relative, losses) and 1e-5 (absolute, parameters) — float32 sums in another
  order (DDP all-reduces the gradients; the loss normalisers are averaged over processes).
* resume under 2 processes continues exactly (the same losses as an uninterrupted 2-process run).
* the sharded scale-ratio pass gives exactly the rows of the unsharded one.

The model uses GroupNorm in its small backbone: BatchNorm statistics are per process under DDP
(no SyncBN), so a BatchNorm model is not expected to match a single process.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp

from dyhead.backbone import BackboneConfig
from dyhead.config import DyHeadConfig
from dyhead.data import demo
from dyhead.train import TRAIN_PRESETS, Trainer, TrainPreset

WORLD = 2
STEPS = 3
#: size_divisibility 128: every image pads to 128 x 128 in either set-up, so the inputs are identical.
PRESET = TrainPreset(
    detector=replace(
        TRAIN_PRESETS["demo_cpu"].detector,
        backbone=BackboneConfig(kind="small", small_widths=(8, 8, 16, 16, 16), small_norm="group"),
        fpn_channels=16,
        tower=DyHeadConfig(num_blocks=1, channels=16, norm_groups=8),
        size_divisibility=128,
    ),
    max_iter=40, batch_size=2, base_lr=0.05, warmup_iters=0, min_size=96, max_size=128,
    checkpoint_period=1000, log_period=1, cache_images=True,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params(trainer) -> dict:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _losses(trainer) -> list[float]:
    return [r["loss"] for r in trainer.history]


def _worker(rank: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from analysis.scale_ratios import collect_scale_weights
    from tests.analysis.conftest import tiny_detector

    result = {}
    straight = Trainer(PRESET, data, os.path.join(out, "straight"), device="cpu", progress=False, workers=0)
    straight.train(stop_at=STEPS)
    result["losses"] = _losses(straight)
    result["params"] = _params(straight)

    first = Trainer(PRESET, data, os.path.join(out, "resumed"), device="cpu", progress=False, workers=0)
    first.train(stop_at=2)
    first.save()
    first._barrier()
    resumed = Trainer(PRESET, data, os.path.join(out, "resumed"), device="cpu", progress=False, workers=0)
    resumed.load_resume(os.path.join(out, "resumed", "resume.pt"))
    resumed.train(stop_at=STEPS)
    result["resumed_losses"] = _losses(resumed)

    run = collect_scale_weights(tiny_detector(), data, os.path.join(out, "scale_weights.csv"), split="val",
                                rank=rank, world_size=WORLD, show_progress=False, merge_timeout_s=60)
    result["merged"] = run.merged
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_data")
    demo.generate(root, seed=0, train=4, val=3, spec=demo.DemoSpec(size=128, min_object=10, max_object=60,
                                                                   min_objects=3, max_objects=4))
    return root


@pytest.fixture(scope="module")
def two_processes(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_out")
    mp.spawn(_worker, args=(_free_port(), str(data), str(out)), nprocs=WORLD, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_two_processes_match_one_with_the_same_global_batch(data, two_processes, tmp_path):
    _, results = two_processes
    single = Trainer(PRESET, data, tmp_path, device="cpu", progress=False, workers=0)
    single.train(stop_at=STEPS)
    ref_params = _params(single)
    assert len(results[0]["losses"]) == STEPS
    assert results[0]["losses"] == pytest.approx(_losses(single), rel=1e-5)
    for r in range(WORLD):  # DDP keeps the replicas identical
        for k, v in ref_params.items():
            assert torch.allclose(results[r]["params"][k].float(), v.float(), atol=1e-5), k


def test_resume_under_two_processes_is_exact(two_processes):
    _, results = two_processes
    assert results[0]["resumed_losses"] == results[0]["losses"][2:]


def test_sharded_scale_ratio_pass_equals_the_unsharded_rows(data, two_processes, tmp_path):
    from analysis.scale_ratios import collect_scale_weights
    from tests.analysis.conftest import tiny_detector

    out, results = two_processes
    assert results[0]["merged"] and not results[1]["merged"]
    single = collect_scale_weights(tiny_detector(), data, tmp_path / "w.csv", split="val", rank=0, world_size=1,
                                   show_progress=False)
    rows = lambda p: [line for line in p.read_text().splitlines() if not line.startswith("#")]  # noqa: E731
    assert len(rows(single.weights_csv)) > 1 and rows(out / "scale_weights.csv") == rows(single.weights_csv)
