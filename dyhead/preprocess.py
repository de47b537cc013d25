"""Image decoding, resizing and batching exactly as the official DyHead test path does it.

Official path (detectron2 ``DatasetMapper(is_train=False)`` + ``ImageList``; conformance README 9.3
steps 1-3): Pillow decode with EXIF orientation, ``convert("RGB")``; ResizeShortestEdge with
``int(x + 0.5)`` rounding and Pillow BILINEAR on uint8 (a triangle filter that antialiases when
downscaling, not ``torch.nn.functional.interpolate``); ``(x - mean) / std`` in float32; zero padding at
the bottom and right *after* normalisation, up to a multiple of the size divisibility.

Images are handled as HxWx3 uint8 RGB arrays throughout; the channel order the model wants (BGR for
the official weights) is applied only in `to_model_input`. Pillow resizes each channel independently,
so resizing RGB instead of the official BGR array gives the same bytes.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

__all__ = [
    "ImageLoadError",
    "MAX_IMAGE_PIXELS",
    "load_image",
    "resized_size",
    "resize_image",
    "to_model_input",
]

#: Larger images are refused (a decompression-bomb guard well below Pillow's own).
MAX_IMAGE_PIXELS = 64_000_000

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]


class ImageLoadError(ValueError):
    """An image that cannot be used: unreadable, corrupt, empty or too large."""


def _describe(source: ImageSource) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return str(source)


def load_image(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file (path, encoded bytes or a binary file object) into HxWx3 uint8 RGB.

    EXIF orientation is applied. Grayscale, palette, CMYK and RGBA images are converted with Pillow's
    ``convert("RGB")`` (alpha dropped, as detectron2 does); 16/32-bit integer and float images are
    scaled to 0-255 first. Raises `ImageLoadError` naming the file and the problem.
    """
    if hasattr(source, "read"):  # an open binary file or an upload object
        name = str(getattr(source, "name", "<stream>"))
        source = source.read()
        if isinstance(source, str):
            raise ImageLoadError(f"{name}: opened in text mode; open image files in binary mode ('rb')")
    else:
        name = _describe(source)
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageLoadError(f"{name}: empty image data")
        fp = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(f"{name}: file not found")
        if not path.is_file():
            raise ImageLoadError(f"{name}: not a file")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{name}: empty file (0 bytes)")
        fp = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(
                        f"{name}: image too large ({w}x{h} = {w * h / 1e6:.1f} MP; the limit is {max_pixels / 1e6:.0f} MP)"
                    )
                if w == 0 or h == 0:
                    raise ImageLoadError(f"{name}: image has zero size ({w}x{h})")
                img.load()
                img = _apply_exif_orientation(img)
                return _to_rgb_array(img, name)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{name}: image too large (decompression bomb guard: {exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageLoadError(f"{name}: not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageLoadError(f"{name}: corrupt or truncated image ({exc})") from exc


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the pixels unusable
        return img


def _to_rgb_array(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if arr.ndim != 2:
            raise ImageLoadError(f"{name}: unsupported {mode} image with shape {arr.shape}")
        peak = float(arr.max()) if arr.size else 0.0
        if mode == "F" and peak <= 1.0:
            arr = arr * 255.0  # float images in [0, 1]
        elif mode.startswith("I;16") or 255.0 < peak <= 65535.0:
            arr = arr / 257.0  # 16-bit range -> 8-bit range (65535 -> 255)
        elif peak > 65535.0:
            arr = arr * (255.0 / peak)
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageLoadError(f"{name}: could not convert mode {mode} to RGB (got shape {rgb.shape})")
    return np.ascontiguousarray(rgb)


def resized_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``: short side to `min_size`, long side capped
    at `max_size`, each side rounded with ``int(x + 0.5)``."""
    size = min_size * 1.0
    scale = size / min(h, w)
    if h < w:
        newh, neww = size, scale * w
    else:
        newh, neww = scale * h, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_image(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """HxWx3 uint8 -> newH x newW x 3 uint8 with Pillow BILINEAR (the official resize)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    newh, neww = resized_size(image.shape[0], image.shape[1], min_size, max_size)
    resized = Image.fromarray(image).resize((neww, newh), Image.BILINEAR)
    return np.array(resized)


def to_model_input(
    images: Sequence[np.ndarray],
    pixel_format: str,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    size_divisibility: int,
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Resized HxWx3 uint8 RGB arrays -> (batch [N, 3, Hp, Wp] float32, unpadded sizes [(h, w)]).

    Normalised as ``(x - mean) / std`` in float32, then zero-padded bottom/right to the largest size
    rounded up to `size_divisibility` (detectron2 ``ImageList.from_tensors``, pad value 0).
    """
    if len(images) == 0:
        raise ValueError("to_model_input needs at least one image")
    if pixel_format not in ("BGR", "RGB"):
        raise ValueError(f"pixel_format must be 'BGR' or 'RGB', got {pixel_format!r}")
    mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)
    tensors, sizes = [], []
    for img in images:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected HxWx3 uint8 RGB images, got {img.dtype} {img.shape}")
        chw = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # [3, h, w] uint8, RGB
        if pixel_format == "BGR":
            chw = chw.flip(0)
        tensors.append((chw - mean) / std)  # uint8 - float32 -> float32, as the official model does
        sizes.append((int(img.shape[0]), int(img.shape[1])))
    max_h = max(h for h, _ in sizes)
    max_w = max(w for _, w in sizes)
    if size_divisibility > 1:
        max_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
        max_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility
    batch = tensors[0].new_zeros(len(tensors), 3, max_h, max_w)  # [N, 3, Hp, Wp]
    for i, t in enumerate(tensors):
        batch[i, :, : t.shape[1], : t.shape[2]].copy_(t)
    return batch, sizes
