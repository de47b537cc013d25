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
