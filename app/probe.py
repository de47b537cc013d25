"""The detection probe drawn on Detect and Inside the head: for the anchor point that scored a detection
(or any cell), per block, the level's scale weights, where each branch samples, the DyReLU coefficients,
the feature maps cropped around the box, and which global knock-outs change or remove the detection.

The numbers come from the one cached pass per (model, mode, image, switches) (`compute.inspect_cached`)
and `analysis.probe`; the knock-outs are the global on/off settings' own cached passes, shared with the
Attention on/off page.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.levels import level_name
from analysis.probe import ProbeCell, crop_maps, detection_cells, knockout_effect, probe_blocks, probe_points

from . import compute

__all__ = ["detection_cell", "knockouts", "draw_probe", "BRANCH_COLORS", "NO_DETECTION"]

BRANCH_COLORS = {"finer": "#1f77b4", "same": "#ff2d95", "coarser": "#ff7f0e"}
NO_DETECTION = "none"


def level_sizes(res) -> list[tuple[int, int]]:
    """(H_l, W_l) of each level's padded map (the offsets' size)."""
    return [tuple(int(v) for v in o.shape[-2:]) for o in res.offsets[0]] if res.offsets else []


def detection_cell(res, index: int) -> ProbeCell:
    """The level and anchor cell that scored detection `index` of `res.detections`."""
    det = res.detections
    level, y, x = detection_cells(det.levels[[index]], det.locations[[index]], level_sizes(res))[0]
    return ProbeCell(int(level), int(y), int(x))


def knockouts(ctx, image, res, index: int) -> pd.DataFrame:
    """What each global knock-out (`analysis.ablation.global_settings`, all on excluded) does to
    detection `index`: one cached pass per setting."""
    from analysis.ablation import global_settings

    det = res.detections
    rows = []
    for s in global_settings()[1:]:
        key = ((bool(s.scale), bool(s.spatial), bool(s.task)),) * ctx.num_blocks
        try:
            other = compute.inspect_cached(ctx.ref, ctx.model, image.key, image.array, key, image.name).detections
        except ValueError as exc:  # a setting this model can't run (e.g. missing knock-out constants)
            rows.append({"setting": compute.describe_switches(key), "status": f"not computed: {exc}",
                         "other_label": -1, "other_class": ""})
            continue
        eff = knockout_effect(det.boxes[index], int(det.labels[index]), float(det.scores[index]), other.boxes,
                              other.scores, other.labels)
        rows.append({"setting": compute.describe_switches(key), **eff,
                     "other_class": ctx.class_names[eff["other_label"]] if eff["other_label"] >= 0 else ""})
    return pd.DataFrame(rows).drop(columns="other_label")


def _probe_figure(image: np.ndarray, points: pd.DataFrame, box, centre, title: str) -> go.Figure:
    from .drawing import _image_figure

    fig = _image_figure(image, 520)
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        fig.add_shape(type="rect", x0=x1, y0=y1, x1=x2, y1=y2, line=dict(color="yellow", width=2, dash="dash"))
    for branch, color in BRANCH_COLORS.items():
        p = points[points.branch == branch]
        if p.empty:
            continue
        for r in p.itertuples():
            fig.add_annotation(x=r.sample_x, y=r.sample_y, ax=r.grid_x, ay=r.grid_y, xref="x", yref="y", axref="x",
                               ayref="y", showarrow=True, arrowhead=2, arrowwidth=1.2, arrowcolor=color, text="")
        fig.add_trace(go.Scatter(
            x=p.sample_x, y=p.sample_y, mode="markers", name=f"{branch} ({p.source_name.iloc[0]})",
            marker=dict(size=6 + 16 * p["mask"].clip(0, 1), color=color, line=dict(color="white", width=1),
                        opacity=(0.3 + 0.7 * p["mask"].clip(0, 1)).tolist()),
            hovertext=[f"{branch} tap {r.tap}: offset ({r.dy:+.2f}, {r.dx:+.2f}), mask {r.mask:.2f}" for r in p.itertuples()],
            hoverinfo="text"))
    fig.add_trace(go.Scatter(x=[centre[1]], y=[centre[0]], mode="markers", name="anchor point",
                             marker=dict(symbol="x", size=12, color="yellow")))
    ys = np.concatenate([points.sample_y, points.grid_y, [centre[0]]] + ([[box[1], box[3]]] if box is not None else []))
    xs = np.concatenate([points.sample_x, points.grid_x, [centre[1]]] + ([[box[0], box[2]]] if box is not None else []))
    half = max(float(ys.max() - ys.min()), float(xs.max() - xs.min())) / 2 + 16
    cy, cx = (ys.max() + ys.min()) / 2, (xs.max() + xs.min()) / 2
    fig.update_xaxes(range=[cx - half, cx + half])
    fig.update_yaxes(range=[cy + half, cy - half])
    fig.update_layout(showlegend=True, legend=dict(orientation="h", y=-0.02), title=dict(text=title, font=dict(size=13)))
    return fig


def _matplotlib_probe(image: np.ndarray, points: pd.DataFrame, box, centre, crops: dict, title: str):
    import matplotlib.pyplot as plt

    from analysis.feature_maps import colorize

    stages = list(crops)
    fig, axes = plt.subplots(1, 1 + len(stages), figsize=(3.2 * (1 + len(stages)), 3.4),
                             gridspec_kw=dict(width_ratios=[2.2] + [1] * len(stages)))
    ax = axes[0]
    ax.imshow(image)
    for branch, color in BRANCH_COLORS.items():
        p = points[points.branch == branch]
        ax.scatter(p.sample_x, p.sample_y, s=10 + 40 * p["mask"].clip(0, 1), c=color, label=branch, edgecolors="white",
                   linewidths=0.5)
        for r in p.itertuples():
            ax.plot([r.grid_x, r.sample_x], [r.grid_y, r.sample_y], color=color, lw=0.6)
    if box is not None:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec="yellow", ls="--"))
    ax.plot([centre[1]], [centre[0]], "yx")
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    for a, stage in zip(axes[1:], stages):
        m = crops[stage]
        lo, hi = float(m.min()), float(m.max())
        a.imshow(colorize((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)), interpolation="nearest")
        a.set_title(f"{stage}\n[{lo:.3g}, {hi:.3g}]", fontsize=6)
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    return fig


def draw_probe(ctx, image, res, index: Optional[int], cell: Optional[ProbeCell], key: str) -> None:
    """The probe of detection `index` of `res.detections` (its own level and cell), or of `cell` when
    `index` is None."""
    from .downloads import csv_download, figure_downloads

    det = res.detections
    box = None
    if index is not None:
        cell = detection_cell(res, index)
        box = det.boxes[index]
        name = ctx.class_names[int(det.labels[index])]
        what = f"detection {index + 1} ({name} {float(det.scores[index]):.3f})"
    else:
        what = "the chosen cell"
    rh, rw = res.resized_size
    oh, ow = res.original_size
    scale_yx = (oh / rh, ow / rw)
    stride = res.strides[cell.level]
    centre = ((cell.y + 0.5) * stride * scale_yx[0], (cell.x + 0.5) * stride * scale_yx[1])
    st.markdown(f"**Probe of {what}**: {'scored at' if index is not None else 'at'} **{level_name(cell.level)}** "
                f"(stride {stride}), cell "
                f"({cell.y}, {cell.x}), anchor centre at pixel ({centre[1]:.0f}, {centre[0]:.0f}) (x, y).")
    blocks = probe_blocks(res.weights, res.offsets, res.masks, res.dyrelu, cell)
    st.dataframe(blocks.round(4), hide_index=True, key=f"{key}_blocks")
    st.caption("Per block at this level: the scale weight of each source (empty where the level has no such "
               "neighbour), mean |offset| (level cells) and mean mask of the 9 taps at this cell, and the channel "
               "means of the level's DyReLU coefficients (one set per image and level).")
    mode = ctx.coarser or ctx.model.config.tower.coarser_branch.value
    points = probe_points(res.offsets, res.masks, cell, res.strides, scale_yx, mode)
    b = int(st.slider("Block", 1, res.num_blocks, res.num_blocks, key=f"{key}_block")) if res.num_blocks > 1 else 1
    pts = points[points.block == b]
    title = f"Block {b}: where each branch samples for {level_name(cell.level)} cell ({cell.y}, {cell.x})"
    st.plotly_chart(_probe_figure(image.array, pts, box, centre, title), key=f"{key}_fig")
    st.caption("Arrows from the regular 3×3 grid to the sampled points; marker size and opacity = mask. finer: the "
               "stride-2 conv on level l-1; same: level l; coarser: level l+1 — with the official and crop readings "
               f"the nearest level l+1 cell and the offsets its conv reads (coarser-branch mode: {mode}).")
    crops, window = crop_maps(res.stages, cell.level, box, cell, res.resized_size, res.original_size, res.strides)
    st.markdown(f"Feature maps (mean |x|) of {level_name(cell.level)} around the box: cells {window[0]}-{window[1] - 1} "
                f"× {window[2]}-{window[3] - 1}, each crop its own range.")
    from PIL import Image

    from analysis.feature_maps import colorize

    cols = st.columns(min(len(crops), 8))
    for i, (stage, m) in enumerate(crops.items()):
        lo, hi = float(m.min()), float(m.max())
        rgb = colorize((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m))
        big = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * 12, rgb.shape[0] * 12), Image.NEAREST))
        cols[i % len(cols)].image(big, caption=f"{stage} [{lo:.3g}, {hi:.3g}]", width="stretch")
    ko = None
    if index is not None:
        ko = knockouts(ctx, image, res, index)
        st.markdown("**What the global knock-outs do to it** (IoU ≥ 0.5 with a box of the same class = kept)")
        st.dataframe(ko.round(4), hide_index=True, key=f"{key}_ko")
    dyrelu = pd.DataFrame([{"block": bb + 1, "channel": c, **{k: float(v[c]) for k, v in res.dyrelu[bb][cell.level].items()}}
                           for bb in range(res.num_blocks) for c in range(len(res.dyrelu[bb][cell.level]["a1"]))])
    note = [f"{image.name}; {what}; {level_name(cell.level)} cell ({cell.y}, {cell.x}); block 1-based"]
    c1, c2, c3, c4, c5 = st.columns(5)
    with c1:
        figure_downloads(lambda: _matplotlib_probe(image.array, pts, box, centre, crops, title), f"probe_block{b}",
                         key=f"{key}_dl")
    with c2:
        csv_download(blocks, "probe_blocks", key=f"{key}_blocks_dl", notes=note, label="Blocks CSV")
    with c3:
        csv_download(points, "probe_sampling_points", key=f"{key}_pts_dl",
                     notes=note + ["dy/dx in cells of the map the branch's conv reads; grid_*/sample_* in original-image pixels"],
                     label="Points CSV")
    with c4:
        csv_download(dyrelu, "probe_dyrelu", key=f"{key}_dy_dl", notes=note, label="DyReLU CSV")
    if ko is not None:
        with c5:
            csv_download(ko, "probe_knockouts", key=f"{key}_ko_dl", notes=note, label="Knock-outs CSV")


def selected_detection(res, candidates, figure_key: str, key: str, class_names) -> Optional[int]:
    """The detection to probe: a click on a detection's centre marker in the chart `figure_key` (its
    customdata is the index) selects it in the select box `key`, which can also be set directly.
    `candidates`: the indices offered (the boxes shown). None = no detection chosen."""
    det = res.detections
    options = [NO_DETECTION] + [int(i) for i in candidates]
    clicked = st.session_state.get(figure_key)
    points = clicked["selection"]["points"] if clicked and clicked.get("selection") else []
    picked = next((p.get("customdata") for p in points if p.get("customdata") is not None), None)
    if isinstance(picked, (list, tuple)):
        picked = picked[0]
    if picked is not None and st.session_state.get(f"{key}_last_click") != picked:
        st.session_state[f"{key}_last_click"] = picked
        if int(picked) in options:
            st.session_state[key] = int(picked)
    if st.session_state.get(key) not in options:
        st.session_state[key] = NO_DETECTION

    def label(i):
        if i == NO_DETECTION:
            return "none (click a box's centre marker)"
        return f"{i + 1}: {class_names[int(det.labels[i])]} {float(det.scores[i]):.3f}"

    choice = st.selectbox("Probe a detection", options, format_func=label, key=key,
                          help="Click a detection's centre marker in the figure, or choose it here.")
    return None if choice == NO_DETECTION else int(choice)
