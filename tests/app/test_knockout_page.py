"""Attention on/off: the knock-out variants are named, a model without constants says how to get them,
and retrained results appear beside the knock-outs when a retrain CSV exists."""

from __future__ import annotations

import pandas as pd

from analysis.retrain import RETRAIN_COLUMNS, RETRAIN_NOTE
from analysis.tables import write_table
from tests.app.test_apptest import _app, _ok


def _frame(at, column):
    frames = [d.value for d in at.tabs[1].dataframe if column in d.value.columns]
    assert frames, f"no table with a {column!r} column"
    return frames[0]


def test_retrained_results_beside_the_knockouts(app_env, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DYHEAD_APP_RETRAIN", str(empty))
    at = _app()
    at.switch_page("views/attention_switches.py").run()
    _ok(at)
    assert any("No retrained results found" in c.value for c in at.caption)
    rows = [("baseline_seed0", "table1", "baseline", 0, 0, False, False, False, 30.0, 50, 30, 20, 40, 50, 1000, 1.0, 10, 5.0),
            ("baseline_seed1", "table1", "baseline", 1, 0, False, False, False, 32.0, 50, 30, 20, 40, 50, 1000, 1.0, 10, 5.0),
            ("b6_LSC_seed0", "table1", "L+S+C", 0, 6, True, True, True, 40.0, 60, 40, 30, 50, 60, 2000, 2.0, 10, 9.0)]
    write_table(pd.DataFrame(rows, columns=RETRAIN_COLUMNS), tmp_path / "retrain_table1.csv", [RETRAIN_NOTE])
    longer = [r[:8] + (50.0,) + r[9:16] + (30,) + r[17:] for r in rows[:1]]  # baseline, 30 iterations
    (tmp_path / "iterations_30").mkdir()
    write_table(pd.DataFrame(longer, columns=RETRAIN_COLUMNS), tmp_path / "iterations_30" / "retrain_table1.csv",
                [RETRAIN_NOTE])
    monkeypatch.setenv("DYHEAD_APP_RETRAIN", str(tmp_path))
    at = _app()
    at.switch_page("views/attention_switches.py").run()
    _ok(at)
    assert any("trained for 30 iterations** (instead of 10" in m.value for m in at.markdown)
    assert [f["AP (mean ± std)"].tolist() for f in (d.value for d in at.tabs[1].dataframe)
            if "AP (mean ± std)" in f.columns][1] == ["50.0"]
    table = _frame(at, "AP (mean ± std)")
    assert list(table.row) == ["baseline", "L+S+C"] and list(table.seeds) == [2, 1]
    assert list(table["AP (mean ± std)"]) == ["31.0 ± 1.4", "40.0"] and table["paper AP"].iloc[1] == 42.6
    assert list(table["AP per seed"]) == ["30.0, 32.0", "40.0"]
    assert any("differs by 2.0 to 2.0 points" in c.value for c in at.caption)  # the spread is stated
    assert any("trains a separate model *without* the attention" in m.value for m in at.markdown)
    # with a knock-out table computed, Table 1's rows side by side
    at.number_input(key="ab_n").set_value(3).run()  # a table no other test computes (the cache is shared)
    at.button(key="ab_run").click().run()
    _ok(at)
    beside = _frame(at, "retrained_AP")
    assert list(beside.row)[:2] == ["baseline", "L"] and beside.retrained_AP.iloc[0] == 31.0
    assert "knockout_AP (L calibrated, C relu)" in beside.columns and beside.paper_AP.iloc[-1] == 42.6
    assert beside.knockout_AP.iloc[-1] == at.tabs[1].dataframe[0].value.AP.iloc[0]  # all on


def test_a_model_without_constants_offers_calibration(app_env, app_data, tmp_path, monkeypatch):
    import shutil

    from dyhead.knockout import constants_path

    model = tmp_path / "copy.pt"
    shutil.copy(app_env["DYHEAD_APP_CHECKPOINT"], model)
    monkeypatch.setenv("DYHEAD_APP_CHECKPOINT", str(model))
    monkeypatch.setenv("HOME", str(tmp_path))  # no user-cache copy either
    at = _app()
    at.switch_page("views/attention_switches.py").run()
    _ok(at)
    at.toggle(key="sw_scale").set_value(False).run()
    assert any("no calibrated knock-out constants" in w.value for w in at.warning)
    at.radio(key="sw_scale_off").set_value("fixed-1").run()
    _ok(at)
    assert any("scale off (fixed-1) in every block" in m.value for m in at.markdown)
    at.radio(key="sw_scale_off").set_value("calibrated").run()
    at.button(key="sw_calibrate").click().run()
    _ok(at)
    assert constants_path(model).is_file()
    assert any("Calibrated constants: dataset means over 4 images" in c.value for c in at.caption)
