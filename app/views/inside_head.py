"""Inside the head (paper Fig. 4): feature maps per level before the head and after each block and
attention step, the scale weights of this image, where spatial attention samples, DyReLU coefficients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.feature_maps import (COLOR_SCALE_TEXT, COLOR_SCALES, color_scale_note, paper_stages,
                                   plot_feature_grid, reduce_stages, with_geometry)
from functools import partial

from analysis import levels
from analysis.levels import first_level_of, level_note
from app import compute
from app.controls import block_slider
from app.downloads import csv_download, figure_downloads, reduced_maps_table
from app.drawing import sampling_figure, sampling_points, show_feature_grid
from app.notices import demo_model_notice, upload_notice
from app.sidebar import require_image, require_model

st.title("Inside the head")
ctx = require_model()
LEVEL_NOTE = level_note(first_level_of(ctx.model.config.strides), len(ctx.model.config.strides))
st.caption("What the DyHead tower computes for the current image, block by block (the paper's Figure 4 and more). "
           + LEVEL_NOTE[0].upper() + LEVEL_NOTE[1:] + ".")
demo_model_notice(ctx)
image = require_image(ctx)
upload_notice(ctx)
if ctx.num_blocks == 0:
    st.error("This model has no DyHead blocks (an ATSS baseline head): there is nothing inside to show.")
    st.stop()

res = compute.inspect_cached(ctx.ref, ctx.model, image.key, image.array, compute.all_on_key(ctx.num_blocks),
                             image.name)
# Level names from the model's strides (P2..P6 for Faster R-CNN, else P3..P7).
FIRST_LEVEL = levels.first_level_of(res.strides)
level_name = partial(levels.level_name, first_level=FIRST_LEVEL)
level_label = partial(levels.level_label, first_level=FIRST_LEVEL)
# Each level's cells drawn where they lie on the image (its network-input size and strides).
stages = with_geometry(res.stages, res.resized_size, res.strides)
L = res.num_levels

# ------------------------------------------------------------------------------------------------
st.subheader("Feature maps")
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
rows = c1.multiselect("Stages (rows)", stages.stages, default=paper_stages(stages.num_blocks), key="fm_rows",
                      help="'block b, spatial+scale' = the scale-weighted mean of the deformable-conv branches "
                           "(the DyReLU input); 'block b' = the block output after task-aware attention.")
reduction = c2.selectbox("Reduction", ["mean_abs", "l2", "max", "pca", "channel"], key="fm_reduction",
                         help="How the C channels become one map: mean |x|, L2 norm, max, one channel, or the first "
                              "three principal components as RGB.")
if reduction == "channel":
    channel = c2.number_input("Channel", 0, int(stages.channels) - 1, 0, key="fm_channel",
                              help="Only reduced maps are kept after a pass, so a channel is one more pass.")
    reduction = f"channel:{int(channel)}"
    with_channel = compute.inspect_cached(ctx.ref, ctx.model, image.key, image.array,
                                          compute.all_on_key(ctx.num_blocks), image.name, channel=int(channel))
    stages = with_geometry(with_channel.stages, res.resized_size, res.strides)
_SCALE_LABELS = {"per_map": "each map its own", "per_stage": "one per row", "per_level": "shared across rows, per level",
                 "global": "shared by all maps"}
color_scale = c3.radio("Colour scale", list(COLOR_SCALES), format_func=_SCALE_LABELS.get, key="fm_scale",
                       help="; ".join(f"{_SCALE_LABELS[k]}: {COLOR_SCALE_TEXT[k]}" for k in COLOR_SCALES) + ".")
opacity = c4.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="fm_opacity")
if not rows:
    st.info("Choose at least one stage.")
else:
    reduced = reduce_stages(stages, reduction, color_scale, which=rows)
    show_feature_grid(stages, reduced, rows, opacity, first_level=FIRST_LEVEL)
    scale_text = color_scale_note(color_scale)
    if reduction == "pca":
        st.caption(f"{scale_text[0].upper() + scale_text[1:]}. PCA: mid-grey = 0, each component divided by its "
                   "largest |projection| over the maps of one range.")
    else:
        def _span(stage: str, level: int) -> str:
            lo, hi = reduced.ranges[(stage, level)]
            return f"[{lo:.3g}, {hi:.3g}]"

        if color_scale == "per_level":
            spans = "; ".join(f"{level_name(l)} {_span(rows[0], l)}" for l in range(reduced.num_levels))
        elif color_scale == "global":
            spans = _span(rows[0], 0)
        else:  # per row, or per map: one line per row
            spans = "; ".join(f"{s}: " + (_span(s, 0) if color_scale == "per_stage" else
                                         ", ".join(_span(s, l) for l in range(reduced.num_levels))) for s in rows)
        st.caption(f"{scale_text[0].upper() + scale_text[1:]}. Ranges of {reduction}: {spans}. Colormap inferno "
                   "(dark = low). Each cell of a level covers stride × stride input pixels, drawn where it lies.")

    d1, d2 = st.columns([1, 3])
    with d1:
        figure_downloads(lambda: plot_feature_grid(stages, reduction, color_scale, rows=rows, opacity=opacity),
                         "feature_maps_fig4", pdf=True, key="fm_dl")
    with d2:
        csv_download(lambda: reduced_maps_table(reduced, rows), "feature_maps", key="fm_dl",
                     notes=[f"{image.name}; reduction {reduction}; cells of each level's map (y, x); raw reduced "
                            f"values; the figure's {color_scale_note(color_scale)}", LEVEL_NOTE])

# ------------------------------------------------------------------------------------------------
st.subheader("Scale weights of this image")
st.caption("Scale-aware attention gives each branch of an output level one weight per image: "
           "relu6(ReLU(f(pool(branch))) + 3) / 6, in [0.5, 1]. Sources: the finer neighbour l-1, the level "
           "itself, the coarser neighbour l+1.")
w = res.weights.copy()
w["level_name"] = w.level.map(level_name)
w["role"] = np.select([w.source_level < w.level, w.source_level == w.level], ["finer (l-1)", "same (l)"],
                      "coarser (l+1)")
block_w = block_slider("Block", res.num_blocks, key="sw_block")
sub = w[w.block == block_w - 1]
fig = go.Figure()
for role, color in (("finer (l-1)", "#1f77b4"), ("same (l)", "#7f7f7f"), ("coarser (l+1)", "#d62728")):
    r = sub[sub.role == role]
    fig.add_trace(go.Bar(x=r.level_name, y=r.weight, name=role, marker_color=color,
                         text=[f"{v:.3f}" for v in r.weight], textposition="outside"))
fig.update_layout(barmode="group", yaxis=dict(range=[0, 1.1], title="scale weight"),
                  xaxis=dict(title="output level", categoryorder="array",
                             categoryarray=[level_name(l) for l in range(L)]),
                  title=f"Block {block_w}: weight of each source, per output level", height=340,
                  margin=dict(t=40, b=10))
st.plotly_chart(fig, key="sw_chart")
pivot = w.pivot_table(index=["block", "level_name"], columns="role", values="weight").reset_index()
pivot["block"] += 1
with st.expander("All blocks (table)"):
    st.dataframe(pivot, hide_index=True)
csv_download(w.assign(block=w.block + 1), "scale_weights_image", key="sw_dl",
             notes=[f"{image.name}; block 1-based; {LEVEL_NOTE}"])

# ------------------------------------------------------------------------------------------------
st.subheader("Where spatial attention looks")
st.caption("Each output position samples its level at 9 points: the regular 3×3 grid (white) moved by the "
           "learned offsets (arrows). Marker size and opacity show the modulation mask Δm_k. This is how the "
           "level's own branch uses them; the finer branch applies the same offsets with a stride-2 conv on the "
           "finer map (grid and offsets in its pixels, half as far), and the coarser branch reads the offset "
           "buffer scrambled (see How it works).")
o1, o2, o3, o4 = st.columns(4)
block_o = o1.number_input("Block", 1, res.num_blocks, res.num_blocks, key="off_block")
level_o = o2.selectbox("Level", list(range(L)), format_func=lambda l: level_label(l, L), key="off_level")
rh, rw = res.resized_size
stride = res.strides[level_o]
hl, wl = -(-rh // stride), -(-rw // stride)  # cells that cover the image
oh, ow = res.original_size
scale_yx = (oh / rh, ow / rw)
# Start at the centre of the best detection (else the image centre), in this level's cells.
det = res.detections
if len(det.scores):
    x1, y1, x2, y2 = det.boxes[int(np.argmax(det.scores))]
    y0 = min(int((y1 + y2) / 2 / scale_yx[0] // stride), hl - 1)
    x0 = min(int((x1 + x2) / 2 / scale_yx[1] // stride), wl - 1)
else:
    y0, x0 = hl // 2, wl // 2
# A click on the figure (previous run) picks a cell of the level it was drawn for.
ky, kx = f"off_y_{level_o}", f"off_x_{level_o}"
clicked = st.session_state.get("off_fig")
points = clicked["selection"]["points"] if clicked and clicked.get("selection") else []
cell = next((p.get("customdata") for p in points if p.get("customdata") is not None), None)
if cell is not None:
    if isinstance(cell, dict):  # an array's row comes back as {"0": row, "1": column}
        cell = [cell.get("0", cell.get(0)), cell.get("1", cell.get(1))]
    token = (level_o, int(cell[0]), int(cell[1]))
    if token != st.session_state.get("off_last_click") and st.session_state.get("off_drawn_level") == level_o:
        st.session_state["off_last_click"] = token
        st.session_state[ky], st.session_state[kx] = min(token[1], hl - 1), min(token[2], wl - 1)
y = (o3.slider("Row (cells)", 0, hl - 1, key=ky) if ky in st.session_state else
     o3.slider("Row (cells)", 0, hl - 1, y0, key=ky)) if hl > 1 else 0
x = (o4.slider("Column (cells)", 0, wl - 1, key=kx) if kx in st.session_state else
     o4.slider("Column (cells)", 0, wl - 1, x0, key=kx)) if wl > 1 else 0
pts = sampling_points(res.offsets[block_o - 1][level_o], res.masks[block_o - 1][level_o], y, x, stride, scale_yx)
centre = ((y + 0.5) * stride * scale_yx[0], (x + 0.5) * stride * scale_yx[1])
zoom = st.toggle("Zoom to the sampling points", True, key="off_zoom")
st.plotly_chart(sampling_figure(image.array, pts, centre,
                                title=f"Block {block_o}, {level_name(level_o)} (stride {stride}), cell ({y}, {x}); "
                                      "click a cell to look there",
                                height=520,
                                zoom_margin=max(6.0 * stride * max(scale_yx), 0.12 * max(oh, ow)) if zoom else None,
                                cells=(hl, wl, stride, scale_yx)),
                key="off_fig", on_select="rerun", selection_mode="points")
st.session_state["off_drawn_level"] = level_o
with st.expander("Sampling points (table)"):
    st.dataframe(pts.round(3), hide_index=True)
csv_download(pts, "spatial_sampling_points", key="off_dl",
             notes=[f"{image.name}; block {block_o}; {level_name(level_o)}; cell ({y}, {x}); dy/dx in level cells; "
                    "grid_* and sample_* in original-image pixels"])

# ------------------------------------------------------------------------------------------------
st.subheader("Task-aware attention (DyReLU) coefficients")
st.caption("Per channel c: output = max(a1·x + b1, a2·x + b2). A plain ReLU is a1 = 1, b1 = a2 = b2 = 0. "
           "The official code pools each level separately, so every level has its own coefficients.")
t1, t2 = st.columns(2)
block_t = t1.number_input("Block", 1, res.num_blocks, res.num_blocks, key="dy_block")
level_t = t2.selectbox("Level", list(range(L)), format_func=lambda l: level_label(l, L), key="dy_level")
coeffs = res.dyrelu[block_t - 1][level_t]
dy = pd.DataFrame({"channel": np.arange(len(coeffs["a1"])), **{k: v for k, v in coeffs.items()}})
fig = go.Figure()
for k, color in (("a1", "#1f77b4"), ("b1", "#aec7e8"), ("a2", "#d62728"), ("b2", "#ff9896")):
    fig.add_trace(go.Scatter(x=dy.channel, y=dy[k], mode="lines+markers", name=k, marker=dict(size=4),
                             line=dict(color=color)))
fig.update_layout(height=300, xaxis_title="channel", yaxis_title="coefficient", margin=dict(t=30, b=10),
                  title=f"Block {block_t}, {level_name(level_t)}")
st.plotly_chart(fig, key="dy_chart")
csv_download(dy, "dyrelu_coefficients", key="dy_dl",
             notes=[f"{image.name}; block {block_t}; {level_name(level_t)}"])

# ------------------------------------------------------------------------------------------------
st.subheader("Probe")
st.caption("Everything the head computed at one anchor point, per block: the cell chosen above (any position), or "
           "the anchor point that scored a detection (its level and cell), with which attention knock-outs change "
           "or remove that detection.")
from app.probe import ProbeCell, draw_probe, selected_detection  # noqa: E402

target = st.radio("Probe", ["the cell chosen above", "a detection"], horizontal=True, key="ih_probe_target")
if target == "a detection":
    index = selected_detection(res, np.flatnonzero(det.scores >= 0.3), "ih_probe_none", "ih_probe_det",
                               ctx.class_names)
    if index is not None:
        draw_probe(ctx, image, res, index, None, key="ih_probe")
else:
    draw_probe(ctx, image, res, None, ProbeCell(int(level_o), int(y), int(x)), key="ih_probe")
