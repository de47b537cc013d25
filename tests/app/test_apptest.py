"""The dashboard driven by Streamlit's AppTest: every page, switches, bad input, the scale-ratio pass
with resume, the AP table, and two sessions with different switches at the same time."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from analysis.sources import DEFAULT_CHECKPOINT
from dyhead.config import AttentionSwitches

from .conftest import APP_MAIN, TINY_IMAGES

PAGES = {
    "views/inside_head.py": ("Inside the head", ["Feature maps", "Scale weights of this image",
                                                 "Where spatial attention looks",
                                                 "Task-aware attention (DyReLU) coefficients"]),
    "views/scale_ratios.py": ("Scale ratios", []),
    "views/attention_switches.py": ("Attention on/off", []),
    "views/efficiency.py": ("Efficiency", ["Latency"]),
    "views/how_it_works.py": ("How it works", ["The coarser-branch quirk"]),
    "views/model_data.py": ("Model & data", ["Model", "Classes", "Dataset", "Official releases"]),
}


def _app() -> AppTest:
    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    at.run()
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    stopped = [e.value for e in at.error if e.value.startswith("This page stopped")]
    assert not stopped, stopped


def _png(mode: str, size=(48, 40), value=None) -> bytes:
    if mode == "I;16":
        arr = (np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0]) * 37)
        img = Image.fromarray(arr).convert("I;16") if arr.dtype != np.uint16 else Image.fromarray(arr)
    else:
        img = Image.new(mode, size, value if value is not None else 128)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _huge_png_header(width=20000, height=20000) -> bytes:
    """A PNG whose header claims 400 MP (the pixels are never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_every_page_renders(app_env):
    at = _app()
    _ok(at)
    assert at.title[0].value == "Detect"
    labels = [m.label for m in at.metric]
    assert labels == ["Detections shown", "Inference time", "Device"]
    assert at.metric[2].value == "cpu"
    # The sidebar names the checkpoint kind and the device chosen by "auto".
    assert any("running on **cpu** (auto)" in c.value for c in at.sidebar.caption)
    for page, (title, subheaders) in PAGES.items():
        at.switch_page(page).run()
        _ok(at)
        assert at.title[0].value == title, page
        assert [s.value for s in at.subheader][: len(subheaders)] == subheaders, page
        assert not at.error, (page, [e.value for e in at.error])
    # Efficiency: the GMACs table with the paper's Table 2 next to it.
    at.switch_page("views/efficiency.py").run()
    table = at.dataframe[0].value
    assert list(table["blocks"]) == [0, 1, 2, 4, 6, 8, 10]
    assert table.loc[table.blocks == 6, "paper_delta"].item() == pytest.approx(21.50)
    assert abs(table.loc[table.blocks == 6, "delta_gmacs"].item() - 21.50) < 0.5


def test_detect_threshold_and_counts(app_env, app_checkpoint):
    from app.compute import detect
    from app.sidebar import sample_images
    from analysis.sources import load_model
    from dyhead.preprocess import load_image

    at = _app()
    at.slider(key="detect_threshold").set_value(0.0).run()
    _ok(at)
    model, _ = load_model(app_checkpoint, "cpu")
    image = load_image(sample_images()[0])
    expected = detect(model, image)
    assert at.metric[0].value == str(len(expected.scores))
    assert len(at.dataframe[0].value) == len(expected.scores)
    at.slider(key="detect_threshold").set_value(1.0).run()
    assert at.metric[0].value == str(int((expected.scores >= 1.0).sum()))
    # the 0.05 threshold is on the class probability; the score shown is class x centerness probability
    assert "0.05 threshold (as the official ATSS) applies to the class probability alone" in \
        at.slider(key="detect_threshold").help


def test_switch_toggle_changes_the_chosen_run(app_env, app_checkpoint):
    from app.compute import detect
    from app.sidebar import sample_images
    from analysis.sources import load_model
    from dyhead.preprocess import load_image

    from dyhead.knockout import load_or_calibrate

    at = _app()
    at.switch_page("views/attention_switches.py").run()
    _ok(at)
    assert any("all attentions on" in m.value for m in at.markdown)
    at.slider(key="sw_threshold").set_value(0.05).run()
    at.toggle(key="sw_scale").set_value(False).run()
    _ok(at)
    assert any("scale off (calibrated) in every block" in m.value for m in at.markdown)
    model, _ = load_model(app_checkpoint, "cpu")
    image = load_image(sample_images()[0])
    ref = detect(model, image)
    constants = load_or_calibrate(model, app_checkpoint, None)  # saved beside the model
    off = detect(model, image, AttentionSwitches(scale=False, constants=constants))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Boxes (all on)"] == str(int((ref.scores >= 0.05).sum()))
    assert metrics["Boxes (chosen)"] == str(int((off.scores >= 0.05).sum()))
    # the fixed-1 variant: every weight 1
    at.radio(key="sw_scale_off").set_value("fixed-1").run()
    _ok(at)
    assert any("scale off (fixed-1) in every block" in m.value for m in at.markdown)
    fixed = detect(model, image, AttentionSwitches(scale=False, scale_off="fixed-1"))
    assert {m.label: m.value for m in at.metric}["Boxes (chosen)"] == str(int((fixed.scores >= 0.05).sum()))
    at.radio(key="sw_scale_off").set_value("calibrated").run()
    # Per-block: task off in block 1 only.
    at.toggle(key="sw_scale").set_value(True).run()
    at.checkbox(key="sw_b0_task").uncheck().run()
    _ok(at)
    assert any("task off (relu) in block 1" in m.value for m in at.markdown)


@pytest.mark.parametrize("name,data,message", [
    ("notes.png", b"hello, I am text" * 10, "not a recognised image format"),
    ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10, "corrupt or truncated"),
    ("huge.png", _huge_png_header(), "too large"),
    ("truncated.jpg", _jpeg()[:300], "corrupt or truncated"),
    ("empty.png", b"", "empty"),
], ids=["not-an-image", "corrupt", "huge", "truncated", "empty"])
def test_bad_upload_shows_an_error(app_env, name, data, message):
    at = _app()
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    _ok(at)
    assert any("no image uploaded yet" in e.value for e in at.error)
    at.sidebar.file_uploader(key="upload").set_value((name, data, "image/png")).run()
    _ok(at)
    errors = " ".join(e.value for e in at.sidebar.error)
    assert name in errors and message in errors, errors
    assert at.title[0].value == "Detect"  # the page still draws, with its own message
    assert any("No usable image" in e.value for e in at.error)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_unusual_images_are_converted(app_env, mode):
    at = _app()
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    at.sidebar.file_uploader(key="upload").set_value((f"img_{mode}.png", _png(mode), "image/png")).run()
    _ok(at)
    assert not at.error
    assert any(f"converted from Pillow mode {mode}" in c.value for c in at.sidebar.caption)
    assert [m.label for m in at.metric][:1] == ["Detections shown"]


