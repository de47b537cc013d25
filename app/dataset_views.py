"""What the Internals and Compare pages compute, and their caches (beside `app.compute`, which they use):
the internals pass over a dataset in a results folder per (model, mode, dataset) that a reloaded or
interrupted page resumes, and the second model of a comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd

from . import compute
from .paths import cache_dir, refusal, short_hash

__all__ = ["internals_csv", "internals_progress", "run_internals_pass", "load_internals", "model_b"]


def internals_csv(ref: compute.ModelRef, root: Path, split: str) -> Path:
    from analysis.sources import resolve_dataset

    ann = resolve_dataset(root, split).annotation_file
    folder = cache_dir() / "internals" / short_hash(ref.key, ann.resolve(), split)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "internals.csv"


def internals_progress(ref, root: Path, split: str, image_ids: Sequence[int]) -> int:
    """How many of `image_ids` are on disk already."""
    return compute.finished_images(internals_csv(ref, root, split), image_ids)


def run_internals_pass(model, ref, root: Path, split: str, max_images: int,
                       progress: Optional[Callable[[int, int], None]] = None):
    """`analysis.internals.collect_internals` into the folder of (ref, dataset), resuming; raises
    `compute.BusyError` when another session writes the same file."""
    from analysis.internals import collect_internals

    csv = internals_csv(ref, root, split)
    with compute.exclusive(str(csv), "computing this pass"):
        return collect_internals(model, root, csv, split=split, max_images=max_images, progress=progress,
                                 show_progress=False, coarser_branch=ref.coarser)


def load_internals(ref, root: Path, split: str, image_ids: Sequence[int]) -> pd.DataFrame:
    from analysis.tables import read_table

    df = read_table(internals_csv(ref, root, split))
    return df[df.image_id.isin(set(int(i) for i in image_ids))]


def model_b(path_text: str, device: str, coarser: Optional[str]):
    """(ModelRef, model) of the comparison's second checkpoint; raises ValueError with the reason
    (outside DYHEAD_APP_ALLOWED_DIRS, missing, not loadable)."""
    from dyhead.checkpoint import CheckpointError

    path = Path(path_text.strip()).expanduser()
    why = refusal(path, "checkpoint B")
    if why:
        raise ValueError(why)
    if not path.is_file():
        raise ValueError(f"checkpoint B {path} not found")
    ref = compute.ModelRef.of(path, device, coarser)
    try:
        model, _ = compute.load_model_cached(ref)
    except (CheckpointError, OSError, RuntimeError) as exc:
        raise ValueError(f"checkpoint B could not be loaded: {exc}") from None
    return ref, model
