"""Download buttons for figures (PNG, and PDF for the paper's figures) and tables (CSV).

The file contents are produced only when the button is clicked (Streamlit's deferred `data`
callables), so drawing a page never pays for rendering a figure it may not be asked for.
"""

from __future__ import annotations

import io
from typing import Callable, Sequence, Union

import pandas as pd
import streamlit as st

__all__ = ["figure_bytes", "csv_bytes", "figure_downloads", "csv_download", "reduced_maps_table"]


def figure_bytes(fig, fmt: str = "png", dpi: int = 150) -> bytes:
    """A matplotlib figure as PNG or PDF bytes; the figure is closed afterwards."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def csv_bytes(df: pd.DataFrame, notes: Sequence[str] = ()) -> bytes:
    """CSV with each note on a leading '# ' line (the layout `analysis.tables` reads back)."""
    head = "".join(f"# {n}\n" for n in notes)
    return (head + df.to_csv(index=False, lineterminator="\n")).encode("utf-8")


def figure_downloads(make_figure: Callable[[], object], stem: str, pdf: bool = False, key: str = "") -> None:
    """PNG (and PDF) download buttons for the matplotlib figure `make_figure()` returns."""
    cols = st.columns(2 if pdf else 1, gap="small", width=360 if pdf else 180)
    cols[0].download_button("PNG", data=lambda: figure_bytes(make_figure(), "png"), file_name=f"{stem}.png",
                            mime="image/png", key=f"{key or stem}_png", icon=":material/download:",
                            on_click="ignore")
    if pdf:
        cols[1].download_button("PDF", data=lambda: figure_bytes(make_figure(), "pdf"), file_name=f"{stem}.pdf",
                                mime="application/pdf", key=f"{key or stem}_pdf", icon=":material/download:",
                                on_click="ignore")


def csv_download(table: Union[pd.DataFrame, Callable[[], pd.DataFrame]], stem: str, key: str = "",
                 notes: Sequence[str] = (), label: str = "CSV") -> None:
    """A CSV download button for a table (or a function making it when clicked)."""
    def make() -> bytes:
        df = table() if callable(table) else table
        return csv_bytes(df, notes)

    st.download_button(label, data=make, file_name=f"{stem}.csv", mime="text/csv", key=f"{key or stem}_csv",
                       icon=":material/table:", on_click="ignore")


def reduced_maps_table(reduced, rows: Sequence[str]) -> pd.DataFrame:
    """Long table of reduced feature maps (`analysis.feature_maps.ReducedMaps`): one row per
    (stage, level, y, x) with the value (or pc1..pc3 for PCA), in level cells."""
    import numpy as np

    from analysis.levels import level_name

    frames = []
    for stage in rows:
        for level, m in enumerate(reduced.maps[stage]):
            h, w = m.shape[:2]
            yy, xx = np.mgrid[0:h, 0:w]
            df = pd.DataFrame({"stage": stage, "level": level_name(level), "y": yy.ravel(), "x": xx.ravel()})
            if m.ndim == 3:
                for k in range(3):
                    df[f"pc{k + 1}"] = m[..., k].ravel()
            else:
                df["value"] = m.ravel()
            frames.append(df)
    return pd.concat(frames, ignore_index=True)
