"""A few CPU training iterations of a tiny detector on generated data: the loss goes down, the
learning-rate schedule is the official one, and a resumed run reproduces an uninterrupted one."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from dyhead.backbone import BackboneConfig
from dyhead.checkpoint import load_detector
from dyhead.config import DyHeadConfig
from dyhead.data import demo
from dyhead.train import TRAIN_PRESETS, Trainer, TrainPreset, lr_factor

TINY = TrainPreset(
    detector=replace(
        TRAIN_PRESETS["demo_cpu"].detector,
        backbone=BackboneConfig(kind="small", small_widths=(8, 8, 16, 16, 16)),
        fpn_channels=16,
        tower=DyHeadConfig(num_blocks=1, channels=16, norm_groups=8),
        size_divisibility=32,
    ),
    max_iter=40,
    batch_size=2,
    base_lr=0.1,
    clip_grad_norm=10.0,
    warmup_iters=2,
    warmup_factor=0.1,
    min_size=96,
    max_size=128,
    checkpoint_period=1000,
    log_period=1,
    cache_images=True,
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    spec = demo.DemoSpec(size=128, min_object=10, max_object=60, min_objects=3, max_objects=4)
    demo.generate(root, seed=0, train=4, val=2, spec=spec)
    return root


def test_lr_schedule_matches_the_1x_recipe():
    preset = TRAIN_PRESETS["coco_r50_1x"]
    assert (preset.max_iter, preset.batch_size, preset.base_lr, preset.min_size, preset.max_size) == (90000, 16, 0.01, 800, 1333)
    assert lr_factor(preset, 0, 0.0) == pytest.approx(0.001)
    assert lr_factor(preset, 500, 500 / 90000) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(preset, 59999, 59999 / 90000) == 1.0
    assert lr_factor(preset, 60000, 60000 / 90000) == pytest.approx(0.1)  # step at 60k
    assert lr_factor(preset, 79999, 79999 / 90000) == pytest.approx(0.1)
    assert lr_factor(preset, 80000, 80000 / 90000) == pytest.approx(0.01)  # step at 80k


def test_loss_decreases_and_resume_is_exact(tiny_data, tmp_path):
    straight = Trainer(TINY, tiny_data, tmp_path / "straight", progress=False)
    straight.train(stop_at=16)
    losses = [r["loss"] for r in straight.history]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.85 * sum(losses[:4]) / 4, losses

    # Interrupted at iteration 12, resumed in a fresh trainer: iterations 13-16 give the same losses.
    first = Trainer(TINY, tiny_data, tmp_path / "resumed", progress=False)
    first.train(stop_at=12)
    first.save()
    resumed = Trainer(TINY, tiny_data, tmp_path / "resumed", progress=False)
    resumed.load_resume(tmp_path / "resumed" / "resume.pt")
    assert resumed.state.iteration == 12
    resumed.train(stop_at=16)
    assert [r["loss"] for r in resumed.history] == losses[12:]

    # The resume file loads with weights_only=True; the detector checkpoint with load_detector.
    state = torch.load(tmp_path / "resumed" / "resume.pt", weights_only=True)
    assert state["iteration"] == 12
    model, info = load_detector(tmp_path / "resumed" / "model_last.pt")
    assert model.config.class_names == demo.CATEGORY_NAMES and info.meta["iteration"] == 12
    lines = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == list(range(1, 17))


def test_time_budget_schedule_finishes(tiny_data, tmp_path):
    trainer = Trainer(TINY, tiny_data, tmp_path, progress=False, time_budget_s=1e-9)
    trainer.train()
    assert trainer.state.iteration == 1  # the budget is spent after one iteration
    assert (tmp_path / "model_final.pt").is_file()
    assert trainer.progress_fraction() == 1.0 and trainer.current_lr() == pytest.approx(0.1 * 0.1 * 0.1 * 0.55)


def test_build_time_ablation_flags(tiny_data, tmp_path):
    trainer = Trainer(TINY, tiny_data, tmp_path, progress=False, no_scale_attention=True, no_task_attention=True)
    tower = trainer.config.tower
    assert (tower.use_scale_attention, tower.use_spatial_attention, tower.use_task_attention) == (False, True, False)
    assert not any("scale_attention" in k or "task_attention" in k for k in trainer.model.state_dict())


def test_progress_into_a_log_is_a_line_every_five_percent(tiny_data, tmp_path, capsys):
    """stderr captured (not a terminal): 40 iterations give one line per 5 % (every 2 iterations) with
    the running loss, and no carriage-return redraws."""
    preset = replace(TINY, log_period=1000)
    Trainer(preset, tiny_data, tmp_path, progress=True).train()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("train: ")]
    assert "\r" not in err
    assert [line.split(" (")[0] for line in lines] == [f"train: {2 * i}/40 it" for i in range(1, 21)]
    assert all("loss=" in line and "lr=" in line for line in lines)


def test_command_line_reports_bad_input_in_one_line(tiny_data, tmp_path, capsys):
    """A missing dataset and an --init file of a kind the trainer cannot train: exit status 2 and one
    line naming the problem, no traceback."""
    from dyhead.detector import PRESETS, build_detector, kind_settings
    from dyhead.train import cli
    from dyhead.weights import save_checkpoint

    assert cli(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "a"), "--max-iter", "1"]) == 2
    assert "dataset root" in capsys.readouterr().err
    retina = save_checkpoint(tmp_path / "retina.pt", build_detector(PRESETS["demo"].replace(**kind_settings("retinanet"))))
    assert cli(["--data", str(tiny_data), "--out", str(tmp_path / "b"), "--max-iter", "1", "--init", str(retina)]) == 2
    err = capsys.readouterr().err
    assert "training a retinanet detector is not supported" in err and "Traceback" not in err
