"""Internals over a dataset: per block and level, scale weights per source, offset magnitudes, mask means
and DyReLU coefficients, by the size and class of the ground-truth objects ATSS assigns to each level."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from analysis.internals import INTERNALS_NOTE, internals_summary, plot_internals
from analysis.levels import first_level_of, level_note
from app import dataset_views
from app.controls import block_slider, dataset_pass
from app.downloads import csv_download, figure_downloads
from app.sidebar import dataset_or_stop, require_model

st.title("Internals over a dataset")
ctx = require_model()
LEVEL_NOTE = level_note(first_level_of(ctx.model.config.strides), len(ctx.model.config.strides))
st.caption("What the head's attentions do on average over a dataset, per block and level: the scale weight of each "
           "source, how far spatial attention moves its sampling points (mean |offset| in level cells), its mean "
           "mask, and the DyReLU coefficients; also at the anchors ATSS assigns to each ground-truth object, by COCO "
           "size (small < 32², medium < 96², large) and class. " + LEVEL_NOTE[0].upper() + LEVEL_NOTE[1:] + ".")
if ctx.num_blocks == 0:
    st.error("This model has no DyHead blocks: there is nothing inside to aggregate.")
    st.stop()
root, records = dataset_or_stop(ctx)
n, ids, done, _ = dataset_pass(
    records, ctx.data_label, ctx.split, "in", lambda ids: dataset_views.internals_progress(ctx.ref, root, ctx.split, ids),
    lambda n, progress: dataset_views.run_internals_pass(ctx.model, ctx.ref, root, ctx.split, n, progress=progress))
if done == 0:
    st.info("Press **Run the pass** to compute the first N images (about 0.15 s per image for the demo model on a CPU).")
    st.stop()

raw = dataset_views.load_internals(ctx.ref, root, ctx.split, ids)
summary = internals_summary(raw)
if done < n:
    st.warning(f"Partial result: {done} of {n} images. Press **Resume the pass** to finish.")
block = block_slider("Block", ctx.num_blocks, key="in_block")
allb = summary[summary.breakdown == "all"]
one = allb[allb.block == block]
fig = go.Figure()
for col, color in (("w_finer", "#1f77b4"), ("w_same", "#7f7f7f"), ("w_coarser", "#d62728")):
    fig.add_trace(go.Bar(x=one.level_name, y=one[col], name=col[2:], marker_color=color))
fig.update_layout(barmode="group", height=320, yaxis=dict(range=[0, 1.05], title="mean scale weight"),
                  title=f"Block {block}: mean scale weight of each source ({int(one.n.max())} images)",
                  margin=dict(t=40, b=10))
st.plotly_chart(fig, key="in_weights")
m1, m2 = st.columns(2)
for col, title, container in (("offset_mean_abs", "mean |offset| (level cells)", m1), ("mask_mean", "mean mask", m2)):
    f = go.Figure()
    for level, d in allb.groupby("level"):
        f.add_trace(go.Scatter(x=d.block, y=d[col], mode="lines+markers", name=d.level_name.iloc[0]))
    f.update_layout(height=300, title=title + " per block", xaxis_title="block", margin=dict(t=40, b=10))
    container.plotly_chart(f, key=f"in_{col}")
st.markdown("**By assigned object size and class** (block chosen above)")
by = summary[(summary.breakdown != "all") & (summary.block == block)]
st.dataframe(by.round(4), hide_index=True, key="in_by")
st.caption(INTERNALS_NOTE[0].upper() + INTERNALS_NOTE[1:] + ".")
d1, d2 = st.columns([1, 3])
with d1:
    figure_downloads(lambda: plot_internals(summary, block), "internals", key="in_dl")
with d2:
    csv_download(summary, "internals_summary", key="in_sum_dl", notes=[INTERNALS_NOTE, LEVEL_NOTE], label="Summary CSV")
    csv_download(raw, "internals", key="in_raw_dl", notes=[INTERNALS_NOTE, LEVEL_NOTE], label="Per-image CSV")
