"""What the pages compute, and the caches around it.

Every number comes from `dyhead` (the model) or `analysis` (the paper's figures); this module only
calls them, converts the results into small picklable values and caches them:

* `st.cache_resource` holds loaded models, once per (file, device). A cached model is shared by every
  browser session and every coarser-branch mode and is never modified: attention switches and the
  coarser-branch mode are passed to each call.
* One network pass per (model, coarser mode, image, switches) computes everything the pages show
  (`inspect_image`: detections, scale weights, offsets, DyReLU coefficients, reduced feature maps); the
  result sits in a cache bounded by bytes (`result_cache`, `app.result_cache.ByteLRU`), read without
  copying by every page and session.
* Passes over a dataset (scale ratios, the on/off AP table) write their results under the app's cache
  folder (`app.paths.cache_dir`), so that a reloaded or interrupted page resumes instead of starting over.

The plain functions (`detect`, `inspect_image`, ...) take the model as an argument and keep nothing
between calls; the ``*_cached`` wrappers add Streamlit's caches.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dyhead.config import AttentionSwitches

from .paths import cache_dir, file_key, short_hash

__all__ = [
    "ModelRef",
    "SwitchKey",
    "all_on_key",
    "switches_from_key",
    "describe_switches",
    "Variants",
    "DEFAULT_VARIANTS",
    "knockout_constants",
    "calibrate_constants",
    "retrain_folders",
    "retrain_results",
    "retrain_longer_runs",
    "load_model_cached",
    "DetectResult",
    "detect",
    "detect_cached",
    "InsideResult",
    "inspect_image",
    "inspect_cached",
    "dataset_records",
    "resolved_data_root",
    "scale_ratio_folder",
    "BusyError",
    "run_scale_ratio_pass",
    "scale_ratio_progress",
    "load_scale_ratios",
    "ablation_csv_path",
    "run_ablation",
    "efficiency_cached",
    "image_key",
]

#: One (scale, spatial, task) triple per block: a hashable form of the per-block switches.
SwitchKey = tuple[tuple[bool, bool, bool], ...]


# ------------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True)
class ModelRef:
    """Identifies one model file (path, size, mtime) on one device, and the coarser-branch mode its
    results are computed with (None = the file's own semantics). The loaded model depends on the file
    and the device only: the mode is passed to every call, so one loaded model serves every mode."""

    path: str
    size: int
    mtime_ns: int
    device: str
    coarser: Optional[str]

    @classmethod
    def of(cls, path: Path, device: str, coarser: Optional[str]) -> "ModelRef":
        resolved, size, mtime = file_key(path)
        return cls(resolved, size, mtime, device, coarser)

    @property
    def model_key(self) -> str:
        """The key of the loaded model (file and device)."""
        return short_hash(self.path, self.size, self.mtime_ns, self.device)

    @property
    def key(self) -> str:
        """The key of results computed with this model and mode."""
        return short_hash(self.path, self.size, self.mtime_ns, self.device, self.coarser)


@st.cache_resource(max_entries=2, show_spinner="Loading the model ...")
def _load_model(path: str, size: int, mtime_ns: int, device: str):
    from analysis.sources import load_model

    model, info = load_model(path, device=device)
    return model.eval(), info


def load_model_cached(ref: ModelRef):
    """(DyHeadDetector in eval mode, `dyhead.weights.LoadInfo`) for `ref`'s file and device, loaded
    once per process and shared by every coarser-branch mode and session."""
    return _load_model(ref.path, ref.size, ref.mtime_ns, ref.device)


# ------------------------------------------------------------------------------------------------
# Switches


def all_on_key(num_blocks: int) -> SwitchKey:
    return ((True, True, True),) * num_blocks


#: The knock-out variants of one request: (scale_off, task_off), see `dyhead.config.SCALE_KNOCKOUTS`.
Variants = tuple[str, str]
DEFAULT_VARIANTS: Variants = ("calibrated", "relu")


def switches_from_key(key: SwitchKey, variants: Variants = DEFAULT_VARIANTS, constants=None):
    """None when every attention is on, else one `AttentionSwitches` per block, switched-off
    attentions replaced as `variants` (scale_off, task_off) say, reading `constants`
    (`knockout_constants`) for the calibrated and static variants."""
    if all(all(t) for t in key):
        return None
    scale_off, task_off = variants
    return tuple(AttentionSwitches(scale=s, spatial=p, task=c, scale_off=scale_off, task_off=task_off,
                                   constants=constants) for s, p, c in key)


def describe_switches(key: SwitchKey, variants: Optional[Variants] = None) -> str:
    """'all attentions on', 'scale off in every block', 'task off in blocks 2, 5', ...; with
    `variants`, each switched-off attention names its variant ('scale off (calibrated) in ...')."""
    parts = []
    for i, name in enumerate(("scale", "spatial", "task")):
        off = [b + 1 for b, t in enumerate(key) if not t[i]]
        if not off:
            continue
        where = "every block" if len(off) == len(key) else "block" + ("s " if len(off) > 1 else " ") + ", ".join(map(str, off))
        variant = {"scale": variants[0], "task": variants[1]}.get(name, "zero offsets") if variants else None
        parts.append(f"{name} off" + (f" ({variant})" if variant else "") + f" in {where}")
    return "; ".join(parts) if parts else "all attentions on"


_constants_lock = threading.Lock()
_constants: dict[str, object] = {}


def knockout_constants(ref: "ModelRef", model):
    """The model file's calibrated knock-out constants (`dyhead.knockout`), read once from the file
    beside it (the demo model ships with one), or None when it has none yet (`calibrate_constants`)."""
    from dyhead.knockout import load_or_calibrate

    with _constants_lock:
        if ref.model_key not in _constants:
            try:
                _constants[ref.model_key] = load_or_calibrate(model, ref.path, None)
            except FileNotFoundError:
                return None
        return _constants[ref.model_key]


def calibrate_constants(ref: "ModelRef", model, root: Path, split: str,
                        progress: Optional[Callable[[int, int], None]] = None):
    """One calibration pass over `split` of `root` (all on, scale weights and DyReLU coefficients
    only), saved beside the model file (or in the user cache) and used from then on."""
    from dyhead.knockout import load_or_calibrate

    with exclusive("calibrate:" + ref.model_key, "calibrating this model"):
        constants = load_or_calibrate(model, ref.path, root, split, recalibrate=True, progress=False,
                                      coarser_branch=ref.coarser, on_image=progress)
        with _constants_lock:
            _constants[ref.model_key] = constants
        return constants


# ------------------------------------------------------------------------------------------------
# One image: one network pass per (model, image, switches, coarser mode), shared by every page


def image_key(data: bytes) -> str:
    """A content key for an encoded image (what the per-image caches are keyed by)."""
    return short_hash(len(data), hashlib.sha1(data).hexdigest())


@dataclass
class DetectResult:
    """Detections of one image in original-image pixels (numpy arrays), and the inference time."""

    boxes: np.ndarray  # [M, 4] xyxy
    scores: np.ndarray  # [M]
    labels: np.ndarray  # [M] contiguous class index
    seconds: float
    device: str
    #: the level (0 = P3) and anchor point (y * W_l + x on the padded map) that scored each detection
    levels: Optional[np.ndarray] = None  # [M]
    locations: Optional[np.ndarray] = None  # [M]

    @classmethod
    def of(cls, dets, seconds: float, device: str) -> "DetectResult":
        where = [None if v is None else v.cpu().numpy() for v in (dets.levels, dets.locations)]
        return cls(dets.boxes.float().cpu().numpy(), dets.scores.float().cpu().numpy(), dets.labels.cpu().numpy(),
                   seconds, device, *where)

    def table(self, class_names: Sequence[str], threshold: float = 0.0) -> pd.DataFrame:
        keep = self.scores >= threshold
        b = self.boxes[keep]
        return pd.DataFrame({
            "class": [class_names[int(i)] for i in self.labels[keep]],
            "score": self.scores[keep].round(4),
            "x1": b[:, 0].round(1), "y1": b[:, 1].round(1), "x2": b[:, 2].round(1), "y2": b[:, 3].round(1),
        })

    def as_detections(self, threshold: float = 0.0):
        from dyhead.postprocess import Detections

        keep = self.scores >= threshold
        return Detections(torch.from_numpy(self.boxes[keep]), torch.from_numpy(self.scores[keep]),
                          torch.from_numpy(self.labels[keep]))


def detect(model, image: np.ndarray, switches=None, coarser: Optional[str] = None) -> DetectResult:
    """Detections only (`DyHeadDetector.infer` without a trace), timed."""
    result = model.infer([image], switches=switches, coarser_branch=coarser)
    return DetectResult.of(result.detections[0], result.seconds, result.device)


#: The reductions of the feature maps computed in every pass (a chosen channel adds "channel:<k>").
PAGE_REDUCTIONS = ("mean_abs", "l2", "max", "pca")


@dataclass
class InsideResult:
    """What the network computed for one image under one (switches, coarser mode): everything the
    pages show, as small numpy arrays and tables (no full feature maps).

    stages: `analysis.feature_maps.FeatureStages` with the maps already reduced (`PAGE_REDUCTIONS`
    plus any channel asked for), cut to the image. weights: one row per (block, level, source level)
    with the scale weight (`analysis.scale_ratios.WEIGHT_COLUMNS`); extra["scale_logits"]: the hard
    sigmoid's inputs (empty when scale attention is off). offsets[b][l]: [18, H_l, W_l] (dy, dx per
    tap, in level-l cells), masks[b][l]: [9, H_l, W_l]; dyrelu[b][l]: {"a1", "b1", "a2", "b2"} each [C].
    """

    stages: object
    weights: pd.DataFrame
    offsets: list[list[np.ndarray]]
    masks: list[list[np.ndarray]]
    dyrelu: list[list[dict[str, np.ndarray]]]
    detections: DetectResult
    resized_size: tuple[int, int]
    original_size: tuple[int, int]
    strides: tuple[int, ...]
    num_blocks: int
    num_levels: int
    extra: dict = field(default_factory=dict)


def inspect_image(model, image: np.ndarray, switches=None, name: str = "image", coarser: Optional[str] = None,
                  reductions: Sequence[str] = PAGE_REDUCTIONS) -> InsideResult:
    """Detections, scale weights, offsets and masks, DyReLU coefficients and the reduced feature-map
    stages of one image under `switches`: one `DyHeadDetector.infer` pass."""
    from analysis.feature_maps import stage_trace_spec, stages_from_trace
    from analysis.scale_ratios import WEIGHT_COLUMNS, weights_from_trace
    from analysis.sources import ImageRecord
    from dyhead.trace import TraceSpec

    maps = stage_trace_spec(reductions)
    spec = TraceSpec(scale=True, spatial=True, dyrelu=True, pyramid=True, mid=True, outputs=True, crop=True,
                     reduce=maps.reduce)
    result = model.infer([image], switches=switches, coarser_branch=coarser, trace=spec)
    trace = result.trace
    det = DetectResult.of(result.detections[0], result.seconds, result.device)
    rows = weights_from_trace(trace, [ImageRecord(0, name, Path(name))])
    weights = pd.DataFrame(rows, columns=list(WEIGHT_COLUMNS)).drop(columns=["image_id", "file_name"])
    offsets = [[lt.offset[0].float().cpu().numpy() for lt in b.levels] for b in trace.blocks]
    masks = [[lt.mask[0].float().cpu().numpy() for lt in b.levels] for b in trace.blocks]
    dyrelu = [[{k: v[0].float().cpu().numpy() for k, v in lt.dyrelu.as_dict().items()} for lt in b.levels]
              for b in trace.blocks]
    logits = pd.DataFrame(
        [(b, l, src, float(v[0])) for b, blk in enumerate(trace.blocks) for l, lt in enumerate(blk.levels)
         for src, v in sorted(lt.scale_logits.items())],
        columns=["block", "level", "source_level", "logit"])
    stages = stages_from_trace(trace, image, result.resized_sizes[0], model.config.strides)
    return InsideResult(stages, weights, offsets, masks, dyrelu, det, tuple(result.resized_sizes[0]),
                        tuple(result.original_sizes[0]), tuple(model.config.strides), len(trace.blocks),
                        len(trace.blocks[0].levels) if trace.blocks else 0, extra={"scale_logits": logits})


def result_cache_bytes() -> int:
    """The per-image result cache's budget: DYHEAD_APP_CACHE_MB (default 384 MB)."""
    import os

    try:
        return int(float(os.environ.get("DYHEAD_APP_CACHE_MB", "384")) * 2**20)
    except ValueError:
        return 384 * 2**20


