"""The sidebar shared by every page: model, dataset, device, coarser-branch mode and the current image.

`draw_sidebar()` is called by the router (`app/main.py`) on every run, before the page; it draws the
widgets, loads the model (cached) and stores an `AppContext` in this session's state, which the page
reads with `context()`. Nothing here is shared between sessions except the cached model itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import streamlit as st

from . import compute
from .paths import SAMPLE_DIRS, cache_dir, default_checkpoint, default_data_root, refusal

__all__ = ["AppContext", "PickedImage", "draw_sidebar", "context", "load_upload", "sample_images", "require_model"]

_CTX = "dyhead_app_context"

KIND_NAMES = {
    "own": "DyHead Explorer checkpoint",
    "detectron2": "official DyHead release (detectron2)",
}
COARSER_CHOICES = {
    "the file's own": None,
    "official (CUDA kernel reading)": "official",
    "crop (mmdetection)": "crop",
    "upsample first (no mismatch)": "upsample_first",
}
UPLOAD_TYPES = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "gif"]
#: Said beside an upload while the demo model is loaded.
UPLOAD_NOTE = ("Real photos need an official DyHead release (see **Model & data**) or a model trained on your "
               "own data: the demo model knows only its generated shapes.")


@dataclass
class PickedImage:
    """The current image: HxWx3 uint8 RGB, a name for titles, a content key for the caches and a
    note when it was converted (grayscale, RGBA, 16-bit ...)."""

    array: np.ndarray
    name: str
    key: str
    note: str = ""
    uploaded: bool = False  # the user's own file (not a sample or a dataset image)


@dataclass
class AppContext:
    checkpoint: Path
    device_request: str
    coarser: Optional[str]
    data_root_text: str  # "" = the demo data
    split: str
    model: object = None
    info: Optional[object] = None  # dyhead.weights.LoadInfo
    ref: Optional[compute.ModelRef] = None
    model_error: str = ""
    demo_model: bool = False  # the bundled demo model (`analysis.sources.is_demo_model`)
    image: Optional[PickedImage] = None
    image_error: str = ""

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.model.config.class_names)

    @property
    def num_blocks(self) -> int:
        return int(self.model.config.tower.num_blocks)

    def data_root(self) -> Path:
        """The dataset root (the demo data, generated on first use, when the field is empty); raises
        `analysis.sources.SourceError` with a clear message when it cannot be used (also when it lies
        outside DYHEAD_APP_ALLOWED_DIRS)."""
        if self.data_root_text and refusal(Path(self.data_root_text), "dataset root"):
            from analysis.sources import SourceError

            raise SourceError(refusal(Path(self.data_root_text), "dataset root"))
        return compute.resolved_data_root(self.data_root_text or None, self.split)

    def dataset_records(self) -> list:
        """The chosen split's image records (cached per annotation file version); raises
        `analysis.sources.SourceError` like `data_root`."""
        root = self.data_root()
        return compute.dataset_records(str(root), self.split, compute.annotation_mtime(root, self.split))

    @property
    def data_label(self) -> str:
        return self.data_root_text or "demo data"


def context() -> AppContext:
    """This session's context, as drawn by `draw_sidebar` in this run."""
    ctx = st.session_state.get(_CTX)
    if ctx is None:  # a page opened without the router (should not happen): draw the sidebar now
        ctx = draw_sidebar()
    return ctx


def dataset_or_stop(ctx: AppContext) -> tuple[Path, list]:
    """The dataset root and its image records; stops the page with the reason when the dataset
    can't be used."""
    from analysis.sources import SourceError

    try:
        return ctx.data_root(), ctx.dataset_records()
    except SourceError as exc:
        st.error(f"Dataset: {exc}")
        st.stop()


def require_model() -> AppContext:
    """The context; stops the page with a clear message when no model could be loaded."""
    ctx = context()
    if not ctx.ready:
        st.error(f"No model loaded: {ctx.model_error}")
        st.info("Choose a checkpoint in the sidebar (**Model & data**). The bundled demo model is "
                "`checkpoints/demo_dyhead.pt`.")
        st.stop()
    return ctx


# ------------------------------------------------------------------------------------------------
# Model and data


def draw_sidebar() -> AppContext:
    sb = st.sidebar
    sb.header("Model & data")
    ckpt_text = sb.text_input("Checkpoint file", value=str(default_checkpoint()), key="checkpoint",
                              help="This project's checkpoint, an official DyHead detectron2 release file, ...")
    device_request = sb.selectbox("Device", ["auto", "cuda", "cpu"], key="device")
    coarser_label = sb.selectbox("Coarser-branch mode", list(COARSER_CHOICES), key="coarser",
                                 help="How the coarser neighbour's deformable conv reads level l's offsets "
                                      "(microsoft/DynamicHead issue 25; see *How it works*).")
    data_text = sb.text_input("Dataset root (COCO format; empty = demo data)", value=default_data_root(),
                              key="data_root", help="e.g. a COCO 2017 folder with val2017/ and annotations/")
    split = sb.text_input("Split", value="val", key="split", help="'val' also finds 'val2017'") or "val"

    ctx = AppContext(Path(ckpt_text.strip()).expanduser() if ckpt_text.strip() else default_checkpoint(),
                     device_request, COARSER_CHOICES[coarser_label], data_text.strip(), split.strip())
    _load_into(ctx, sb)
    _draw_image_picker(ctx, sb)
    st.session_state[_CTX] = ctx
    return ctx