def test_bad_checkpoint_and_dataset(app_env, tmp_path):
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("this is not a checkpoint")
    at = _app()
    at.sidebar.text_input(key="checkpoint").set_value(str(not_a_checkpoint)).run()
    _ok(at)
    assert any("not a torch checkpoint" in e.value for e in at.sidebar.error)
    assert any("No model loaded" in e.value for e in at.error)
    for page in PAGES:
        at.switch_page(page).run()
        _ok(at)
    # A dataset folder with images but no annotations.
    images_only = tmp_path / "images_only"
    (images_only / "val").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(images_only / "val" / "a.jpg")
    at = _app()
    at.sidebar.text_input(key="data_root").set_value(str(images_only)).run()
    at.switch_page("views/scale_ratios.py").run()
    _ok(at)
    assert any("Dataset:" in e.value and "instances_val" in e.value for e in at.error)


def test_scale_ratio_pass_resumes(app_env, app_checkpoint, app_data):
    from app import compute
    from analysis.sources import load_model
    from dyhead.device import resolve_device

    model, _ = load_model(app_checkpoint, "cpu")
    ref = compute.ModelRef.of(app_checkpoint, str(resolve_device("auto")), None)
    # An earlier, interrupted pass finished 2 images.
    compute.run_scale_ratio_pass(model, ref, app_data, "val", 2)
    at = _app()
    at.switch_page("views/scale_ratios.py").run()
    _ok(at)
    assert any(f"Partial result: 2 of {TINY_IMAGES}" in w.value for w in at.warning)
    at.button(key="sr_run").click().run()
    _ok(at)
    assert not at.warning
    summary = at.dataframe[0].value
    assert set(summary["images"]) == {TINY_IMAGES}
    assert list(summary["level_name"]) == ["P3", "P4", "P5", "P6", "P7"]
    # the ends name their own pair; floor and ceiling shares are reported; the block shown is stated
    assert summary["pair"].iloc[0] == "P3: w(P3<-P3) / w(P3<-P4)"
    assert summary["pair"].iloc[-1] == "P7: w(P7<-P6) / w(P7<-P7)"
    assert {"share_equal_1", "share_both_at_floor", "share_at_floor", "share_at_ceiling"} <= set(summary.columns)
    blocks = model.config.tower.num_blocks
    assert any(i.value.startswith(f"Block {blocks}: ") and "sit at the 0.5 floor" in i.value for i in at.info)
    assert any(f"Block {blocks} of {blocks}" in m.value for m in at.markdown)
    assert compute.scale_ratio_progress(ref, app_data, "val", list(range(1, TINY_IMAGES + 1))) == TINY_IMAGES
    # A fresh session (a reloaded page) shows the result from disk without running again.
    at = _app()
    at.switch_page("views/scale_ratios.py").run()
    assert at.button(key="sr_run").disabled
    assert len(at.dataframe[0].value) == 5