@st.cache_resource(show_spinner=False)
def result_cache():
    """The per-image results of this server (`app.result_cache.ByteLRU`), shared by every session."""
    from .result_cache import ByteLRU

    return ByteLRU(result_cache_bytes())


def inspect_cached(ref: ModelRef, model, image_id: str, image: np.ndarray, switch_key: SwitchKey,
                   name: str = "image", channel: Optional[int] = None,
                   variants: Variants = DEFAULT_VARIANTS) -> InsideResult:
    """`inspect_image` once per (model, mode, image, switches[, channel], knock-out variants); every
    page reads it. A channel picked for the "channel" reduction is one more pass (only reduced maps
    are kept). Switched-off attentions are replaced as `variants` say (with `knockout_constants`)."""
    reductions = PAGE_REDUCTIONS + ((f"channel:{int(channel)}",) if channel is not None else ())
    all_on = all(all(t) for t in switch_key)
    key = ("inside", ref.key, image_id, switch_key, channel) + (() if all_on else (tuple(variants),))

    def compute():
        switches = switches_from_key(switch_key, variants, None if all_on else knockout_constants(ref, model))
        return inspect_image(model, image, switches, name, ref.coarser, reductions)

    return result_cache().get_or_compute(key, compute)


def detect_cached(ref: ModelRef, model, image_id: str, image: np.ndarray, switch_key: SwitchKey,
                  name: str = "image") -> DetectResult:
    """The detections of the one pass per (model, mode, image, switches) (`inspect_cached`)."""
    return inspect_cached(ref, model, image_id, image, switch_key, name).detections


