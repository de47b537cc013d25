"""Image decoding (modes, EXIF, bad files), the official resize rounding and Pillow resize, batching."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dyhead.preprocess import ImageLoadError, load_image, resize_image, resized_size, to_model_input


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_resized_size_official_rounding_and_cap():
    assert resized_size(512, 512, 320, 512) == (320, 320)
    assert resized_size(480, 640, 800, 1333) == (800, 1067)  # 1066.67
    assert resized_size(100, 1000, 800, 1333) == (133, 1333)  # long side capped
    # int(x + 0.5) rounds 2.5 up; Python's round() would give 2
    assert resized_size(2, 5, 1, 100) == (1, 3)
    assert resized_size(5, 2, 1, 100) == (3, 1)


def test_resize_image_is_pillow_bilinear_with_antialiasing():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    out = resize_image(img, 20, 100)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    ref = np.asarray(Image.fromarray(img).resize((30, 20), Image.BILINEAR))
    assert np.array_equal(out, ref)
    # per-channel: the channel order does not change the result (the official code resizes BGR)
    assert np.array_equal(resize_image(img[:, :, ::-1].copy(), 20, 100), out[:, :, ::-1])
    plain = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=(20, 30), mode="bilinear")
    assert np.abs(plain[0].permute(1, 2, 0).round().numpy() - out).max() > 10  # not torch's bilinear


def test_to_model_input_bgr_normalise_then_zero_pad():
    a = np.zeros((5, 7, 3), dtype=np.uint8)
    a[..., 0] = 200  # red
    b = np.full((3, 4, 3), 10, dtype=np.uint8)
    batch, sizes = to_model_input([a, b], "BGR", (100.0, 110.0, 120.0), (1.0, 2.0, 4.0), 4)
    assert batch.shape == (2, 3, 8, 8) and batch.dtype == torch.float32
    assert sizes == [(5, 7), (3, 4)]
    # channel 0 is blue (0), channel 2 is red (200)
    assert batch[0, 0, 0, 0] == -100.0 and batch[0, 1, 0, 0] == -55.0 and batch[0, 2, 0, 0] == 20.0
    # padding is zero in normalised units (= the mean colour), bottom/right only
    assert batch[0, :, 5:, :].abs().max() == 0 and batch[0, :, :, 7:].abs().max() == 0
    assert batch[1, 0, 2, 3] == -90.0 and batch[1, :, 3:, :].abs().max() == 0
    rgb, _ = to_model_input([a], "RGB", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 0)
    assert rgb.shape == (1, 3, 5, 7) and rgb[0, 0, 0, 0] == 200.0


def test_load_rgb_png_from_path_and_bytes(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    assert np.array_equal(load_image(path), arr)
    assert np.array_equal(load_image(path.read_bytes()), arr)


def test_grayscale_palette_and_rgba():
    gray = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    out = load_image(_png_bytes(Image.fromarray(gray, mode="L")))
    assert out.shape == (2, 2, 3) and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 0  # fully transparent: alpha is dropped, as detectron2's convert("RGB")
    assert load_image(_png_bytes(Image.fromarray(rgba, mode="RGBA")))[0, 0].tolist() == [10, 20, 30]
    pal = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    assert load_image(_png_bytes(pal)).tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_sixteen_bit_images_are_scaled_to_eight_bits():
    values = np.array([[0, 257 * 100], [65535, 257 * 3]], dtype=np.uint16)
    img = Image.fromarray(values)  # mode I;16
    assert img.mode.startswith("I;16")
    out = load_image(_png_bytes(img))
    assert out[..., 1].tolist() == [[0, 100], [255, 3]]
    i32 = Image.fromarray(values.astype(np.int32))  # mode I holding 16-bit data
    assert load_image(_png_bytes(i32, format="TIFF"))[..., 0].tolist() == [[0, 100], [255, 3]]


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _png_bytes(img, format="JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(data)
    assert out.shape == (40, 20, 3)
    assert out[5, 10].mean() > 200 and out[35, 10].mean() < 50  # the white half is now on top


def test_bad_files_raise_clear_errors(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.jpg: empty file"):
        load_image(empty)
    with pytest.raises(ImageLoadError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ImageLoadError, match="notes.jpg: not a recognised image format"):
        load_image(text)
    good = _png_bytes(Image.fromarray(np.full((64, 64, 3), 9, np.uint8)), format="JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg: corrupt or truncated"):
        load_image(truncated)
    with pytest.raises(ImageLoadError, match="empty image data"):
        load_image(b"")


def test_huge_images_are_refused_before_decoding():
    data = _png_bytes(Image.new("RGB", (300, 200)))
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(data, max_pixels=50_000)
    assert load_image(data, max_pixels=60_000).shape == (200, 300, 3)


def test_binary_file_objects_are_accepted(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (5, 4), (1, 2, 3)).save(path)
    with open(path, "rb") as f:
        assert load_image(f)[0, 0].tolist() == [1, 2, 3]
    with open(path, "r", errors="ignore") as f, pytest.raises(ImageLoadError, match="binary mode"):
        load_image(f)
