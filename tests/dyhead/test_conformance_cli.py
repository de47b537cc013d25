"""`python -m dyhead.conformance`: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT, TEST_DATA

EXCERPT = TEST_DATA / "tower_golden_block0_image0.pt"


def run(*args):
    return subprocess.run([sys.executable, "-m", "dyhead.conformance", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_passes_on_official_data_and_fails_on_a_wrong_reading():
    ok = run(EXCERPT, "--dtype", "float32")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout and "block0.p7  output" in ok.stdout
    wrong = run(EXCERPT, "--dtype", "float32", "--coarser-branch", "crop")
    assert wrong.returncode == 1 and "FAIL" in wrong.stdout


def test_full_kit_golden_passes_in_float64(conformance_dir):
    result = run(conformance_dir / "dyhead_tower_golden.pt")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "0 outside tolerance" in result.stdout


def test_bad_files_get_a_clear_message(tmp_path):
    missing = run(tmp_path / "nope.pt")
    assert missing.returncode != 0 and "not found" in missing.stderr
    text = tmp_path / "notes.pt"
    text.write_text("not a tensor file")
    bad = run(text)
    assert bad.returncode != 0 and "not a weights-only torch file" in bad.stderr
    assert "Traceback" not in bad.stderr
