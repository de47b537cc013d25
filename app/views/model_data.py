"""Model & data: what is loaded (checkpoint kind, configuration, notes), its classes (as pictures for the
demo shapes, with the demo sample images), the chosen dataset, and how to load an official release."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from analysis.sources import SourceError
from app.notices import OFFICIAL_SECTION, demo_model_line, readme_section
from app.sidebar import KIND_NAMES, context, sample_images

st.title("Model & data")
ctx = context()
st.markdown("Choose the checkpoint, dataset, device and coarser-branch mode in the sidebar. The bundled demo model "
            "and the generated demo data are used when nothing else is given.")

st.subheader("Model")
if not ctx.ready:
    st.error(f"No model loaded: {ctx.model_error}")
else:
    cfg = ctx.model.config
    info = ctx.info
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Checkpoint kind", KIND_NAMES.get(info.kind, info.kind))
    c2.metric("Device", str(ctx.model.device), help=f"requested: {ctx.device_request}")
    c3.metric("DyHead blocks", cfg.tower.num_blocks)
    c4.metric("Parameters", f"{sum(p.numel() for p in ctx.model.parameters()) / 1e6:.2f} M")
    st.markdown(f"**File:** `{ctx.checkpoint}` · **classes:** {', '.join(cfg.class_names[:12])}"
                + (" ..." if len(cfg.class_names) > 12 else "")
                + f" · **coarser branch:** {cfg.tower.coarser_branch.value} · **test size:** {cfg.min_size}/{cfg.max_size}")
    for note in info.notes:
        st.caption(note)
    with st.expander("Configuration"):
        st.code(json.dumps(cfg.to_dict(), indent=2), language="json")
    if info.meta:
        with st.expander("Checkpoint metadata"):
            st.code(json.dumps(info.meta, indent=2, default=str), language="json")



@st.cache_data(show_spinner=False)
def _class_picture(name: str):
    import numpy as np

    from dyhead.data.demo import draw_example

    return np.asarray(draw_example(name))


if ctx.ready:
    from dyhead.data.demo import CATEGORY_NAMES

    st.subheader("Classes")
    names = list(ctx.class_names)
    if ctx.demo_model:
        st.info(demo_model_line(names), icon=":material/info:")
    if set(names) <= set(CATEGORY_NAMES):
        st.caption("One example of each class, drawn by the demo data generator (`dyhead/data/demo.py`) that "
                   "made the training images.")
        for col, name in zip(st.columns(len(names)), names):
            col.image(_class_picture(name), caption=name, width=72)
        samples = sample_images()
        st.caption(f"Sample images (`{samples[0].parent.name}/`, made by the same generator, never in the "
                   "training data): pick one in the sidebar under **Image**.")
        for col, path in zip(st.columns(len(samples)), samples):
            col.image(str(path), caption=path.name)
    else:
        st.markdown(f"{len(names)} classes: " + ", ".join(names))

st.subheader("Dataset")
try:
    root = ctx.data_root()
    records = ctx.dataset_records()
except SourceError as exc:
    st.error(f"Dataset: {exc}")
else:
    st.markdown(f"**Root:** `{root}` · **split:** {ctx.split} · **images:** {len(records)}")
    st.dataframe(pd.DataFrame([{"image_id": r.image_id, "file": r.file_name} for r in records[:200]]),
                 hide_index=True, height=240, key="md_images")

st.subheader("Official releases")
st.markdown(readme_section(OFFICIAL_SECTION) or "See README.md, section *" + OFFICIAL_SECTION + "*.")
