"""Small input widgets shared by several pages."""

from __future__ import annotations

import streamlit as st

__all__ = ["block_slider", "dataset_pass"]


def block_slider(label: str, num_blocks: int, key: str, container=None) -> int:
    """A 1-based block number, defaulting to the last block (a slider needs at least two blocks)."""
    container = container or st
    if num_blocks <= 1:
        container.caption(f"{label}: 1 (the only block)")
        return 1
    return int(container.slider(label, 1, num_blocks, num_blocks, key=key))


def dataset_pass(records, data_label: str, split: str, key: str, progress_of, run, where: str = ""):
    """The controls of a resumable pass over a dataset: how many images, how many are finished, and a
    Run / Resume button that runs `run(n, progress)` with a progress bar. `progress_of(image_ids)`
    counts the finished images. Returns (n, image_ids, finished, what `run` returned or None); stops the
    page with the reason when another session is computing the same pass or the pass fails."""
    from analysis.sources import SourceError

    from app.compute import BusyError

    total = len(records)
    c1, c2 = st.columns([1, 2])
    n = int(c1.number_input(f"Images (first N of {total} in {data_label}, split {split})", 1, total,
                            min(20, total), key=f"{key}_n"))
    ids = [r.image_id for r in records[:n]]
    done = progress_of(ids)
    kept = f"kept in `{where}`" if where else "kept on disk"
    status = c2.empty()
    status.caption(f"{done} of {n} images computed ({kept}; a reloaded or interrupted page resumes here).")
    result = None
    label = "Run the pass" if done == 0 else ("Resume the pass" if done < n else "Up to date")
    if st.button(label, type="primary", disabled=done >= n, key=f"{key}_run"):
        bar = st.progress(done / n, text=f"{done} / {n} images")
        try:
            result = run(n, lambda f, c: bar.progress(f / max(c, 1), text=f"{f} / {c} images"))
        except BusyError as exc:
            st.info(str(exc).capitalize())
            st.stop()
        except (SourceError, ValueError, OSError) as exc:
            st.error(f"The pass stopped: {exc}")
            st.stop()
        bar.empty()
        done = progress_of(ids)
        status.caption(f"{done} of {n} images computed ({kept}).")
    return n, ids, done, result