# ------------------------------------------------------------------------------------------------
# Datasets


@st.cache_resource(show_spinner="Preparing the demo data (generated once) ...")
def _demo_root() -> str:
    from analysis.sources import default_data_root

    return str(default_data_root("val"))


def resolved_data_root(data_root: Optional[str], split: str) -> Path:
    """The dataset root to use: `data_root`, or the demo data (generated on first use) when empty.
    Raises `analysis.sources.SourceError` naming what is missing."""
    from analysis.sources import resolve_dataset

    if not data_root:
        if split not in ("val", "val2017"):
            from analysis.sources import default_data_root

            return default_data_root(split)  # raises a clear SourceError for a missing demo split
        return Path(_demo_root())
    resolve_dataset(data_root, split)
    return Path(data_root)


@st.cache_data(max_entries=8, show_spinner=False)
def dataset_records(root: str, split: str, annotation_mtime: int) -> list:
    """`analysis.sources.dataset_images` of a split (cached until the annotation file changes)."""
    from analysis.sources import dataset_images

    return dataset_images(root, split)


def annotation_mtime(root: Path, split: str) -> int:
    from analysis.sources import resolve_dataset

    return int(resolve_dataset(root, split).annotation_file.stat().st_mtime_ns)


# ------------------------------------------------------------------------------------------------
# Scale ratios over a dataset (Fig. 3), resumable on disk


