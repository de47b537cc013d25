"""Scale ratios (Fig. 3): CSV values against a direct trace, the ratio definition, resume and shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.scale_ratios import (
    RATIO_DEFINITION,
    collect_scale_weights,
    compute_ratios,
    ratio_summary,
    read_table,
    shard_path,
)
from analysis.sources import dataset_images
from dyhead.preprocess import load_image

from .conftest import tiny_detector


class _Stop(Exception):
    pass


def _data_lines(path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


@pytest.fixture(scope="module")
def reference(tiny_model, tiny_data, tmp_path_factory):
    """One uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("ratios_ref") / "scale_weights.csv"
    run = collect_scale_weights(tiny_model, tiny_data, out, show_progress=False)
    return run, out


def test_weights_match_a_direct_trace(tiny_model, tiny_data, reference):
    run, out = reference
    df = read_table(out)
    records = dataset_images(tiny_data, "val")
    assert run.images == run.computed == len(records) == 5
    # 2 blocks x (2 + 3 + 3 + 3 + 2) sources per image
    assert len(df) == 5 * 2 * 13
    assert any(RATIO_DEFINITION in note for note in df.attrs["notes"])
    rec = records[3]
    with torch.inference_mode():
        batch, _, _ = tiny_model.preprocess([load_image(rec.path)])
        _, trace = tiny_model.tower(tiny_model.backbone(batch), return_trace=True)
    rows = df[df.image_id == rec.image_id]
    assert set(rows.file_name) == {rec.file_name}
    for b, block in enumerate(trace.blocks):
        for level, lt in enumerate(block.levels):
            got = rows[(rows.block == b) & (rows.level == level)].set_index("source_level")["weight"]
            assert sorted(got.index) == sorted(lt.scale_weights)
            for src, w in lt.scale_weights.items():
                assert got[src] == pytest.approx(float(w[0]), abs=1e-6)
    assert df.weight.between(0.5, 1.0).all()  # hard sigmoid after a ReLU
    assert df.weight.nunique() > 10  # the tiny model's weights are not all equal


def test_ratios_follow_the_definition(reference):
    _, out = reference
    weights = read_table(out)
    ratios = compute_ratios(weights)
    assert len(ratios) == 5 * 2 * 5
    w = weights.set_index(["image_id", "block", "level", "source_level"])["weight"]
    for row in ratios.itertuples():
        key = (row.image_id, row.block, row.level)
        if row.level == 0:  # P3: the level itself stands in for the missing finer neighbour
            expected = w[key + (0,)] / w[key + (1,)]
        elif row.level == 4:  # P7: the level itself stands in for the missing coarser neighbour
            expected = w[key + (3,)] / w[key + (4,)]
        else:
            expected = w[key + (row.level - 1,)] / w[key + (row.level + 1,)]
        assert row.ratio == pytest.approx(expected, rel=1e-12)
    assert list(ratios.paper_level.unique()) == [5, 4, 3, 2, 1]  # P3 is the paper's "level 5"
    summary = ratio_summary(ratios)
    med = summary.set_index(["block", "level"])["median"]
    assert med[(1, 2)] == pytest.approx(np.median(ratios[(ratios.block == 1) & (ratios.level == 2)].ratio))


def test_killed_run_resumes_to_the_same_rows(tiny_model, tiny_data, reference, tmp_path):
    _, ref_out = reference
    out = tmp_path / "scale_weights.csv"

    def stop_after_two(done, total):
        if done == 2:
            raise _Stop

    with pytest.raises(_Stop):
        collect_scale_weights(tiny_model, tiny_data, out, progress=stop_after_two, show_progress=False)
    assert len(read_table(out).image_id.unique()) == 2
    with out.open("a") as f:  # a row of the third image cut off mid-write
        f.write("3,000002.jpg,0,1,P4,0,P3,0.5")
    seen = []
    run = collect_scale_weights(tiny_model, tiny_data, out, show_progress=False,
                                progress=lambda d, t: seen.append(d))
    assert run.computed == 3 and seen == [2, 3, 4, 5]
    assert _data_lines(out) == _data_lines(ref_out)
    again = collect_scale_weights(tiny_model, tiny_data, out, show_progress=False)
    assert again.computed == 0 and _data_lines(out) == _data_lines(ref_out)


def test_resume_refuses_another_model(tiny_data, reference, tmp_path):
    _, ref_out = reference
    out = tmp_path / "w.csv"
    out.write_text(ref_out.read_text())
    with pytest.raises(ValueError, match="another run.*model"):
        collect_scale_weights(tiny_detector(seed=1), tiny_data, out, show_progress=False)


def test_shards_merge_into_the_single_process_rows(tiny_model, tiny_data, reference, tmp_path):
    _, ref_out = reference
    out = tmp_path / "scale_weights.csv"
    r1 = collect_scale_weights(tiny_model, tiny_data, out, rank=1, world_size=2, show_progress=False)
    assert not r1.merged and r1.images == 2 and r1.shard_csv == shard_path(out, 1, 2)
    assert sorted(read_table(r1.shard_csv).image_id.unique()) == [2, 4]  # images 1::2 of ids 1..5
    r0 = collect_scale_weights(tiny_model, tiny_data, out, rank=0, world_size=2, show_progress=False,
                               merge_timeout_s=5)
    assert r0.merged and r0.images == 3
    assert _data_lines(out) == _data_lines(ref_out)


def test_figures(reference):
    _, out = reference
    ratios = compute_ratios(read_table(out))
    from analysis.scale_ratios import plot_scale_ratios, plotly_scale_ratios

    fig = plot_scale_ratios(ratios)
    assert len(fig.axes) == 3  # block 1, block 2, last block
    assert fig.axes[-1].get_xscale() == "log"
    pfig = plotly_scale_ratios(ratios)
    assert len(pfig.data) == 5