def _load_into(ctx: AppContext, sb) -> None:
    from analysis.sources import DEFAULT_CHECKPOINT, is_demo_model
    from dyhead.checkpoint import CheckpointError
    from dyhead.device import DeviceError, resolve_device

    try:
        device = str(resolve_device(ctx.device_request))
    except DeviceError as exc:
        ctx.model_error = str(exc)
        sb.error(f"Device: {exc}")
        return
    path = ctx.checkpoint
    refused = refusal(path, "checkpoint")
    if refused:
        ctx.model_error = refused
        sb.error(refused)
        return
    if not path.is_file():
        if path.resolve() == DEFAULT_CHECKPOINT.resolve():
            ctx.model_error = (f"the bundled demo model {path} is missing. Train it with "
                               "`python -m dyhead.train --preset demo_cpu`, or enter another checkpoint file.")
        else:
            ctx.model_error = f"checkpoint file {path} not found"
        sb.error(ctx.model_error)
        return
    try:
        ref = compute.ModelRef.of(path, device, ctx.coarser)
        model, info = compute.load_model_cached(ref)
    except (CheckpointError, OSError, ValueError, RuntimeError) as exc:
        ctx.model_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, CheckpointError) else str(exc)
        sb.error(f"Could not load the checkpoint: {ctx.model_error}")
        return
    ctx.model, ctx.info, ctx.ref = model, info, ref
    ctx.demo_model = is_demo_model(path)
    tower = model.config.tower
    sb.caption(
        f"**{KIND_NAMES.get(info.kind, info.kind)}** · running on **{device}**"
        + (" (auto)" if ctx.device_request == "auto" else "")
        + f" · {tower.num_blocks} blocks × {tower.channels} ch · coarser branch: "
        + (ctx.coarser or tower.coarser_branch.value)
        + f" · {model.config.num_classes} classes"
    )


# ------------------------------------------------------------------------------------------------
# The current image


@st.cache_resource(show_spinner=False)
def _generated_samples() -> list[str]:
    from dyhead.data.demo import generate_samples

    return [str(p) for p in generate_samples(cache_dir() / "samples", count=6)]


def sample_images() -> list[Path]:
    """The bundled sample images (first folder of `SAMPLE_DIRS` that holds any), else generated ones."""
    for folder in SAMPLE_DIRS:
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if files:
                return files
    return [Path(p) for p in _generated_samples()]


@st.cache_data(max_entries=16, show_spinner=False)
def _decode(data: bytes, name: str) -> tuple[np.ndarray, str, str]:
    """(RGB array, content key, conversion note); raises ImageLoadError."""
    from PIL import Image

    from dyhead.preprocess import load_image

    array = load_image(data)
    note = ""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode != "RGB":
                note = f"converted from Pillow mode {img.mode} to RGB"
    except Exception:  # noqa: BLE001 - load_image succeeded; the note is optional
        pass
    return array, compute.image_key(data), note


def load_upload(name: str, data: bytes) -> PickedImage:
    """Decode uploaded bytes (the same path the file uploader takes). Raises
    `dyhead.preprocess.ImageLoadError` with a message naming the problem."""
    from dyhead.preprocess import ImageLoadError

    if not data:
        raise ImageLoadError(f"{name}: empty file (0 bytes)")
    try:
        array, key, note = _decode(bytes(data), name)
    except ImageLoadError as exc:
        raise ImageLoadError(str(exc).replace(f"<{len(data)} bytes>", name)) from None
    return PickedImage(array, name, key, note)


def _load_path(path: Path) -> PickedImage:
    return load_upload(path.name, path.read_bytes())


def _draw_image_picker(ctx: AppContext, sb) -> None:
    from analysis.sources import SourceError
    from dyhead.preprocess import ImageLoadError

    sb.header("Image")
    source = sb.radio("Source", ["Sample", "Dataset", "Upload"], horizontal=True, key="image_source")
    try:
        if source == "Sample":
            samples = sample_images()
            choice = sb.selectbox("Sample image", [p.name for p in samples], key="sample_name")
            ctx.image = _load_path(next(p for p in samples if p.name == choice))
        elif source == "Dataset":
            records = ctx.dataset_records()
            index = sb.number_input(f"Image index (0-{len(records) - 1})", 0, len(records) - 1, 0, key="dataset_index")
            rec = records[int(index)]
            ctx.image = _load_path(rec.path)
            ctx.image.name = f"{rec.file_name} (id {rec.image_id})"
        else:
            upload = sb.file_uploader("Upload an image", type=UPLOAD_TYPES, key="upload")
            if ctx.demo_model:
                sb.caption(UPLOAD_NOTE)
            if upload is None:
                ctx.image_error = "no image uploaded yet"
            else:
                ctx.image = load_upload(upload.name, upload.getvalue())
                ctx.image.uploaded = True
    except (ImageLoadError, SourceError, OSError) as exc:
        ctx.image = None
        ctx.image_error = str(exc)
        sb.error(f"Image: {exc}")
    if ctx.image is not None:
        h, w = ctx.image.array.shape[:2]
        sb.caption(f"{ctx.image.name}: {w}×{h}" + (f" ({ctx.image.note})" if ctx.image.note else ""))


def require_image(ctx: AppContext) -> PickedImage:
    if ctx.image is None:
        st.error(f"No usable image: {ctx.image_error}" if ctx.image_error else "No image chosen.")
        st.info("Pick a sample, a dataset image or upload one in the sidebar (**Image**).")
        st.stop()
    return ctx.image