def scale_ratio_folder(ref: ModelRef, root: Path, split: str) -> Path:
    """The results folder of one (checkpoint, device, coarser mode, dataset split)."""
    from analysis.sources import resolve_dataset

    ann = resolve_dataset(root, split).annotation_file
    folder = cache_dir() / "scale_ratios" / short_hash(ref.key, ann.resolve(), split)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class BusyError(RuntimeError):
    """The same on-disk pass is being computed by another session right now."""


@st.cache_resource(show_spinner=False)
def _folder_lock(path: str) -> threading.Lock:
    """One lock per results file, shared by every session of this server."""
    return threading.Lock()


@contextlib.contextmanager
def exclusive(name: str, doing: str):
    """Hold the lock `name` (a results file, a model) for a long computation, or raise `BusyError`
    ("another session is <doing> right now ...") when another session holds it."""
    lock = _folder_lock(name)
    if not lock.acquire(blocking=False):
        raise BusyError(f"another session is {doing} right now; reload the page when it is done")
    try:
        yield
    finally:
        lock.release()


def finished_images(csv: Path, image_ids: Sequence[int]) -> int:
    """How many of `image_ids` a resumable pass into `csv` has finished (its ``.done`` file)."""
    from analysis.tables import ResumableTable

    finished = ResumableTable.finished_keys(csv)
    return len(finished.intersection(str(i) for i in image_ids))


