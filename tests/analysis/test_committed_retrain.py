"""The committed retrained tables of the demo data (docs/retrain, written by `python -m analysis
retrain`): complete grids, one protocol, and the README quoting exactly their numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.retrain import (
    TABLE1_ROWS,
    TABLE2_ROWS,
    markdown_table,
    read_retrain_csv,
    retrain_summary,
)
from analysis.tables import read_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "retrain"


@pytest.fixture(scope="module")
def grids():
    return {g: read_retrain_csv(DOCS / f"retrain_{g}.csv") for g in ("table1", "table2")}


def test_table1_has_every_row_with_at_least_two_seeds(grids):
    df = grids["table1"]
    assert list(dict.fromkeys(df.row)) == [r.name for r in TABLE1_ROWS]
    seeds = df.groupby("row").seed.nunique()
    assert (seeds >= 2).all(), seeds.to_dict()
    assert df.iterations.nunique() == 1 and df.run.is_unique
    for r in TABLE1_ROWS:  # the flags and depth of each row are what the row's name says
        rows = df[df.row == r.name]
        assert (rows.blocks == r.blocks).all() and (rows.L == r.scale).all() and (rows.S == r.spatial).all()
        assert (rows.C == r.task).all()


def test_table2_has_every_depth_and_shares_runs_with_table1(grids):
    t1, t2 = grids["table1"], grids["table2"]
    assert set(t2.blocks) == {r.blocks for r in TABLE2_ROWS}
    assert t2.iterations.unique().tolist() == t1.iterations.unique().tolist()
    shared = t2[t2.run.isin(t1.run)]  # baseline and 6 blocks: the same trained models as Table 1's
    assert set(shared.blocks) == {0, 6}
    for run in shared.run:
        assert t1[t1.run == run].AP.item() == t2[t2.run == run].AP.item()


def test_summaries_and_readme_quote_the_runs(grids):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docs = (ROOT / "docs" / "analysis.md").read_text(encoding="utf-8")
    for grid, df in grids.items():
        summary = read_table(DOCS / f"retrain_{grid}_summary.csv")
        again = retrain_summary(df)
        assert summary.AP_mean.round(6).tolist() == again.AP_mean.round(6).tolist()
        table = markdown_table(df, grid)
        assert table in readme and table in docs, f"README/docs table of {grid} differs from the CSV"
        assert (DOCS / f"retrain_{grid}.png").is_file()