def test_ablation_table_is_labelled_and_cached(app_env):
    at = _app()
    at.switch_page("views/attention_switches.py").run()
    at.number_input(key="ab_n").set_value(2).run()
    at.button(key="ab_run").click().run()
    _ok(at)
    df = at.tabs[1].dataframe[0].value
    assert len(df) == 8 and list(df["images"].unique()) == [2]
    assert any("not retrained ablations" in i.value for i in at.info)
    full = df[(df.L == "\u2713") & (df.S == "\u2713") & (df.C == "\u2713")]
    assert full["delta_AP"].fillna(0).abs().max() == 0
    assert set(df.scale_off) == {"", "calibrated"} and set(df.task_off) == {"", "relu"}
    assert any("scale off = calibrated, task off = relu" in c.value for c in at.caption)
    at = _app()
    at.switch_page("views/attention_switches.py").run()
    at.number_input(key="ab_n").set_value(2).run()
    assert len(at.tabs[1].dataframe[0].value) == 8  # from disk, no button press


def test_ablation_table_runs_at_batch_1_and_says_so(app_env, app_checkpoint, app_data):
    """The app's AP table is computed at batch size 1 (the official test path, as the CLI) and its CSV
    says so; a file from before, without the batch size, is not shown but computed again."""
    import pandas as pd

    from analysis.ablation import KNOCKOUT_NOTE, batch_size_note
    from analysis.sources import load_model
    from analysis.tables import read_table, write_table
    from app import compute
    from dyhead.evaluate import evaluate_detector

    model, _ = load_model(app_checkpoint, "cpu")
    ref = compute.ModelRef.of(app_checkpoint, "cpu", None)
    path = compute.ablation_csv_path(ref, app_data, "val", 1, False)
    write_table(pd.DataFrame({"setting": ["stale"], "AP": [1.0]}), path, [KNOCKOUT_NOTE])
    assert compute.cached_ablation(ref, app_data, "val", 1, False) is None
    df = compute.run_ablation(model, ref, app_data, "val", 1, False)
    assert len(df) == 8 and compute.ABLATION_BATCH_SIZE == 1
    assert batch_size_note(1) in read_table(path).attrs["notes"] and batch_size_note(1) in df.attrs["notes"]
    full = df[(df.L == "\u2713") & (df.S == "\u2713") & (df.C == "\u2713")].iloc[0]
    alone = evaluate_detector(model, app_data, "val", max_images=1, batch_size=1, progress=False)
    assert full.AP == pytest.approx(100 * alone["AP"], abs=1e-9)
    again = compute.cached_ablation(ref, app_data, "val", 1, False)
    assert again is not None and list(again.setting) == list(df.setting)


