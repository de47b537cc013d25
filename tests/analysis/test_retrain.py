"""The retraining grid: a grid killed between runs and inside a run, then restarted, writes the same
rows as an uninterrupted one."""

from __future__ import annotations

import pytest

from analysis.retrain import (
    PAPER_TABLE1,
    TABLE1_ROWS,
    TABLE2_ROWS,
    grid_rows,
    plot_table1,
    plot_table2,
    retrain_summary,
    row_preset,
    run_grid,
)
from dyhead.data.demo import DemoSpec, generate_split
from dyhead.train import TrainPreset
from tests.analysis.conftest import tiny_config

ROWS = ["baseline", "1 block"]
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain_data")
    generate_split(root, "train", 4, seed=3, spec=DemoSpec(size=192))
    generate_split(root, "val", 2, seed=4, spec=DemoSpec(size=192))
    return root


def tiny_preset() -> TrainPreset:
    return TrainPreset(detector=tiny_config(), max_iter=4, batch_size=2, base_lr=0.01, warmup_iters=2,
                       min_size=96, max_size=128, checkpoint_period=2, log_period=1)


def test_grids_follow_the_paper():
    assert [r.name for r in TABLE1_ROWS] == list(PAPER_TABLE1)
    assert [(r.scale, r.spatial, r.task) for r in TABLE1_ROWS][1:4] == [
        (True, False, False), (False, True, False), (False, False, True)]
    assert [r.blocks for r in TABLE2_ROWS] == [0, 1, 2, 4, 6, 8, 10]
    base = row_preset(tiny_preset(), TABLE1_ROWS[0])
    assert base.detector.tower.num_blocks == 0 and base.detector.head_num_convs == 4
    lc = row_preset(tiny_preset(), grid_rows("table1", ["L+C"])[0])
    assert lc.detector.tower.num_blocks == 6 and not lc.detector.tower.use_spatial_attention
    with pytest.raises(ValueError, match="no row"):
        grid_rows("table2", ["3 blocks"])


def _rows(df):
    return df.drop(columns=["wall_time_s"]).fillna(-1.0).to_dict("records")  # NaN: no object of that size


def test_killed_grid_restarts_to_the_same_rows(train_data, tmp_path):
    kw = dict(seeds=SEEDS, rows=ROWS, preset=tiny_preset(), progress=False)
    whole = run_grid("table2", train_data, tmp_path / "whole", **kw)
    assert len(whole) == 4 and set(whole.iterations) == {4}
    assert whole.loc[whole.row == "baseline", "blocks"].iloc[0] == 0
    assert whole.parameters.nunique() == 2 and (whole.GMACs > 0).all()

    out = tmp_path / "killed"

    def kill_after_first(row):
        raise KeyboardInterrupt  # killed between two runs

    with pytest.raises(KeyboardInterrupt):
        run_grid("table2", train_data, out, on_row=kill_after_first, **kw)
    part = run_grid("table2", train_data, out, stop_at=3, **kw)  # the next run killed at iteration 3
    # seed by seed: the second run is seed 0's 1-block row
    assert len(part) == 1 and (out / "runs" / "b1_LSC_seed0" / "resume.pt").is_file()
    resumed = run_grid("table2", train_data, out, **kw)
    assert _rows(resumed) == _rows(whole)
    again = run_grid("table2", train_data, out, **kw)  # nothing left to do
    assert _rows(again) == _rows(whole)
    summary = retrain_summary(resumed)
    assert list(summary.seeds) == [2, 2] and summary.paper_AP.iloc[0] == 39.0
    assert plot_table2(resumed) is not None and plot_table1(resumed.assign(grid="table1")) is not None

    # a grid asked for a further seed later appends its rows: the same CSV as asking for both at once
    first = run_grid("table2", train_data, tmp_path / "more_seeds", **{**kw, "seeds": (0,)})
    assert len(first) == 2
    assert _rows(run_grid("table2", train_data, tmp_path / "more_seeds", **kw)) == _rows(whole)

    # two runs at a time, each in its own process: the same rows in the same order
    parallel = run_grid("table2", train_data, tmp_path / "parallel", jobs=2, threads=1, **kw)
    assert _rows(parallel) == _rows(whole)

    # Table 1's baseline is Table 2's: the finished runs are reused, not trained again
    reused = run_grid("table1", train_data, out, seeds=SEEDS, rows=["baseline"], preset=tiny_preset(),
                      progress=False, stop_at=0)
    assert list(reused.run) == ["baseline_seed0", "baseline_seed1"] and set(reused.grid) == {"table1"}
    assert reused.AP.tolist() == whole[whole.row == "baseline"].AP.tolist()
    # ... but only when trained the same way
    other = tmp_path / "other"
    other.mkdir()
    (other / "runs").symlink_to(out / "runs")
    with pytest.raises(ValueError, match="another protocol"):
        run_grid("table1", train_data, other, seeds=(0,), rows=["baseline"],
                 preset=tiny_preset(), iterations=5, progress=False)
