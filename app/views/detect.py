"""Detect: boxes, class names and scores for the current image, with a score threshold."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import compute
from app.downloads import csv_download, figure_downloads
from app.drawing import detections_figure
from app.notices import demo_model_notice, upload_notice
from app.sidebar import require_image, require_model

st.title("Detect")
ctx = require_model()
demo_model_notice(ctx)
image = require_image(ctx)
upload_notice(ctx)

threshold = st.slider("Score threshold", 0.0, 1.0, 0.3, 0.01, key="detect_threshold",
                      help="Boxes scoring below are hidden. The score is the class probability times the "
                           "centerness probability. The model's own 0.05 threshold (as the official ATSS) applies "
                           "to the class probability alone, so kept boxes can score far below 0.05 (down to about "
                           "0.003 on the demo samples).")
switch_key = compute.all_on_key(ctx.num_blocks)
result = compute.detect_cached(ctx.ref, ctx.model, image.key, image.array, switch_key, image.name)
keep = result.scores >= threshold
names = ctx.class_names

c1, c2, c3 = st.columns(3)
c1.metric("Detections shown", int(keep.sum()), help=f"{len(result.scores)} kept by the model: class probability "
          "> its threshold, then NMS and the 100 best; scores are class × centerness probability")
c2.metric("Inference time", f"{1000 * result.seconds:.0f} ms", help="preprocessing, network and post-processing "
          "of this image, measured when it was first computed")
c3.metric("Device", result.device)

fig = detections_figure(image.array, result.boxes[keep], result.scores[keep], result.labels[keep], names,
                        title=f"{image.name}: {int(keep.sum())} boxes with score ≥ {threshold:.2f}",
                        indices=np.flatnonzero(keep))
st.plotly_chart(fig, key="detect_figure", on_select="rerun", selection_mode="points")


def _matplotlib_figure():
    import matplotlib.pyplot as plt

    from analysis.detection_diff import draw_detections

    h, w = image.array.shape[:2]
    fig, ax = plt.subplots(figsize=(8, 8 * h / max(w, 1)))
    draw_detections(ax, image.array, result.as_detections(threshold), names)
    ax.set_title(f"{image.name}: score >= {threshold:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


table = result.table(names, threshold)
st.dataframe(table, hide_index=True, key="detect_table")
d1, d2 = st.columns([1, 3])
with d1:
    figure_downloads(_matplotlib_figure, "detections", key="detect_dl")
with d2:
    csv_download(table, "detections", key="detect_dl",
                 notes=[f"{image.name}; boxes xyxy in original-image pixels; score >= {threshold:g}"])
if image.note:
    st.caption(f"The image was {image.note}.")

st.subheader("Detection probe")
st.caption("What the head computed at the anchor point that scored a detection: its level's scale weights, where "
           "each branch samples, the DyReLU coefficients and the feature maps around the box, per block; and which "
           "attention knock-outs change or remove it (one extra pass per setting, cached).")
if ctx.num_blocks == 0:
    st.info("This model has no DyHead blocks: there is nothing inside to probe.")
else:
    from app.probe import draw_probe, selected_detection

    inside = compute.inspect_cached(ctx.ref, ctx.model, image.key, image.array, switch_key, image.name)
    index = selected_detection(inside, np.flatnonzero(keep), "detect_figure", "probe_det", names)
    if index is not None:
        draw_probe(ctx, image, inside, index, None, key="probe")