def test_two_sessions_with_different_switches(app_checkpoint):
    """Two callers of the page's compute function at once, on one shared model, each get what they
    would get alone."""
    from app.compute import inspect_image
    from app.sidebar import sample_images
    from analysis.sources import load_model
    from dyhead.config import knock_out
    from dyhead.preprocess import load_image

    model, _ = load_model(app_checkpoint, "cpu")
    image = load_image(sample_images()[1])
    settings = {"a": AttentionSwitches(spatial=False), "b": knock_out(model.config.tower.num_blocks, 0, "task")}
    solo = {k: inspect_image(model, image, s) for k, s in settings.items()}
    together, barrier = {}, threading.Barrier(2)

    def run(k):
        barrier.wait()
        for _ in range(2):
            together[k] = inspect_image(model, image, settings[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in settings]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in settings:
        a, b = solo[k], together[k]
        np.testing.assert_array_equal(a.detections.scores, b.detections.scores)
        np.testing.assert_array_equal(a.detections.boxes, b.detections.boxes)
        last = a.stages.stages[-1]
        for x, y in zip(a.stages.reduced["l2"][last], b.stages.reduced["l2"][last]):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(a.offsets[0][0], b.offsets[0][0])
    # The two settings really differ (so the comparison above could fail).
    assert not np.array_equal(solo["a"].offsets[0][0], solo["b"].offsets[0][0])
    assert not np.array_equal(solo["a"].stages.reduced["l2"][last][0], solo["b"].stages.reduced["l2"][last][0])


def test_download_makers_and_sampling_geometry():
    import matplotlib.pyplot as plt
    import pandas as pd

    from app.downloads import csv_bytes, figure_bytes
    from app.drawing import sampling_points

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    assert figure_bytes(fig, "png").startswith(b"\x89PNG")
    fig, _ = plt.subplots()
    assert figure_bytes(fig, "pdf").startswith(b"%PDF")
    assert csv_bytes(pd.DataFrame({"a": [1]}), ["note"]) == b"# note\na\n1\n"

    offset = np.zeros((18, 5, 6), np.float32)
    mask = np.full((9, 5, 6), 0.5, np.float32)
    offset[2 * 4, 2, 3] = 1.0  # centre tap moves one cell down
    pts = sampling_points(offset, mask, 2, 3, stride=16, scale_yx=(2.0, 1.0))
    centre = pts[pts.tap == 4].iloc[0]
    assert (centre.grid_y, centre.grid_x) == ((2 + 0.5) * 16 * 2.0, (3 + 0.5) * 16)
    assert (centre.sample_y, centre.sample_x) == ((3 + 0.5) * 16 * 2.0, (3 + 0.5) * 16)
    corner = pts[pts.tap == 0].iloc[0]
    assert (corner.sample_y, corner.sample_x) == ((1 + 0.5) * 32, (2 + 0.5) * 16)
    assert set(pts["mask"]) == {0.5}


def test_device_and_coarser_mode_choices(app_env):
    at = _app()
    at.sidebar.selectbox(key="coarser").set_value("crop (mmdetection)").run()
    _ok(at)
    assert any("coarser branch: crop" in c.value for c in at.sidebar.caption)
    at.switch_page("views/how_it_works.py").run()
    at.button(key="hw_coarser").click().run()
    _ok(at)
    modes = at.dataframe[-1].value
    assert list(modes["mode"]) == ["official", "crop", "upsample_first"]
    assert modes.loc[modes["mode"] == "official", "removed"].item() == 0  # the reference against itself
    if not torch.cuda.is_available():
        at.sidebar.selectbox(key="device").set_value("cuda").run()
        _ok(at)
        assert any("CUDA is not available" in e.value for e in at.sidebar.error)
        assert any("No model loaded" in e.value for e in at.main.error)


DEMO_NOTICE_PAGES = ("views/detect.py", "views/inside_head.py", "views/attention_switches.py")


def _demo_notices(at: AppTest) -> list[str]:
    return [i.value for i in at.info if i.value.startswith("**Demo model:**")]


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason=f"bundled demo model {DEFAULT_CHECKPOINT} not present")
def test_demo_model_is_named_on_the_image_pages(app_env, tmp_path):
    """The bundled demo model (and a copy of the file elsewhere) says what it knows on the Detect, Inside
    the head and Attention on/off pages, with a link to the official releases; an upload gets a note;
    another model gets neither."""
    import shutil

    from analysis.sources import load_model
    from dyhead.checkpoint import save_checkpoint
    from dyhead.detector import build_detector
    from .conftest import tiny_detector_config

    names = load_model(DEFAULT_CHECKPOINT, "cpu")[0].config.class_names
    at = _app()
    at.sidebar.text_input(key="checkpoint").set_value(str(DEFAULT_CHECKPOINT)).run()
    for page in DEMO_NOTICE_PAGES:
        at.switch_page(page).run()
        _ok(at)
        notices = _demo_notices(at)
        assert len(notices) == 1, page
        assert f"knows {len(names)} shapes ({', '.join(names)})" in notices[0] and "generated images" in notices[0]
        assert [p.value for p in at.get("page_link")] == ["Official weights and COCO: how to load an official release"]
        assert not at.warning, page  # a sample image: no upload note
    at.switch_page("views/model_data.py").run()
    _ok(at)
    assert len(_demo_notices(at)) == 1
    pictures = [c for img in at.get("image") for c in img.captions]
    assert pictures[: len(names)] == list(names)  # one drawn example per class, in the model's order
    assert [p for p in pictures if p.startswith("demo_sample_")]  # and the bundled samples
    assert any("dyhead_r50_atss_fpn_1x.pth" in m.value for m in at.markdown)  # the README's section
    # An upload: the sidebar and the image pages say photos need an official release.
    at.switch_page("views/detect.py").run()
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    assert any("Real photos need an official DyHead release" in c.value for c in at.sidebar.caption)
    at.sidebar.file_uploader(key="upload").set_value(("cat.png", _png("RGB", (64, 48), (150, 120, 90)),
                                                      "image/png")).run()
    _ok(at)
    assert [w.value for w in at.warning if "Real photos need an official DyHead release" in w.value]
    at.switch_page("views/inside_head.py").run()
    assert [w.value for w in at.warning if "Real photos need an official DyHead release" in w.value]
    # A copy of the bundled file elsewhere is still the demo model.
    copy = shutil.copy(DEFAULT_CHECKPOINT, tmp_path / "renamed.pt")
    at = _app()
    at.sidebar.text_input(key="checkpoint").set_value(str(copy)).run()
    assert len(_demo_notices(at)) == 1
    # Another model: no notice, no link, no upload note.
    torch.manual_seed(0)
    other = save_checkpoint(tmp_path / "mine.pt", build_detector(tiny_detector_config(1)).eval())
    at = _app()
    at.sidebar.text_input(key="checkpoint").set_value(str(other)).run()
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    at.sidebar.file_uploader(key="upload").set_value(("cat.png", _png("RGB", (64, 48), (150, 120, 90)),
                                                      "image/png")).run()
    assert not any("Real photos" in c.value for c in at.sidebar.caption)
    for page in (*DEMO_NOTICE_PAGES, "views/model_data.py"):
        at.switch_page(page).run()
        _ok(at)
        assert not _demo_notices(at) and not at.get("page_link"), page
        assert not any("Real photos" in w.value for w in at.warning), page