def test_in_memory_weights_equal_the_csv(tiny_model, tiny_data, reference):
    from analysis.scale_ratios import scale_weights_for_images

    _, out = reference
    rec = dataset_images(tiny_data, "val")[1]
    df = scale_weights_for_images(tiny_model, [load_image(rec.path)], names=[rec.file_name])
    csv = read_table(out)
    csv = csv[csv.image_id == rec.image_id].reset_index(drop=True)
    assert list(df.file_name.unique()) == [rec.file_name] and len(df) == len(csv)
    np.testing.assert_allclose(df.weight.to_numpy(), csv.weight.to_numpy(), rtol=1e-6)
    assert (df[["block", "level", "source_level"]].to_numpy() == csv[["block", "level", "source_level"]].to_numpy()).all()


def test_rerun_with_fewer_images_keeps_only_those(tiny_model, tiny_data, reference, tmp_path):
    _, ref_out = reference
    out = tmp_path / "w.csv"
    out.write_text(ref_out.read_text())
    (tmp_path / "w.csv.done").write_text(ref_out.with_name(ref_out.name + ".done").read_text())
    run = collect_scale_weights(tiny_model, tiny_data, out, max_images=3, show_progress=False)
    assert run.computed == 0
    assert sorted(read_table(out).image_id.unique()) == [1, 2, 3]
    assert _data_lines(out) == _data_lines(ref_out)[: 1 + 3 * 26]


def _weights(rows) -> "pd.DataFrame":
    """A weights table from (image_id, block, level, source_level, weight) rows."""
    import pandas as pd

    from analysis.levels import level_name

    return pd.DataFrame([(i, f"{i}.jpg", b, l, level_name(l), s, level_name(s), w) for i, b, l, s, w in rows],
                        columns=["image_id", "file_name", "block", "level", "level_name", "source_level",
                                 "source_name", "weight"])


def test_the_ends_are_labelled_with_their_own_pair(reference):
    from analysis.scale_ratios import plot_scale_ratios, plotly_scale_ratios, ratio_label

    assert ratio_label(0, 5) == "P3: w(P3<-P3) / w(P3<-P4)"
    assert ratio_label(2, 5) == "P5: w(P5<-P4) / w(P5<-P6)"
    assert ratio_label(4, 5) == "P7: w(P7<-P6) / w(P7<-P7)"
    _, out = reference
    ratios = compute_ratios(read_table(out))
    assert [t.name for t in plotly_scale_ratios(ratios).data] == [ratio_label(l, 5) for l in range(5)]
    assert "w(finer)" not in plotly_scale_ratios(ratios).layout.xaxis.title.text
    fig = plot_scale_ratios(ratios, focus_block=0)
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend[0] == ratio_label(0, 5) and legend[-1] == ratio_label(4, 5)
    assert fig.axes[-1].get_title().startswith("block 1 of 2")
    assert all("w(finer)" not in ax.get_xlabel() for ax in fig.axes)
    summary = ratio_summary(ratios)
    assert list(summary[summary.block == 0].pair) == [ratio_label(l, 5) for l in range(5)]


def test_floor_and_ceiling_shares():
    """Two images, one block, three levels: a ratio of 1 from two weights at the 0.5 floor is told apart
    from one of two equal weights inside the range."""
    from analysis.scale_ratios import saturation_note, weight_saturation

    weights = _weights([
        # image 1: P3 (sources P3, P4), P4 (P3, P4, P5), P5 (P4, P5)
        (1, 0, 0, 0, 1.0), (1, 0, 0, 1, 0.5),
        (1, 0, 1, 0, 0.5), (1, 0, 1, 1, 0.8), (1, 0, 1, 2, 0.5),  # P4 ratio 1: both at the floor
        (1, 0, 2, 1, 0.7), (1, 0, 2, 2, 0.7),  # P5 ratio 1 inside the range
        # image 2
        (2, 0, 0, 0, 0.6), (2, 0, 0, 1, 0.6),
        (2, 0, 1, 0, 0.9), (2, 0, 1, 1, 1.0), (2, 0, 1, 2, 0.6),
        (2, 0, 2, 1, 0.5), (2, 0, 2, 2, 1.0),
    ])
    ratios = compute_ratios(weights)
    assert list(ratios.numerator_weight[ratios.image_id == 1]) == [1.0, 0.5, 0.7]
    summary = ratio_summary(ratios).set_index("level")
    assert summary.loc[1, "share_equal_1"] == 0.5 and summary.loc[1, "share_both_at_floor"] == 0.5
    assert summary.loc[2, "share_equal_1"] == 0.5 and summary.loc[2, "share_both_at_floor"] == 0.0
    assert summary.loc[0, "share_above_1"] == 0.5 and summary.loc[0, "share_below_1"] == 0.0
    sat = weight_saturation(weights).set_index("level")
    assert sat.loc[0, "weights"] == 4 and sat.loc[0, "share_at_floor"] == 0.25 and sat.loc[0, "share_at_ceiling"] == 0.25
    assert sat.loc[1, "share_at_floor"] == pytest.approx(2 / 6) and sat.loc[1, "share_at_ceiling"] == pytest.approx(1 / 6)
    note = saturation_note(weights, ratios, block=0)
    # 4 of 14 weights at 0.5, 3 at 1.0; 3 of 6 ratios are 1 (P4 and P5 of image 1, P3 of image 2), one of
    # them with both weights at the floor
    assert note == ("block 1: 28.6 % of the scale weights sit at the 0.5 floor and 21.4 % at the 1.0 ceiling; "
                    "50.0 % of the ratios are exactly 1, 16.7 % because both weights sit at the floor")
