"""`python -m analysis`: every command end to end on a tiny model and data; layering."""

from __future__ import annotations

import subprocess
import sys

import pytest

from analysis.ablation import batch_size_note
from analysis.cli import main
from analysis.scale_ratios import RATIO_DEFINITION, read_table
from analysis.sources import DEFAULT_CHECKPOINT, REPO_ROOT
from dyhead.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_model)


def _run(args, capsys):
    code = main(args)
    out = capsys.readouterr().out
    return code, out


def test_scale_ratios_command(tiny_checkpoint, tiny_data, tmp_path, capsys):
    code, out = _run(["scale-ratios", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data),
                      "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    for name in ("scale_weights.csv", "scale_ratios.csv", "scale_ratio_summary.csv", "scale_ratios.png",
                 "scale_ratios.pdf"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in out
    assert RATIO_DEFINITION in out
    ratios = read_table(tmp_path / "scale_ratios.csv")
    assert RATIO_DEFINITION in ratios.attrs["notes"][0] and len(ratios) == 5 * 2 * 5
    summary = read_table(tmp_path / "scale_ratio_summary.csv")
    assert {"pair", "share_equal_1", "share_both_at_floor"} <= set(summary.columns)
    assert "% of the scale weights sit at the 0.5 floor" in summary.attrs["notes"][2]
    assert "P3: w(P3<-P3) / w(P3<-P4): median" in out and "block 2: " in out
    code, out = _run(["scale-ratios", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data),
                      "--out", str(tmp_path), "--quiet"], capsys)
    assert "0 images computed now, 5 resumed" in out


def test_image_commands(tiny_checkpoint, tiny_data, tmp_path, capsys):
    base = ["--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data), "--out", str(tmp_path), "--quiet"]
    assert _run(["feature-maps", *base, "--reduction", "pca", "--opacity", "0.4"], capsys)[0] == 0
    fm = read_table(tmp_path / "feature_maps.csv")
    assert list(fm.stage.unique()) == ["before head", "block 2"] and (tmp_path / "feature_maps.pdf").is_file()
    assert "colour scale per_map: each map (stage, level) its own colour range" in fm.attrs["notes"][0]
    assert _run(["coarser-modes", *base], capsys)[0] == 0
    assert set(read_table(tmp_path / "coarser_modes_features.csv")["mode"]) == {"official", "crop", "upsample_first"}
    code, out = _run(["calibrate", *base, "--split", "val"], capsys)  # the tiny data has no train split
    assert code == 0 and (tiny_checkpoint.parent / "tiny.knockout.pt").is_file()
    assert len(read_table(tmp_path / "knockout_constants.csv")) == 2 * 5
    code, out = _run(["ablation", *base, "--max-images", "2", "--no-one-block", "--task-off", "relu,static"], capsys)
    assert code == 0 and "not retrained" in out and "5 images of" in out
    ab = read_table(tmp_path / "ablation.csv")
    assert len(ab) == 12 and "not retrained" in ab.attrs["notes"][0]
    assert batch_size_note(1) in ab.attrs["notes"]
    assert "the dataset-mean weight of the level" in ab.attrs["notes"][-1] and "val" in ab.attrs["notes"][-1]
    assert set(ab.task_off.dropna()) == {"relu", "static"}
    assert (tmp_path / "detections_task_off_task-static.png").is_file()
    assert (tmp_path / "detections_scale_off_scale-calibrated.png").is_file()


def test_a_long_command_into_a_pipe_has_a_few_dozen_progress_lines(tiny_checkpoint, tiny_data, tmp_path):
    """`python -m analysis ablation` with every one-block knock-out (14 settings x 5 images, each
    image a progress update) and `python -m dyhead.evaluate`, stderr to a pipe."""
    cmd = [sys.executable, "-m", "analysis", "ablation", "--checkpoint", str(tiny_checkpoint), "--data",
           str(tiny_data), "--out", str(tmp_path), "--per-block", "--threads", "1", "--calibration-split", "val"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr and "\r" not in run.stdout
    progress = [line for line in run.stderr.splitlines() if line.startswith("ablation: ")]
    assert 20 <= len(progress) <= 21, run.stderr
    assert progress[-1].startswith("ablation: 70/70 img (100%)")
    rows = [line for line in run.stdout.splitlines() if " AP " in line and "vs all on" in line]
    assert len(rows) == 14
    cmd = [sys.executable, "-m", "dyhead.evaluate", "--checkpoint", str(tiny_checkpoint), "--data",
           str(tiny_data), "--batch-size", "1", "--threads", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr
    progress = [line for line in run.stderr.splitlines() if line.startswith("eval val: ")]
    assert [p.split(",")[0] for p in progress] == [f"eval val: {i}/5 img ({20 * i}%)" for i in range(1, 6)]


def test_efficiency_command(tmp_path, capsys):
    code, out = _run(["efficiency", "--out", str(tmp_path), "--no-latency", "--blocks", "0,1"], capsys)
    assert code == 0 and "800x1344" in out
    df = read_table(tmp_path / "efficiency.csv")
    assert df.per_block_gmacs.iloc[1] == pytest.approx(21.212, abs=1e-3)
    assert df.detector_gmacs.iloc[0] == pytest.approx(209.78, abs=0.01)  # the paper says 254.39
    assert any("inference from the per-depth deltas" in n for n in df.attrs["notes"])


def test_clear_errors(tiny_data, tmp_path, capsys):
    code = main(["feature-maps", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path)])
    assert code == 2 and "not found" in capsys.readouterr().err
    code = main(["scale-ratios", "--data", str(tmp_path / "nowhere"), "--checkpoint", str(tmp_path / "x.pt"),
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "nowhere" in err


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason=f"bundled demo model {DEFAULT_CHECKPOINT} not present")
def test_bundled_model_smoke(tmp_path, capsys):
    code, out = _run(["feature-maps", "--out", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / "feature_maps.png").is_file()


def test_analysis_does_not_import_streamlit():
    code = (
        "import sys, analysis, analysis.cli, analysis.sources, analysis.scale_ratios, analysis.feature_maps, "
        "analysis.ablation, analysis.efficiency, analysis.coarser_modes, analysis.detection_diff; "
        "assert 'streamlit' not in sys.modules, 'streamlit imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