def test_official_detectron2_file(app_env, conformance_dir, tmp_path):
    """A file in the official release layout ({"model": state_dict}, here the reduced model of the
    conformance kit) is recognised, named in the sidebar and runs on every image page."""
    golden = torch.load(conformance_dir / "official_atss_e2e_golden.pt", map_location="cpu", weights_only=True)
    state = {k[len("state_dict."):]: v for k, v in golden.items() if k.startswith("state_dict.")}
    path = tmp_path / "official_layout.pth"
    torch.save({"model": state}, path)
    at = _app()
    at.sidebar.text_input(key="checkpoint").set_value(str(path)).run()
    _ok(at)
    assert any("official DyHead release (detectron2)" in c.value for c in at.sidebar.caption)
    assert not at.error
    for page in ("views/inside_head.py", "views/how_it_works.py"):
        at.switch_page(page).run()
        _ok(at)
        assert not at.error


def test_dataset_image_source(app_env):
    at = _app()
    at.sidebar.radio(key="image_source").set_value("Dataset").run()
    _ok(at)
    at.sidebar.number_input(key="dataset_index").set_value(TINY_IMAGES - 1).run()
    _ok(at)
    assert any(f"(id {TINY_IMAGES})" in c.value for c in at.sidebar.caption)
    assert [m.label for m in at.metric][0] == "Detections shown"


