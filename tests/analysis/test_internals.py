"""Dataset-level internals (`analysis.internals`): rows against a direct pass, resume, shards, CLI."""

from __future__ import annotations

import pytest
import torch

from analysis.cli import main
from analysis.internals import INTERNAL_COLUMNS, collect_internals, internals_summary
from analysis.sources import dataset_images, resolve_dataset
from analysis.tables import read_table
from dyhead.atss_assigner import atss_assign
from dyhead.checkpoint import save_checkpoint
from dyhead.data.coco import load_coco
from dyhead.preprocess import load_image
from dyhead.trace import TraceSpec


def test_rows_match_a_direct_pass(tiny_model, tiny_data, tmp_path):
    run = collect_internals(tiny_model, tiny_data, tmp_path / "internals.csv", max_images=2, show_progress=False)
    df = read_table(run.csv)
    assert list(df.columns) == list(INTERNAL_COLUMNS) and run.computed == 2
    rec = dataset_images(tiny_data, "val", 1)[0]
    image = load_image(rec.path)
    res = tiny_model.infer([image], trace=TraceSpec(scale=True, spatial=True, dyrelu=True), detections=False)
    cells = res.level_cells(0, tiny_model.config.strides)
    for b, level in ((0, 0), (1, 2)):
        lt = res.trace.blocks[b].levels[level]
        h, w = cells[level]
        off = lt.offset[0, :, :h, :w].reshape(9, 2, h, w)
        row = df[(df.image_id == rec.image_id) & (df.block == b) & (df.level == level) & (df.subset == "level")].iloc[0]
        assert row.offset_mean_abs == pytest.approx(float(off.norm(dim=1).mean()), rel=1e-5)
        assert row.mask_mean == pytest.approx(float(lt.mask[0, :, :h, :w].mean()), rel=1e-5)
        assert row.w_same == pytest.approx(float(lt.scale_weights[level][0]), rel=1e-6)
        assert row.a2 == pytest.approx(float(lt.dyrelu.a2[0].mean()), abs=1e-7)
        assert row.cells == h * w
    # object rows: the ATSS-positive anchors of each ground-truth box, on the level they are assigned to
    coco = load_coco(resolve_dataset(tiny_data, "val").annotation_file)
    anns = [a for a in coco.imgToAnns[rec.image_id] if not a.get("iscrowd", 0)]
    (rh, rw), (oh, ow) = res.resized_sizes[0], res.original_sizes[0]
    boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]) * \
        torch.tensor([rw / ow, rh / oh, rw / ow, rh / oh])
    anchors = tiny_model.anchors(torch.empty((0, 3) + res.input_size))
    matched = atss_assign(anchors, boxes).matched_gt
    counts = torch.cat([torch.full((a.shape[0],), l) for l, a in enumerate(anchors)])
    objects = df[(df.image_id == rec.image_id) & (df.block == 0) & (df.subset == "object")]
    expected = sorted(int((matched == g).logical_and(counts == l).sum()) for g in range(len(anns)) for l in range(5)
                      if int((matched == g).logical_and(counts == l).sum()))
    assert sorted(objects.cells.tolist()) == expected
    # the summary's "all" rows are the means of the level rows
    summary = internals_summary(df)
    one = summary[(summary.breakdown == "all") & (summary.block == 1) & (summary.level == 0)].iloc[0]
    level_rows = df[(df.subset == "level") & (df.block == 0) & (df.level == 0)]
    assert one.n == 2 and one.offset_mean_abs == pytest.approx(level_rows.offset_mean_abs.mean())
    assert set(summary.breakdown) == {"all", "size", "class"}


def test_resume_and_shards_give_the_rows_of_one_run(tiny_model, tiny_data, tmp_path):
    whole = collect_internals(tiny_model, tiny_data, tmp_path / "a" / "t.csv", max_images=4, show_progress=False)
    first = collect_internals(tiny_model, tiny_data, tmp_path / "b" / "t.csv", max_images=2, show_progress=False)
    assert first.computed == 2
    with pytest.raises(ValueError):  # another model's file is refused
        from .conftest import tiny_detector

        collect_internals(tiny_detector(seed=1), tiny_data, tmp_path / "b" / "t.csv", max_images=4, show_progress=False)
    resumed = collect_internals(tiny_model, tiny_data, tmp_path / "b" / "t.csv", max_images=4, show_progress=False)
    assert resumed.computed == 2
    assert (tmp_path / "b" / "t.csv").read_text() == whole.csv.read_text()
    for rank in (1, 0):  # rank 0 merges once rank 1 is complete
        run = collect_internals(tiny_model, tiny_data, tmp_path / "c" / "t.csv", max_images=4, rank=rank,
                                world_size=2, show_progress=False, merge_timeout_s=5)
    assert run.csv is not None
    assert read_table(run.csv).equals(read_table(whole.csv))


def test_internals_command(tiny_model, tiny_data, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "tiny.pt", tiny_model)
    out = tmp_path / "out"
    assert main(["internals", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--out", str(out),
                 "--max-images", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for name in ("internals.csv", "internals_summary.csv", "internals.png"):
        assert (out / name).is_file() and str(out / name) in printed
    summary = read_table(out / "internals_summary.csv")
    expected = internals_summary(read_table(out / "internals.csv"))
    assert len(summary) == len(expected)
    assert summary.mask_mean.to_numpy() == pytest.approx(expected.mask_mean.to_numpy())
    assert (out / "internals.png").stat().st_size > 10_000
