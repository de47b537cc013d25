"""DYHEAD_APP_ALLOWED_DIRS: checkpoint and dataset paths outside the allowed folders are refused."""

from __future__ import annotations

import os

from streamlit.testing.v1 import AppTest

from .conftest import APP_MAIN


def test_paths_outside_the_allowed_folders_are_refused(app_env, app_checkpoint, app_data, monkeypatch, tmp_path):
    monkeypatch.setenv("DYHEAD_APP_ALLOWED_DIRS", os.pathsep.join([str(app_checkpoint.parent), str(app_data)]))
    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    at.run()
    assert not at.exception and not at.sidebar.error  # both defaults lie inside
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"x")
    at.sidebar.text_input(key="checkpoint").set_value(str(outside)).run()
    assert not at.exception
    errors = [e.value for e in at.sidebar.error]
    assert any("outside the folders this server allows" in e and "elsewhere.pt" in e for e in errors), errors
    assert any("No model loaded" in e.value for e in at.error)
    at.sidebar.text_input(key="checkpoint").set_value(str(app_checkpoint)).run()
    at.sidebar.text_input(key="data_root").set_value(str(tmp_path)).run()
    at.sidebar.radio(key="image_source").set_value("Dataset").run()
    assert not at.exception
    assert any("dataset root" in e.value and "outside the folders" in e.value for e in at.sidebar.error)
    # a sub-folder of an allowed folder is allowed
    monkeypatch.setenv("DYHEAD_APP_ALLOWED_DIRS", str(tmp_path.parent))
    from app.paths import refusal

    assert refusal(outside, "checkpoint") == ""
    assert "outside" in refusal(app_checkpoint, "checkpoint") or app_checkpoint.is_relative_to(tmp_path.parent)