def test_switch_keys():
    from app.compute import all_on_key, describe_switches, switches_from_key

    assert switches_from_key(all_on_key(3)) is None
    key = ((True, True, False), (True, True, True), (True, True, False))
    sw = switches_from_key(key)
    assert sw == (AttentionSwitches(task=False), AttentionSwitches(), AttentionSwitches(task=False))
    assert describe_switches(key) == "task off in blocks 1, 3"
    assert describe_switches(((False, True, True),) * 2) == "scale off in every block"
    assert describe_switches(all_on_key(2)) == "all attentions on"


@pytest.mark.parametrize("num_blocks", [1, 0])
def test_every_page_with_one_block_or_none(app_env, tmp_path, num_blocks):
    """Edge depths: one DyHead block (no sliders over blocks) and the ATSS baseline head (no blocks:
    the pages that look inside the head say so)."""
    from dataclasses import replace

    from dyhead.checkpoint import save_checkpoint
    from dyhead.detector import build_detector
    from .conftest import tiny_detector_config

    cfg = tiny_detector_config(num_blocks=max(num_blocks, 1))
    if num_blocks == 0:
        cfg = replace(cfg, tower=replace(cfg.tower, num_blocks=0), head_num_convs=1)
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / f"tiny_{num_blocks}.pt", build_detector(cfg).eval())
    at = _app()
    at.sidebar.text_input(key="checkpoint").set_value(str(path)).run()
    _ok(at)
    for page in PAGES:
        at.switch_page(page).run()
        _ok(at)
        if num_blocks == 0 and page in ("views/inside_head.py", "views/scale_ratios.py",
                                        "views/attention_switches.py", "views/how_it_works.py"):
            assert any("no DyHead blocks" in e.value for e in at.error), page
        else:
            assert not at.error, (page, [e.value for e in at.error])


def test_one_pass_per_results_folder(app_checkpoint, app_data, app_cache, monkeypatch):
    """Two sessions asking for the same scale-ratio pass: the second is told to wait, the files
    are never written by both at once."""
    from app import compute
    from analysis.sources import load_model

    monkeypatch.setenv("DYHEAD_APP_CACHE", str(app_cache))
    model, _ = load_model(app_checkpoint, "cpu")
    ref = compute.ModelRef.of(app_checkpoint, "cpu", "crop")
    csv = compute.scale_ratio_folder(ref, app_data, "val") / "weights.csv"
    lock = compute._folder_lock(str(csv))
    with lock:
        with pytest.raises(compute.BusyError):
            compute.run_scale_ratio_pass(model, ref, app_data, "val", 1)
    assert not csv.exists()
    compute.run_scale_ratio_pass(model, ref, app_data, "val", 1)
    assert compute.scale_ratio_progress(ref, app_data, "val", [1]) == 1


