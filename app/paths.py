"""Where the app finds its defaults and keeps its on-disk results.

Environment variables (all optional):

* ``DYHEAD_APP_CHECKPOINT`` - the checkpoint opened by default (else the bundled demo model,
  `analysis.sources.DEFAULT_CHECKPOINT`);
* ``DYHEAD_APP_DATA`` - the COCO-format dataset root opened by default (else the demo data, generated
  on first use);
* ``DYHEAD_APP_CACHE`` - the folder for resumable results such as the scale-ratio pass
  (else ``.cache/app`` in the repository, which git ignores).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from analysis.sources import DEFAULT_CHECKPOINT, REPO_ROOT

__all__ = ["default_checkpoint", "default_data_root", "cache_dir", "file_key", "short_hash", "SAMPLE_DIRS"]

#: Bundled sample images are looked for here, in this order; if none holds images, a few are
#: generated with `dyhead.data.demo.generate_samples` into the cache folder.
SAMPLE_DIRS = (REPO_ROOT / "checkpoints" / "samples", REPO_ROOT / "docs" / "samples", REPO_ROOT / "data" / "samples")


def default_checkpoint() -> Path:
    env = os.environ.get("DYHEAD_APP_CHECKPOINT", "").strip()
    return Path(env) if env else DEFAULT_CHECKPOINT


def default_data_root() -> str:
    """The dataset root shown in the sidebar; "" means the demo data."""
    return os.environ.get("DYHEAD_APP_DATA", "").strip()


def cache_dir() -> Path:
    env = os.environ.get("DYHEAD_APP_CACHE", "").strip()
    path = Path(env) if env else REPO_ROOT / ".cache" / "app"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_key(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime in ns): changes when the file is replaced."""
    st = path.stat()
    return (str(path.resolve()), int(st.st_size), int(st.st_mtime_ns))


def short_hash(*parts: object, length: int = 16) -> str:
    text = "|".join(str(p) for p in parts)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def optional_path(text: Optional[str]) -> Optional[Path]:
    text = (text or "").strip()
    return Path(text).expanduser() if text else None


def allowed_dirs() -> list[Path]:
    """The folders the sidebar may read checkpoints and datasets from: ``DYHEAD_APP_ALLOWED_DIRS``
    (os.pathsep-separated); empty = no restriction."""
    text = os.environ.get("DYHEAD_APP_ALLOWED_DIRS", "").strip()
    return [Path(p).expanduser().resolve() for p in text.split(os.pathsep) if p.strip()]


def refusal(path: Path, what: str) -> str:
    """"" when `path` may be used, else the message saying why not (outside every allowed folder)."""
    folders = allowed_dirs()
    if not folders:
        return ""
    resolved = Path(path).expanduser().resolve()
    if any(resolved == f or f in resolved.parents for f in folders):
        return ""
    return (f"{what} {path} is outside the folders this server allows (DYHEAD_APP_ALLOWED_DIRS: "
            + ", ".join(str(f) for f in folders) + ")")
