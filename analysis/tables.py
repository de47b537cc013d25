"""CSV files with a few '# ...' lines of metadata above the header (what the numbers mean), written
whole (`write_table`) or row by row with resumption (`ResumableTable`), and read back (`read_table`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Hashable, Iterable, Optional, Sequence

import pandas as pd

__all__ = ["read_table", "write_table", "format_rows", "write_preamble", "ResumableTable", "TableMismatchError"]


def write_table(df: pd.DataFrame, path: str | Path, notes: Sequence[str] = ()) -> Path:
    """Write `df` as CSV with each note on a leading '# ' line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        write_notes(f, notes)
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


def write_notes(f, notes: Sequence[str]) -> None:
    """One '# ' line per note (what `read_table` returns as ``df.attrs["notes"]``)."""
    for note in notes:
        f.write(f"# {note}\n")


def write_preamble(f, notes: Sequence[str], columns: Sequence[str]) -> None:
    """The '# ' note lines and the header line."""
    write_notes(f, notes)
    f.write(",".join(columns) + "\n")


def _csv_field(value) -> str:
    if isinstance(value, float):
        if value != value:
            return ""  # NaN: an empty field, which `read_table` reads back as NaN
        return repr(value)  # every digit: a resumed file is byte-identical to an uninterrupted one
    text = str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def format_rows(rows: Iterable[Sequence]) -> str:
    """CSV lines of `rows` (floats written with every digit)."""
    return "".join(",".join(_csv_field(v) for v in row) + "\n" for row in rows)


class TableMismatchError(ValueError):
    """An existing table was written by another run (other notes or columns)."""


class ResumableTable:
    """The protocol of every long pass that writes a table: a CSV with '# ' notes (what was computed:
    model, data, settings) and a header, rows appended and flushed as soon as they are computed, and
    a ``<file>.done`` side file listing the keys (image ids, setting names) whose rows are all written.

    `open(wanted)` prepares the file: a new file gets its notes and header; an existing one must have
    the same notes and header (else `TableMismatchError`), a partially written last line is cut, and
    rows whose key is not finished (or not in `wanted`) are removed, to be computed again whole.
    `append(rows, keys)` writes rows, flushes them to disk, then records `keys` as finished. A killed
    run therefore resumes to exactly the rows of an uninterrupted one. The key of a row is its column
    `key_column` (default the first), compared as text.
    """

    def __init__(self, path: str | Path, notes: Sequence[str], columns: Sequence[str], key_column: int = 0) -> None:
        self.path = Path(path)
        self.notes = [str(n) for n in notes]
        self.columns = list(columns)
        self.key_column = key_column
        self.done: set[str] = set()
        self._csv = None
        self._done_file = None

    @staticmethod
    def finished_keys(path: str | Path) -> set[str]:
        """The keys a run into `path` recorded as finished (none when it never ran); a partially
        written last key is not counted."""
        done = Path(path).with_name(Path(path).name + ".done")
        if not done.exists():
            return set()
        text = done.read_text(encoding="utf-8")
        lines = text.split("\n")
        if not text.endswith("\n"):
            lines = lines[:-1]
        return {x for x in lines if x.strip()}

    @property
    def done_path(self) -> Path:
        return self.path.with_name(self.path.name + ".done")

    @property
    def complete_path(self) -> Path:
        return self.path.with_name(self.path.name + ".complete")

    def open(self, wanted: Optional[Iterable[Hashable]] = None) -> set[str]:
        """Create or resume the file; returns the finished keys (as text)."""
        wanted_keys = None if wanted is None else {str(k) for k in wanted}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.done_path.unlink(missing_ok=True)
            with self.path.open("w", encoding="utf-8") as f:
                write_preamble(f, self.notes, self.columns)
            self.done = set()
        else:
            self.done = self._resume(wanted_keys)
        self._csv = self.path.open("a", encoding="utf-8")
        self._done_file = self.done_path.open("a", encoding="utf-8")
        return set(self.done)

    def _resume(self, wanted: Optional[set[str]]) -> set[str]:
        done = self.finished_keys(self.path)
        if wanted is not None:
            done &= wanted
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raw = raw[: raw.rfind(b"\n") + 1]  # a partially written last line
        lines = raw.decode("utf-8").splitlines(keepends=True)
        n_notes = 0
        while n_notes < len(lines) and lines[n_notes].startswith("#"):
            n_notes += 1
        header = lines[n_notes].rstrip("\n") if n_notes < len(lines) else None
        if header != ",".join(self.columns):
            raise TableMismatchError(f"{self.path} exists but is not a table this program wrote for these columns "
                                     f"(header {header!r}); remove it or choose another output folder")
        old_notes = [line[1:].strip() for line in lines[:n_notes]]
        if old_notes != self.notes:
            first = next(((a, b) for a, b in zip(old_notes + [""] * len(self.notes), self.notes + [""] * len(old_notes))
                          if a != b), ("", ""))
            raise TableMismatchError(
                f"{self.path} holds results of another run (it says {first[0]!r} where this run says {first[1]!r}); "
                "remove it (and its .done file) or choose another output folder")
        kept = lines[: n_notes + 1]
        for line in lines[n_notes + 1:]:
            if self._key_of(line) in done:
                kept.append(line)
        self.path.write_text("".join(kept), encoding="utf-8")
        self.done_path.write_text("".join(f"{k}\n" for k in sorted(done)), encoding="utf-8")
        return done

    def _key_of(self, line: str) -> str:
        import csv

        return next(csv.reader([line]))[self.key_column]

    def append(self, rows: Sequence[Sequence], keys: Iterable[Hashable]) -> None:
        """Write `rows` (flushed to disk), then mark `keys` finished."""
        if self._csv is None:
            raise RuntimeError("ResumableTable.append before open()")
        if rows:
            self._csv.write(format_rows(rows))
            self._csv.flush()
            os.fsync(self._csv.fileno())
        keys = [str(k) for k in keys]
        self._done_file.writelines(f"{k}\n" for k in keys)
        self._done_file.flush()
        self.done.update(keys)

    def close(self, complete: bool = False) -> None:
        """Close the files; `complete` also writes ``<file>.complete`` (every key of the run finished)."""
        for f in (self._csv, self._done_file):
            if f is not None:
                f.close()
        self._csv = self._done_file = None
        if complete:
            self.complete_path.write_text(f"{len(self.done)}\n", encoding="utf-8")

    def __enter__(self) -> "ResumableTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