def test_reduced_maps_table(app_checkpoint):
    from analysis.feature_maps import feature_stages, reduce_stages
    from analysis.sources import load_model
    from app.downloads import reduced_maps_table
    from app.sidebar import sample_images
    from dyhead.preprocess import load_image

    model, _ = load_model(app_checkpoint, "cpu")
    stages = feature_stages(model, load_image(sample_images()[0]))
    rows = [stages.stages[0], stages.stages[-1]]
    for reduction, columns in (("mean_abs", ["value"]), ("pca", ["pc1", "pc2", "pc3"])):
        reduced = reduce_stages(stages, reduction, which=rows)
        table = reduced_maps_table(reduced, rows)
        assert list(table.columns) == ["stage", "level", "y", "x"] + columns
        assert len(table) == 2 * sum(m.shape[0] * m.shape[1] for m in reduced.maps[rows[0]])
        p3 = table[(table.stage == rows[-1]) & (table.level == "P3")]
        m = reduced.maps[rows[-1]][0]
        row = p3[(p3.y == 1) & (p3.x == 2)].iloc[0]
        expected = m[1, 2] if m.ndim == 2 else m[1, 2, 0]
        assert row[columns[0]] == pytest.approx(float(expected))


def test_paper_figures_from_the_disk_caches(app_env, app_checkpoint, app_data):
    """The PNG/PDF downloads draw from tables that went through the on-disk caches (CSV round trip)."""
    from app import compute
    from app.downloads import figure_bytes
    from analysis.ablation import plot_ablation
    from analysis.efficiency import plot_efficiency
    from analysis.scale_ratios import plot_scale_ratios
    from analysis.sources import load_model

    model, _ = load_model(app_checkpoint, "cpu")
    ref = compute.ModelRef.of(app_checkpoint, "cpu", None)
    compute.run_ablation(model, ref, app_data, "val", 1, True)
    table = compute.run_ablation(model, ref, app_data, "val", 1, True)  # read back from disk
    assert len(table) == 8 + 3 * model.config.tower.num_blocks
    assert figure_bytes(plot_ablation(table), "pdf").startswith(b"%PDF")
    eff = compute.efficiency_cached.__wrapped__((0, 1, 2), 16, (320, 320), 32)
    eff = compute.efficiency_cached.__wrapped__((0, 1, 2), 16, (320, 320), 32)  # from disk
    assert figure_bytes(plot_efficiency(eff), "png").startswith(b"\x89PNG")
    compute.run_scale_ratio_pass(model, ref, app_data, "val", 2)
    _, ratios = compute.load_scale_ratios(ref, app_data, "val", [1, 2])
    assert figure_bytes(plot_scale_ratios(ratios), "png").startswith(b"\x89PNG")


def test_large_upload_is_shown_downscaled(app_env):
    """A 3000x2000 photo: the model gets the full image, the page gets small copies."""
    from app.drawing import DISPLAY_MAX_SIDE, detections_figure, display_image

    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (2000, 3000, 3), dtype=np.uint8)
    small, scale = display_image(big)
    assert small.shape[:2] == (683, DISPLAY_MAX_SIDE) and scale == pytest.approx(DISPLAY_MAX_SIDE / 3000)
    fig = detections_figure(big, np.array([[100.0, 200.0, 900.0, 1500.0]]), np.array([0.9]), np.array([0]), ["a"])
    assert fig.data[0].dx == pytest.approx(1 / scale)
    assert fig.layout.shapes[0].x1 == 900.0  # boxes stay in original pixels
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="JPEG", quality=70)
    at = _app()
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    at.sidebar.file_uploader(key="upload").set_value(("big.jpg", buf.getvalue(), "image/jpeg")).run()
    _ok(at)
    assert any("big.jpg: 3000×2000" in c.value for c in at.sidebar.caption)
    at.switch_page("views/inside_head.py").run()
    _ok(at)
    assert not at.error


def test_how_it_works_states_what_the_official_code_reads(app_env):
    """The teaching text: the official coarser branch reads the start of the whole offset buffer
    (not the top rows), each branch uses the offsets differently, the code contradicts Eqs. 2-5 in
    places, and DyReLU's hyper-function differs from the paper's (normalisation layer, [-1, 1])."""
    at = _app()
    at.switch_page("views/how_it_works.py").run()
    _ok(at)
    text = " ".join(m.value for m in at.markdown)
    assert "top rows" not in text
    assert "first 18·H′·W′ values" in text and "first 4-5 of the 18 offset channels" in text
    assert "stride-2 conv" in text and "scrambled" in text
    assert "few details" not in text and "does not compute Eqs. 2-5 as written" in text
    assert "no normalisation layer" in text and "[−1, 1]" in text
    rows = list(at.dataframe[-1].value.iloc[:, 0])  # the paper-vs-code table, last on the page
    assert "Order (contradicts)" in rows and "DyReLU θ (contradicts)" in rows
    # The scale-weight table: text cells, a weight in [0.5, 1] where the code mixes the two levels
    # (direct neighbours), empty where it does not, as its caption says.
    weights = next(d.value for d in at.dataframe if "P3" in d.value.columns)
    assert weights.loc["P3", "P3"] != "" and 0.5 <= float(weights.loc["P3", "P4"]) <= 1.0
    assert weights.loc["P3", "P5"] == "" and weights.loc["P7", "P3"] == ""
    assert all(isinstance(v, str) for v in weights.to_numpy().ravel())


