"""CSV files with a few '# ...' lines of metadata above the header (what the numbers mean)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

__all__ = ["read_table", "write_table"]


def write_table(df: pd.DataFrame, path: str | Path, notes: Sequence[str] = ()) -> Path:
    """Write `df` as CSV with each note on a leading '# ' line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        for note in notes:
            f.write(f"# {note}\n")
        df.to_csv(f, index=False, lineterminator="\n")
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV written here: leading '# ...' lines go to `df.attrs["notes"]`."""
    path = Path(path)
    notes = []
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            notes.append(line[1:].strip())
    df = pd.read_csv(path, skiprows=len(notes), keep_default_na=False, na_values=[""],
                     dtype={"file_name": str})
    df.attrs["notes"] = notes
    return df