def run_scale_ratio_pass(model, ref: ModelRef, root: Path, split: str, max_images: int,
                         progress: Optional[Callable[[int, int], None]] = None):
    """`analysis.scale_ratios.collect_scale_weights` into the folder of (ref, dataset); resumes an
    earlier, interrupted pass. Returns the `ScaleRatioRun`. Raises `BusyError` when another session
    is writing the same folder."""
    from analysis.scale_ratios import collect_scale_weights

    out_csv = scale_ratio_folder(ref, root, split) / "weights.csv"
    with exclusive(str(out_csv), "computing this pass"):
        return collect_scale_weights(model, root, out_csv, split=split, max_images=max_images, batch_size=1,
                                     progress=progress, show_progress=False, coarser_branch=ref.coarser)


def scale_ratio_progress(ref: ModelRef, root: Path, split: str, image_ids: Sequence[int]) -> int:
    """How many of `image_ids` have their weights on disk already (0 when nothing was run)."""
    return finished_images(scale_ratio_folder(ref, root, split) / "weights.csv", image_ids)


def load_scale_ratios(ref: ModelRef, root: Path, split: str, image_ids: Sequence[int]):
    """(raw weights, ratios) of the finished `image_ids` (`analysis.scale_ratios.compute_ratios`)."""
    from analysis.scale_ratios import compute_ratios, read_table

    csv = scale_ratio_folder(ref, root, split) / "weights.csv"
    weights = read_table(csv)
    weights = weights[weights["image_id"].isin(set(int(i) for i in image_ids))]
    if weights.empty:
        return weights, None
    return weights, compute_ratios(weights)


# ------------------------------------------------------------------------------------------------
# Attention on/off AP table (Table 1 analogue), cached on disk


def ablation_csv_path(ref: ModelRef, root: Path, split: str, max_images: int, one_block: bool,
                      variants: Variants = DEFAULT_VARIANTS) -> Path:
    from analysis.sources import resolve_dataset

    ann = resolve_dataset(root, split).annotation_file
    folder = cache_dir() / "ablation"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{short_hash(ref.key, ann.resolve(), split, max_images, one_block, tuple(variants))}.csv"


#: The app's AP table runs each image alone, the official test path (as the CLI's default).
ABLATION_BATCH_SIZE = 1


def _ablation_notes(variants: Variants = DEFAULT_VARIANTS, constants=None) -> list[str]:
    from analysis.ablation import KNOCKOUT_NOTE, batch_size_note, variants_note

    return [KNOCKOUT_NOTE, "AP in percent (COCOeval)", batch_size_note(ABLATION_BATCH_SIZE),
            variants_note((variants[0],), (variants[1],), constants)]


def _read_ablation(path: Path, notes: list[str]) -> Optional[pd.DataFrame]:
    """The finished table on disk, or None when there is none, it is not finished, or it was written
    under other notes (an older file that does not record its batch size or knock-out variants)."""
    from analysis.ablation import read_ablation_csv

    if not path.exists() or not path.with_name(path.name + ".complete").exists():
        return None
    try:
        df = read_ablation_csv(path)
    except (KeyError, ValueError):  # an older file without the variant columns
        return None
    if df.attrs.get("notes") != notes:
        return None
    return df


def run_ablation(model, ref: ModelRef, root: Path, split: str, max_images: int, one_block: bool,
                 progress: Optional[Callable[[int, int], None]] = None,
                 variants: Variants = DEFAULT_VARIANTS) -> pd.DataFrame:
    """`analysis.ablation.ablation_table` at batch size 1 (`ABLATION_BATCH_SIZE`) under the page's
    coarser-branch mode and knock-out `variants` (scale_off, task_off; the calibrated and static ones
    read `knockout_constants`), written row by row with the shared resumable protocol: an interrupted
    table resumes where it stopped, a finished one is read from disk. The CSV's notes record the batch
    size and the variants; a file with other notes (an older version's) is computed again."""
    constants = knockout_constants(ref, model)
    notes = _ablation_notes(variants, constants)
    path = ablation_csv_path(ref, root, split, max_images, one_block, variants)
    with exclusive(str(path), "computing this table"):
        from analysis.ablation import AblationCSVError, ablation_settings, ablation_table

        df = _read_ablation(path, notes)
        if df is not None:
            return df
        settings = ablation_settings(model.config.tower.num_blocks, one_block, (variants[0],), (variants[1],))
        if constants is None and any(s.needs_constants for s in settings):
            raise ValueError("this model has no calibrated knock-out constants yet: calibrate it on a dataset "
                             "first, or choose the fixed-1 and relu variants")
        kwargs = dict(max_images=max_images, settings=settings, batch_size=ABLATION_BATCH_SIZE, progress=progress,
                      csv_path=path, notes=notes, coarser_branch=ref.coarser, constants=constants)
        try:
            df = ablation_table(model, root, split, **kwargs)
        except AblationCSVError:  # a file of an older version (other notes): computed again
            for stale in (path, path.with_name(path.name + ".done")):
                stale.unlink(missing_ok=True)
            df = ablation_table(model, root, split, **kwargs)
        path.with_name(path.name + ".complete").write_text(f"{len(df)}\n")
        return df


