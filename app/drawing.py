"""Plotly drawings for the pages: boxes on an image, spatial-attention sampling points, bar charts.

Only drawing: the numbers come from `dyhead` (detections, trace) and `analysis`; this module places
them on an image.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = ["CLASS_COLORS", "DISPLAY_MAX_SIDE", "display_image", "detections_figure", "sampling_points", "sampling_figure",
           "show_feature_grid", "LEVEL_COLORS"]

CLASS_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
                "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000")
LEVEL_COLORS = ("#6a3d9a", "#e31a1c", "#33a02c", "#ff7f00", "#1f78b4")  # P3..P7, as analysis' figures


#: Images are shown at most this large (long side, pixels); coordinates stay in original pixels.
DISPLAY_MAX_SIDE = 1024


def display_image(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> tuple[np.ndarray, float]:
    """(a copy no larger than `max_side` on its long side, its scale); the image itself when small."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w, 1))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), scale


def _data_uri(image: np.ndarray) -> str:
    """The image as a base64 JPEG data URI: far smaller in the page than a plotly array of pixels."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_figure(image: np.ndarray, height: Optional[int] = None) -> go.Figure:
    h, w = image.shape[:2]
    shown, scale = display_image(image)
    # A large image is sent downscaled, each shown pixel spanning 1/scale original pixels.
    fig = go.Figure(go.Image(source=_data_uri(shown), dx=1.0 / scale, dy=1.0 / scale, hoverinfo="skip"))
    fig.update_xaxes(visible=False, range=[0, w])
    fig.update_yaxes(visible=False, range=[h, 0], scaleanchor="x")
    fig.update_layout(margin=dict(l=0, r=0, t=30, b=0), height=height or min(760, max(360, int(640 * h / max(w, 1)))),
                      showlegend=False)
    return fig


def detections_figure(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                      class_names: Sequence[str], title: str = "", highlight: Optional[set] = None,
                      height: Optional[int] = None, indices: Optional[Sequence[int]] = None) -> go.Figure:
    """The image with one rectangle and label per detection (boxes xyxy in image pixels). Boxes whose
    index is in `highlight` are drawn dashed and thicker. With `indices` (one per box), each box's centre
    is a visible marker carrying its index as customdata, so that a click selects the detection."""
    fig = _image_figure(image, height)
    xs, ys, texts, colors = [], [], [], []
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        color = CLASS_COLORS[int(label) % len(CLASS_COLORS)]
        marked = highlight is not None and i in highlight
        fig.add_shape(type="rect", x0=x1, y0=y1, x1=x2, y1=y2, line=dict(color=color, width=3 if marked else 2,
                      dash="dash" if marked else "solid"))
        name = class_names[int(label)] if int(label) < len(class_names) else str(int(label))
        fig.add_annotation(x=x1, y=y1, text=f"{name} {float(score):.2f}", showarrow=False, xanchor="left",
                           yanchor="bottom", font=dict(size=11, color="white"), bgcolor=color, opacity=0.85,
                           borderpad=1)
        xs.append((x1 + x2) / 2)
        ys.append((y1 + y2) / 2)
        texts.append(f"{name}<br>score {float(score):.3f}<br>[{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
        colors.append(color)
    if xs:
        if indices is None:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=dict(size=6, color=colors, opacity=0.0),
                                     hovertext=texts, hoverinfo="text"))
        else:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", customdata=[int(i) for i in indices],
                                     marker=dict(size=11, color=colors, opacity=0.55, symbol="circle-dot",
                                                 line=dict(color="white", width=1)),
                                     hovertext=[t + "<br>click: probe" for t in texts], hoverinfo="text"))
    if title:
        fig.update_layout(title=dict(text=title, font=dict(size=13)))
    return fig


def sampling_points(offset: np.ndarray, mask: np.ndarray, y: int, x: int, stride: int,
                    scale_yx: tuple[float, float]) -> pd.DataFrame:
    """Where the spatial-aware attention samples for output position (y, x) of a level.

    offset [18, H, W] holds (dy, dx) of tap k = 3i + j in channels 2k, 2k+1 (level cells); mask [9, H, W].
    A 3x3 deformable conv with padding 1 reads tap k at (y + i - 1 + dy, x + j - 1 + dx) in level cells.
    A level cell u lies at image pixel (u + 0.5) * stride of the resized image (the anchor centres,
    offset 0.5); `scale_yx` maps resized-image pixels to the original image.
    Returns one row per tap: tap, i, j, dy, dx, mask, grid_y/x and sample_y/x in original-image pixels.
    """
    from analysis.feature_maps import cell_centre_pixel  # the same placement as the feature-map overlay

    rows = []
    sy, sx = scale_yx
    for k in range(9):
        i, j = divmod(k, 3)
        dy, dx = float(offset[2 * k, y, x]), float(offset[2 * k + 1, y, x])
        gy, gx = y + i - 1, x + j - 1
        rows.append({
            "tap": k, "i": i, "j": j, "dy": dy, "dx": dx, "mask": float(mask[k, y, x]),
            "grid_y": float(cell_centre_pixel(gy, stride, sy)), "grid_x": float(cell_centre_pixel(gx, stride, sx)),
            "sample_y": float(cell_centre_pixel(gy + dy, stride, sy)),
            "sample_x": float(cell_centre_pixel(gx + dx, stride, sx)),
        })
    return pd.DataFrame(rows)


def sampling_figure(image: np.ndarray, points: pd.DataFrame, center: tuple[float, float], title: str = "",
                    height: Optional[int] = None, zoom_margin: Optional[float] = None,
                    cells: Optional[tuple[int, int, int, tuple[float, float]]] = None) -> go.Figure:
    """Arrows from the regular 3x3 grid to where each tap samples; marker size and opacity = mask.
    With `zoom_margin` (pixels) the view is cropped to the points plus that margin. With
    `cells` = (rows, columns, stride, scale_yx) the level's cell centres are added as (nearly)
    invisible points carrying (row, column) as customdata, so that a click picks a cell."""
    fig = _image_figure(image, height)
    if cells is not None:
        rows, cols, stride, (sy, sx) = cells
        rr, cc = np.mgrid[0:rows, 0:cols]
        fig.add_trace(go.Scatter(
            x=((cc.ravel() + 0.5) * stride * sx), y=((rr.ravel() + 0.5) * stride * sy), mode="markers",
            marker=dict(size=max(4, min(14, stride * sx * 0.8)), color="white", opacity=0.02),
            customdata=np.stack([rr.ravel(), cc.ravel()], axis=1), hovertemplate="cell (%{customdata[0]}, "
            "%{customdata[1]}): click to look here<extra></extra>", name="cells"))
    if zoom_margin is not None:
        ys = np.concatenate([points.grid_y, points.sample_y, [center[0]]])
        xs = np.concatenate([points.grid_x, points.sample_x, [center[1]]])
        half = max(float(ys.max() - ys.min()), float(xs.max() - xs.min())) / 2 + zoom_margin
        cy, cx = (ys.max() + ys.min()) / 2, (xs.max() + xs.min()) / 2
        fig.update_xaxes(range=[cx - half, cx + half])
        fig.update_yaxes(range=[cy + half, cy - half])
    for row in points.itertuples():
        fig.add_annotation(x=row.sample_x, y=row.sample_y, ax=row.grid_x, ay=row.grid_y, xref="x", yref="y",
                           axref="x", ayref="y", showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1.5,
                           arrowcolor="rgba(0, 255, 255, 0.9)", text="")
    fig.add_trace(go.Scatter(x=points.grid_x, y=points.grid_y, mode="markers",
                             marker=dict(size=6, color="white", line=dict(color="black", width=1)),
                             hoverinfo="skip", name="regular grid"))
    fig.add_trace(go.Scatter(
        x=points.sample_x, y=points.sample_y, mode="markers",
        marker=dict(size=8 + 22 * points["mask"].clip(0, 1), color="#ff2d95",
                    opacity=(0.25 + 0.75 * points["mask"].clip(0, 1)).tolist(), line=dict(color="white", width=1)),
        hovertext=[f"tap {r.tap}: offset ({r.dy:+.2f}, {r.dx:+.2f}) cells, mask {r.mask:.2f}" for r in points.itertuples()],
        hoverinfo="text", name="sampling points"))
    fig.add_trace(go.Scatter(x=[center[1]], y=[center[0]], mode="markers",
                             marker=dict(symbol="x", size=12, color="yellow", line=dict(width=2)), hoverinfo="skip"))
    if title:
        fig.update_layout(title=dict(text=title, font=dict(size=13)))
    return fig


def show_feature_grid(stages, reduced, rows: Sequence[str], opacity: float, cmap: str = "inferno",
                      column_titles: Optional[Sequence[str]] = None, first_level: int = 3) -> None:
    """Feature maps as a grid of images (rows = stages, columns = levels), each the reduced map
    (`analysis.feature_maps.ReducedMaps`) placed on the image with `analysis.feature_maps.stage_overlay`
    (each cell where it lies when `stages` carries its geometry, `analysis.feature_maps.with_geometry`).

    Drawn with `st.image` (compressed images) rather than a plotly figure, so that changing the opacity
    or the reduction re-renders quickly."""
    import streamlit as st

    from analysis.feature_maps import stage_overlay
    from analysis.levels import level_name

    image, _ = display_image(stages.image, 640)  # each cell is small; overlays of a large image are slow
    num_levels = reduced.num_levels
    titles = list(column_titles) if column_titles else [level_name(l, first_level) for l in range(num_levels)]
    widths = [1.0] * num_levels + [0.55]
    header = st.columns(widths, gap="small")
    for l, title in enumerate(titles):
        header[l].markdown(f"<div style='text-align:center'><b>{title}</b></div>", unsafe_allow_html=True)
    for stage in rows:
        cols = st.columns(widths, gap="small", vertical_alignment="center")
        for l in range(num_levels):
            cols[l].image(stage_overlay(stages, reduced, stage, l, opacity, cmap, image=image), output_format="JPEG",
                          width="stretch")
        cols[-1].markdown(f"**{stage}**")
