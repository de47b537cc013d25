"""Attention on/off at inference (Table 1 analogue) and detection matching."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from analysis.ablation import (
    KNOCKOUT_NOTE,
    AblationCSVError,
    ablation_table,
    detection_changes,
    knockout_settings,
    plot_ablation,
    read_ablation_csv,
    table1_settings,
)
from analysis.detection_diff import match_detections
from analysis.sources import dataset_images
from dyhead.config import AttentionSwitches
from dyhead.evaluate import evaluate_detector
from dyhead.postprocess import Detections
from dyhead.knockout import KnockoutConstants
from dyhead.preprocess import load_image
from dyhead.trace import TraceSpec
from tests.analysis.conftest import tiny_detector


@functools.lru_cache(maxsize=1)
def CONSTANTS() -> KnockoutConstants:
    """Calibrated knock-out constants of the tiny model (tiny_detector(): the same weights as
    `tiny_model`), from two random images."""
    model = tiny_detector()
    images = [torch.randint(0, 255, (120, 100, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)).numpy()
              for i in range(2)]
    return KnockoutConstants.from_traces(
        [model.infer([im], trace=TraceSpec(scale=True, dyrelu=True), detections=False).trace for im in images])


def test_settings_follow_table1():
    rows = [(s.scale, s.spatial, s.task) for s in table1_settings()]
    assert rows[0] == (False, False, False) and rows[-1] == (True, True, True)
    assert len(set(rows)) == 8
    # spatial only, as Table 1's third row
    assert table1_settings()[2].name == "L S C: \u2717 \u2713 \u2717 [scale calibrated, task relu]"
    variants = table1_settings(("calibrated", "fixed-1"), ("relu", "static"))
    assert len(variants) == 2 * 2 + 2 + 2 * 2 + 2 + 2 + 1 + 2 + 1  # each attention off once per variant
    assert variants[0].name == "L S C: \u2717 \u2717 \u2717 [scale calibrated, task relu]"
    assert variants[1].switches == AttentionSwitches.all_off(task_off="static")
    ko = knockout_settings(2, ("calibrated", "fixed-1"), ("relu", "static"))
    assert [s.name for s in ko[:5]] == ["block 1: scale off (calibrated)", "block 1: scale off (fixed-1)",
                                        "block 1: spatial off", "block 1: task off (relu)", "block 1: task off (static)"]
    assert ko[1].switches[0] == AttentionSwitches(scale=False, scale_off="fixed-1") and ko[1].scale_off == "fixed-1"
    ko = knockout_settings(3)
    assert len(ko) == 9
    s = ko[4]  # block 2, spatial off
    assert (s.block, s.attention) == (2, "spatial")
    assert s.switches == (AttentionSwitches(), AttentionSwitches(spatial=False), AttentionSwitches())


def test_ablation_table_uses_cocoeval(tiny_model, tiny_data):
    df = ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=4)
    assert len(df) == 8 + 2 * 3
    assert df.attrs["note"] == KNOCKOUT_NOTE
    full = df[(df.kind == "all blocks") & (df.L == "\u2713") & (df.S == "\u2713") & (df.C == "\u2713")].iloc[0]
    ref = evaluate_detector(tiny_model, tiny_data, "val", max_images=4, batch_size=1, progress=False)
    assert full.AP == pytest.approx(100 * ref["AP"], abs=1e-9)
    assert full.AP50 == pytest.approx(100 * ref["AP50"], abs=1e-9)
    assert full.images == 4 and full.delta_AP == 0.0
    off = df[df.setting == "L S C: \u2717 \u2717 \u2717 [scale calibrated, task relu]"].iloc[0]
    assert (off.scale_off, off.task_off) == ("calibrated", "relu")
    none = evaluate_detector(tiny_model, tiny_data, "val", switches=AttentionSwitches.all_off(constants=CONSTANTS()),
                             max_images=4,
                             batch_size=1, progress=False)
    assert off.AP == pytest.approx(100 * none["AP"], abs=1e-9)
    assert df.AP.nunique() > 1  # switching attentions off changes the tiny model's detections
    assert all(math.isnan(v) or v >= 0 for v in df.APl)  # COCOeval's -1 (no such objects) is NaN
    fig = plot_ablation(df)
    caption = fig.texts[0].get_text().replace("\n", " ")
    assert KNOCKOUT_NOTE in caption and "dataset-mean weight of the level" in caption
    with pytest.raises(ValueError, match="need constants"):
        ablation_table(tiny_model, tiny_data, max_images=1, one_block=False)


def _dets(boxes, scores, labels) -> Detections:
    return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), torch.tensor(labels))


def test_matching_by_class_and_iou():
    ref = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60], [0, 0, 10, 10]],
                [0.9, 0.8, 0.7, 0.2], [0, 1, 0, 2])
    other = _dets([[1, 0, 11, 10], [20, 20, 40, 40], [50, 50, 60, 60], [70, 70, 80, 80]],
                  [0.6, 0.85, 0.7, 0.5], [0, 2, 0, 1])
    diff = match_detections(ref, other, iou_threshold=0.5, score_threshold=0.3)
    # the 0.2 box is below the threshold; box 1 changed class (removed + added); box 3 is new
    assert list(zip(diff.matched.ref_index, diff.matched.other_index)) == [(0, 0), (2, 2)]
    assert diff.matched.iou.iloc[0] == pytest.approx(90 / 110)
    assert diff.matched.score_change.iloc[0] == pytest.approx(-0.3)
    assert diff.matched.center_shift.iloc[0] == pytest.approx(1.0)
    assert list(diff.removed["index"]) == [1]
    assert sorted(diff.added["index"]) == [1, 3]
    s = diff.summary
    assert (s["reference"], s["other"], s["matched"], s["added"], s["removed"]) == (3, 4, 2, 2, 1)


def test_greedy_matching_prefers_the_higher_iou():
    ref = _dets([[0, 0, 10, 10], [2, 0, 12, 10]], [0.9, 0.8], [0, 0])
    other = _dets([[2, 0, 12, 10]], [0.9], [0])
    diff = match_detections(ref, other, score_threshold=0.0)
    assert list(diff.matched.ref_index) == [1] and list(diff.removed["index"]) == [0]


def test_detection_changes_on_one_image(tiny_model, tiny_data):
    image = load_image(dataset_images(tiny_data, "val")[1].path)
    summary, diffs = detection_changes(tiny_model, image, score_threshold=0.0, constants=CONSTANTS())
    names = ["L S C: \u2717 \u2713 \u2713 [scale calibrated]", "L S C: \u2713 \u2717 \u2713", "L S C: \u2713 \u2713 \u2717 [task relu]"]
    assert list(summary.setting) == names
    ref = tiny_model.predict([image])[0]
    task_off = tiny_model.predict([image], switches=AttentionSwitches(task=False))[0]
    row = summary.set_index("setting").loc[names[2]]
    assert row.reference == len(ref) and row.other == len(task_off)
    assert row.matched + row.removed == row.reference and row.matched + row.added == row.other
    assert set(diffs) == set(names)


def test_plotly_pair_draws_every_box():
    from analysis.detection_diff import plotly_detection_pair
    import numpy as np

    ref = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1])
    other = _dets([[0, 0, 10, 10]], [0.7], [0])
    diff = match_detections(ref, other, score_threshold=0.0)
    fig = plotly_detection_pair(np.zeros((50, 50, 3), np.uint8), diff, "on", "off", ["a", "b"])
    assert len(fig.data) == 2 + 2 + 1  # two images, three boxes
    assert [d.line.color for d in fig.data if d.type == "scatter"] == ["#00e000", "#ff00ff", "#00e000"]


NOTES = ["knock-outs", "model tiny, data tiny, batch size 1"]


def test_ablation_order_puts_the_reference_and_global_rows_first(tiny_model, tiny_data, tmp_path):
    rows = []
    df = ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=3, csv_path=tmp_path / "a.csv", notes=NOTES,
                        on_row=lambda row, seconds: rows.append(row["setting"]))
    assert rows == list(df.setting) and len(rows) == 8 + 2 * 3
    assert rows[:4] == ["L S C: \u2713 \u2713 \u2713", "L S C: \u2717 \u2713 \u2713 [scale calibrated]",
                        "L S C: \u2713 \u2717 \u2713", "L S C: \u2713 \u2713 \u2717 [task relu]"]
    assert list(df.kind) == ["all blocks"] * 8 + ["one block"] * 6
    assert read_ablation_csv(tmp_path / "a.csv").attrs["notes"] == NOTES
    # The same values as without a CSV (in memory), setting by setting.
    memory = ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=3).set_index("setting")
    for row in df.itertuples():
        assert row.AP == memory.loc[row.setting, "AP"] or math.isnan(row.AP) and math.isnan(memory.loc[row.setting, "AP"])
        assert row.images == 3 and row.block == memory.loc[row.setting, "block"]
    assert df.delta_AP.iloc[0] == 0.0
    assert df.delta_AP.iloc[5] == pytest.approx(df.AP.iloc[5] - df.AP.iloc[0])


def test_ablation_interrupted_and_run_again_gives_the_uninterrupted_csv(tiny_model, tiny_data, tmp_path, monkeypatch):
    import dyhead.evaluate

    whole = tmp_path / "whole" / "ablation.csv"
    ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=3, csv_path=whole, notes=NOTES)

    part = tmp_path / "part" / "ablation.csv"

    def stop_after_three(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=3, csv_path=part, notes=NOTES, progress=stop_after_three)
    assert len(read_ablation_csv(part)) == 3
    with part.open("a") as f:  # a row cut off in the middle of writing
        f.write("L S C: \u2717 \u2717 \u2713,all blocks,\u2717,\u2717,\u2713,all,,12.5")

    calls = []
    real = dyhead.evaluate.evaluate_detector

    def counting(*args, **kwargs):
        calls.append(kwargs["switches"])
        return real(*args, **kwargs)

    monkeypatch.setattr(dyhead.evaluate, "evaluate_detector", counting)
    df = ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=3, csv_path=part, notes=NOTES)
    assert len(calls) == 14 - 3  # only the missing settings were computed
    assert part.read_bytes() == whole.read_bytes()
    assert len(df) == 14 and df.equals(read_ablation_csv(whole))


def test_ablation_global_run_is_extended_by_the_per_block_rows(tiny_model, tiny_data, tmp_path):
    whole = tmp_path / "whole.csv"
    ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=2, csv_path=whole, notes=NOTES)
    csv = tmp_path / "grown.csv"
    assert len(ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=2, one_block=False, csv_path=csv, notes=NOTES)) == 8
    assert len(ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=2, one_block=True, csv_path=csv, notes=NOTES)) == 14
    assert csv.read_bytes() == whole.read_bytes()
    # A global-only rerun of a complete file computes nothing and returns every row.
    assert len(ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=2, one_block=False, csv_path=csv, notes=NOTES)) == 14


def test_ablation_refuses_a_csv_of_other_settings(tiny_model, tiny_data, tmp_path):
    csv = tmp_path / "ablation.csv"
    ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=1, one_block=False, csv_path=csv, notes=NOTES)
    before = csv.read_bytes()
    with pytest.raises(AblationCSVError, match="another run.*batch size 4"):
        ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=1, csv_path=csv,
                       notes=["knock-outs", "model tiny, data tiny, batch size 4"])
    assert csv.read_bytes() == before  # a refused file is left as it was
    # A row whose setting is not recorded as finished (here: renamed) is dropped and computed again.
    reference = read_ablation_csv(csv)
    csv.write_text(before.decode().replace("L S C: \u2717 \u2713 \u2713", "L S C: something else"))
    again = ablation_table(tiny_model, tiny_data, constants=CONSTANTS(), max_images=1, one_block=False, csv_path=csv, notes=NOTES)
    assert list(again.setting) == list(reference.setting) and again.equals(reference)