def cached_ablation(ref: ModelRef, root: Path, split: str, max_images: int, one_block: bool,
                    variants: Variants = DEFAULT_VARIANTS, model=None) -> Optional[pd.DataFrame]:
    """The table on disk (None when absent or written without the current notes)."""
    constants = knockout_constants(ref, model)  # the model is needed only to calibrate, not to read
    return _read_ablation(ablation_csv_path(ref, root, split, max_images, one_block, variants),
                          _ablation_notes(variants, constants))


def retrain_folders() -> list[Path]:
    """Where the retrained tables are looked for, first holding a grid wins: ``$DYHEAD_APP_RETRAIN``, the
    user's own grid in ``runs/retrain``, the committed demo-data results in ``docs/retrain``."""
    import os

    from analysis.sources import REPO_ROOT

    env = os.environ.get("DYHEAD_APP_RETRAIN")
    return [Path(env)] if env else [REPO_ROOT / "runs" / "retrain", REPO_ROOT / "docs" / "retrain"]


def retrain_results(folder: Optional[Path] = None) -> Optional[pd.DataFrame]:
    """The retrained Table 1 / Table 2 runs (`python -m analysis retrain`) of `folder` (default: the
    first of `retrain_folders` holding any): every ``retrain_<grid>.csv`` concatenated (each grid's
    notes in ``attrs["notes"]``, the folder in ``attrs["folder"]``), or None."""
    from analysis.retrain import read_retrain_csv

    for candidate in [Path(folder)] if folder is not None else retrain_folders():
        frames = [read_retrain_csv(p) for p in sorted(candidate.glob("retrain_table?.csv"))] if candidate.is_dir() else []
        frames = [f for f in frames if len(f)]
        if frames:
            df = pd.concat(frames, ignore_index=True)
            df.attrs["notes"] = [n for f in frames for n in f.attrs.get("notes", [])]
            df.attrs["folder"] = str(candidate)
            return df
    return None


def retrain_longer_runs(folder: str | Path) -> list[pd.DataFrame]:
    """Grids of the same rows trained for another number of iterations, kept in subfolders of a
    results folder (``<folder>/<name>/retrain_table*.csv``), fewest iterations first."""
    from analysis.retrain import read_retrain_csv

    frames = [read_retrain_csv(p) for p in sorted(Path(folder).glob("*/retrain_table?.csv"))]
    return sorted((f for f in frames if len(f)), key=lambda f: int(f.iterations.max()))


# ------------------------------------------------------------------------------------------------
# Cost vs depth (Table 2)


@st.cache_data(max_entries=8, show_spinner="Counting GMACs on meta tensors ...")
def efficiency_cached(blocks: tuple[int, ...], channels: int, image_size: tuple[int, int], pad: int) -> pd.DataFrame:
    """`analysis.efficiency.efficiency_table` without latency (counted on meta tensors), also kept on
    disk so that a restarted app does not count again."""
    from analysis.efficiency import efficiency_table
    from analysis.tables import read_table, write_table

    path = cache_dir() / "efficiency" / f"{short_hash(blocks, channels, image_size, pad, torch.__version__)}.csv"
    if path.exists():
        df = read_table(path)
        notes = df.attrs.get("notes", [])
        df.attrs = {"convention": notes[0] if notes else "", "input_size": notes[1] if len(notes) > 1 else "",
                    "latency_device": "not measured"}
        return df
    df = efficiency_table(blocks=blocks, channels=channels, image_size=image_size, pad=pad, latency=False)
    write_table(df, path, [df.attrs["convention"], df.attrs["input_size"]])
    return df
