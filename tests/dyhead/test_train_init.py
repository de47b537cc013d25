"""Training started from existing weights, through the command line and the Python API: the COCO
1x preset from an R-50.pkl-layout file (reduced widths) on a tiny COCO-layout folder, and
fine-tuning the bundled demo model to a 3-class dataset of the demo generator."""

from __future__ import annotations

import pickle
from dataclasses import replace

import torch

from dyhead.checkpoint import load_detector
from dyhead.data import demo
from dyhead.train import TRAIN_PRESETS, Trainer, main
from tests.conftest import REPO_ROOT
from tests.dyhead.test_init_weights import msra_pickle_dict

SPEC = demo.DemoSpec(size=128, min_object=10, max_object=60, min_objects=3, max_objects=4)


def test_coco_r50_1x_from_an_r50_pkl_on_a_coco_layout_folder(tmp_path, capsys):
    root = tmp_path / "coco"
    demo.generate_split(root, "train2017", 2, seed=0, spec=SPEC)
    pkl = tmp_path / "R-50.pkl"
    pkl.write_bytes(pickle.dumps(msra_pickle_dict(), protocol=2))
    out = tmp_path / "run"
    main(["--preset", "coco_r50_1x", "--init", str(pkl), "--data", str(root), "--split", "train2017",
          "--out", str(out), "--max-iter", "2", "--batch-size", "1", "--min-size", "64", "--max-size", "64",
          "--device", "cpu", "--no-progress", "--workers", "0"])
    err = capsys.readouterr().err
    assert "detectron2 MSRA ResNet pickle, read as numpy arrays only" in err
    assert "left out of the file 2: fc1000_w, fc1000_b" in err
    model, info = load_detector(out / "model_final.pt")
    bb = model.config.backbone
    assert info.meta["iteration"] == 2 and info.meta["init"] == str(pkl)
    assert (bb.kind, bb.stem_out, bb.base_width, bb.res2_out) == ("resnet_msra", 8, 8, 32)
    assert (model.config.tower.num_blocks, model.config.fpn_channels) == (6, 256)  # the preset's head
    # Started from the file's weights (two warm-up steps at LR 1e-5 move them very little).
    assert torch.allclose(model.backbone.body.res4[0].conv1.weight,
                          torch.from_numpy(msra_pickle_dict()["res4_0_branch2a_w"]), atol=1e-3)


def test_fine_tuning_the_demo_model_to_three_classes(tmp_path, capsys):
    root = tmp_path / "shapes3"
    demo.generate(root, seed=1, train=4, val=0, spec=replace(SPEC, classes=("star", "ring", "cross")))
    preset = replace(TRAIN_PRESETS["demo_cpu"], batch_size=2, base_lr=0.02, warmup_iters=0, min_size=96,
                     max_size=128, log_period=1, checkpoint_period=1000)
    trainer = Trainer(preset, root, tmp_path / "run", progress=False, workers=0,
                      init=REPO_ROOT / "checkpoints" / "demo_dyhead.pt")
    err = capsys.readouterr().err
    assert "re-initialised 2: head.cls_logits.weight, head.cls_logits.bias" in err
    assert "classes ['circle', 'square', 'triangle', 'star', 'ring', 'cross'] -> ['star', 'ring', 'cross']" in err
    assert trainer.config.class_names == ("star", "ring", "cross") and trainer.config.category_ids == (4, 5, 6)
    assert trainer.config.tower.num_blocks == 6 and trainer.config.fpn_channels == 32  # the demo architecture
    trainer.train(stop_at=12)
    losses = [r["loss_cls"] for r in trainer.history]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
