"""Model and dataset sources: the demo data generated on demand, clear errors."""

from __future__ import annotations

import json

import pytest

from analysis import sources
from analysis.sources import SourceError, dataset_images, default_data_root, load_model, resolve_dataset


def test_demo_split_is_generated_when_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEMO_VAL_IMAGES", 3)
    root = default_data_root("val", root=tmp_path / "demo")
    paths = resolve_dataset(root, "val")
    data = json.loads(paths.annotation_file.read_text())
    assert len(data["images"]) == 3 and "seed 0" in data["info"]["description"]
    first = (paths.image_dir / "000000.jpg").read_bytes()
    (paths.image_dir / "000000.jpg").unlink()
    paths.annotation_file.unlink()
    default_data_root("val", root=tmp_path / "demo")  # regenerated: the same bytes (deterministic)
    assert (paths.image_dir / "000000.jpg").read_bytes() == first
    recs = dataset_images(root, "val", max_images=2)
    assert [r.image_id for r in recs] == [1, 2] and recs[0].path.is_file()


def test_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "val").mkdir()
    with pytest.raises(SourceError, match="instances_val"):
        resolve_dataset(tmp_path, "val")
    with pytest.raises(SourceError, match="does not exist"):
        resolve_dataset(tmp_path / "missing", "val")


def test_default_image(tiny_data, tmp_path, monkeypatch):
    from analysis.sources import default_image

    assert default_image(tiny_data) == tiny_data / "val" / "000000.jpg"  # --data given: its first image
    monkeypatch.setattr(sources, "SAMPLES_DIR", tmp_path)
    (tmp_path / "demo_sample_1.jpg").write_bytes(b"x")
    (tmp_path / "demo_sample_0.jpg").write_bytes(b"x")
    assert default_image(None) == tmp_path / "demo_sample_0.jpg"