def test_efficiency_page_states_both_baselines(app_env):
    """The paper's 254.39 GFLOPs baseline next to this count's 209.8 GMACs, and the reading of the
    paper's FLOPs as multiply-adds given as an inference."""
    at = _app()
    at.switch_page("views/efficiency.py").run()
    _ok(at)
    text = " ".join(c.value for c in at.caption)
    assert "254.39" in text and "209.8 GMACs" in text
    assert "is an inference" in text and "FLOPs' are multiply-adds" not in text


def test_one_network_pass_per_image_switches_and_mode(app_env, network_passes):
    """Detect, Inside the head, How it works and the all-on side of Attention on/off share one pass
    per (model, image, switches, coarser mode); a switch toggle is one more pass, toggling back none;
    a coarser mode is one more pass on the same loaded model."""
    import streamlit as st

    calls = network_passes
    st.cache_resource.clear()  # no result of an earlier test
    at = _app()  # Detect
    _ok(at)
    assert len(calls) == 1
    for page in ("views/inside_head.py", "views/how_it_works.py", "views/attention_switches.py"):
        at.switch_page(page).run()
        _ok(at)
        assert len(calls) == 1, page
    at.toggle(key="sw_scale").set_value(False).run()
    _ok(at)
    assert len(calls) == 2
    at.toggle(key="sw_scale").set_value(True).run()
    at.toggle(key="sw_scale").set_value(False).run()
    _ok(at)
    assert len(calls) == 2
    at.sidebar.selectbox(key="coarser").set_value("crop (mmdetection)").run()
    _ok(at)
    assert len(calls) == 4  # this page's two settings under the new mode
    at.switch_page("views/detect.py").run()
    at.switch_page("views/inside_head.py").run()
    _ok(at)
    assert len(calls) == 4


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn", "swin_atss"])
def test_every_page_with_each_detector_kind(app_env, tmp_path, kind):
    """A tiny RetinaNet, Faster R-CNN or Swin-T ATSS + DyHead model in this project's format opens
    every page; the Faster R-CNN pyramid starts at P2."""
    from dyhead.backbone import BackboneConfig
    from dyhead.checkpoint import save_checkpoint
    from dyhead.detector import build_detector, kind_settings
    from .conftest import tiny_detector_config

    cfg = tiny_detector_config(num_blocks=2)
    if kind == "swin_atss":
        cfg = cfg.replace(backbone=BackboneConfig(kind="swin", swin_embed_dim=24))
    else:
        cfg = cfg.replace(**kind_settings(kind), box_fc_dim=16)
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / f"tiny_{kind}.pt", build_detector(cfg).eval())
    at = _app()
    at.sidebar.text_input(key="checkpoint").set_value(str(path)).run()
    _ok(at)
    assert not at.error, [e.value for e in at.error]
    for page in PAGES:
        at.switch_page(page).run()
        _ok(at)
        assert not at.error, (page, [e.value for e in at.error])
        if page == "views/inside_head.py":
            first = at.selectbox(key="off_level").options[0]
            assert first.startswith("P2 (stride 4" if kind == "faster_rcnn" else "P3 (stride 8"), first
            pyramid = "levels P2..P6 = strides 4..64" if kind == "faster_rcnn" else "levels P3..P7 = strides 8..128"
            assert any(pyramid.lower() in c.value.lower() for c in at.caption), pyramid
