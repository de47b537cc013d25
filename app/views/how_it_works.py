"""How it works: the three attentions of DyHead, the paper's equations next to this image's live values,
and how the official code differs from the equations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from functools import partial

from analysis import levels
from app import compute
from app.controls import block_slider
from app.downloads import csv_download
from app.sidebar import require_image, require_model
from dyhead.attention import DyReLUCoefficients, TaskAttention, hard_sigmoid

st.title("How it works")
st.markdown(
    "A DyHead block looks at the feature pyramid as one tensor **F** of *L* levels × *S* positions × *C* "
    "channels and applies three cheap attentions, each along one of these axes, instead of one costly attention "
    "over all of them (paper, Eq. 2):"
)
st.latex(r"W(\mathcal{F}) = \pi_C\Big(\pi_S\big(\pi_L(\mathcal{F})\cdot\mathcal{F}\big)\cdot\mathcal{F}\Big)\cdot\mathcal{F}")
st.markdown("Blocks are stacked (6 in the official model). Below, each attention with its equation and the values "
            "it takes for the current image.")

ctx = require_model()
image = require_image(ctx)
if ctx.num_blocks == 0:
    st.error("This model has no DyHead blocks: load a DyHead checkpoint to see live values.")
    st.stop()
res = compute.inspect_cached(ctx.ref, ctx.model, image.key, image.array, compute.all_on_key(ctx.num_blocks),
                             image.name)
B, L = res.num_blocks, res.num_levels
# Level names from the model's strides (P2..P6 for Faster R-CNN, else P3..P7).
level_name = partial(levels.level_name, first_level=levels.first_level_of(res.strides))
level_label = partial(levels.level_label, first_level=levels.first_level_of(res.strides))
st.caption(f"Live values: {image.name}, model `{ctx.checkpoint.name}`.")
block = block_slider("Block for the live values", B, key="hw_block")

# ------------------------------------------------------------------------------------------------
st.header("1 · Scale-aware attention π_L")
st.latex(r"\pi_L(\mathcal{F})\cdot\mathcal{F} = \sigma\Big(f\big(\tfrac{1}{SC}\textstyle\sum_{S,C}\mathcal{F}\big)\Big)"
         r"\cdot\mathcal{F},\qquad \sigma(x)=\max\big(0,\min(1,\tfrac{x+1}{2})\big)")
left, right = st.columns([1, 1])
with left:
    st.markdown(
        "Objects of very different sizes live on different pyramid levels. Scale-aware attention decides, per "
        "image, how much each level should count when levels are mixed: it pools a level to one number, maps it "
        "through a learned linear function and a hard sigmoid, and multiplies the level by the result (Eq. 3, above).")
    st.markdown(
        "**The official code computes something else.** The weight is computed per *branch* (see π_S below) after "
        "the deformable conv, not before it: average over H×W only (not S×C), a learned 1×1 conv C→1, a **ReLU**, "
        "then the hard sigmoid `relu6(x + 3) / 6` instead of the paper's σ(x) = (x + 1) / 2. Because of the ReLU "
        "the weight never drops below 0.5: it lies in **[0.5, 1]**, not [0, 1], and sits exactly at 0.5 whenever the "
        "1×1 conv's output is ≤ 0 (at 1.0 when it is ≥ 3).")
with right:
    x = torch.linspace(-4.0, 4.0, 161)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x.numpy(), y=np.clip((x.numpy() + 1) / 2, 0, 1), name="paper σ(x) = (x+1)/2, clipped",
                             line=dict(dash="dash")))
    fig.add_trace(go.Scatter(x=x.numpy(), y=hard_sigmoid(torch.relu(x)).numpy(), name="code: relu6(ReLU(x)+3)/6"))
    logits = res.extra.get("scale_logits", pd.DataFrame())
    if len(logits):
        lb = logits[logits.block == block - 1]
        fig.add_trace(go.Scatter(x=lb.logit, y=hard_sigmoid(torch.tensor(lb.logit.to_numpy())).numpy(), mode="markers",
                                 name=f"this image, block {block}", marker=dict(size=9, color="#d62728"),
                                 hovertext=[f"{level_name(r.level)} ← {level_name(r.source_level)}" for r in lb.itertuples()]))
    fig.update_layout(height=300, margin=dict(t=30, b=10), xaxis_title="f(pooled feature)", yaxis_title="weight",
                      legend=dict(orientation="h", y=-0.3), title="Hard sigmoid: paper vs code")
    st.plotly_chart(fig, key="hw_sigmoid")
    if len(logits):
        csv_download(lb.assign(block=block, weight=hard_sigmoid(torch.tensor(lb.logit.to_numpy())).numpy()),
                     "scale_logits_and_weights", key="hw_sigmoid_dl",
                     notes=[f"{image.name}; block {block} (1-based); logit = input of relu6(x+3)/6 after the ReLU"])
w = res.weights[res.weights.block == block - 1].assign(
    level_name=lambda d: d.level.map(level_name), source_name=lambda d: d.source_level.map(level_name))
table = w.pivot_table(index="level_name", columns="source_name", values="weight")
table = table.reindex(index=[level_name(l) for l in range(L)], columns=[level_name(l) for l in range(L)])
st.markdown(f"**This image, block {block}:** weight of each source level (columns) in each output level (rows); "
            "empty cells are levels the code does not mix (only direct neighbours).")
# Text cells: the numbers to 3 decimals and empty where the code mixes nothing (a column that mixed
# numbers and a dash made Streamlit's Arrow conversion fail and fall back, with a traceback in the log).
st.dataframe(table.map(lambda v: "" if pd.isna(v) else f"{v:.3f}"), key="hw_weights")

# ------------------------------------------------------------------------------------------------
st.header("2 · Spatial-aware attention π_S")
st.latex(r"\pi_S(\mathcal{F})\cdot\mathcal{F} = \frac{1}{L}\sum_{l=1}^{L}\sum_{k=1}^{K}"
         r"w_{l,k}\cdot\mathcal{F}(l;\,p_k+\Delta p_k;\,c)\cdot\Delta m_k")
left, right = st.columns([1, 1])
with left:
    st.markdown(
        "Objects have different shapes and positions. Spatial-aware attention lets each position read its "
        "features from K learned places instead of a fixed 3×3 grid (a modulated deformable convolution): each "
        "sampling point p_k moves by a learned offset Δp_k and is weighted by a learned importance Δm_k; the "
        "result is then averaged over levels (Eq. 4, above).")
    st.markdown(
        "**In the official code** each output level l predicts its own offsets and masks (a 3×3 conv with 27 "
        "outputs: 18 offsets and 9 masks through a sigmoid) from its own feature and passes them to up to three "
        "branches, which use them differently: level l itself reads them as predicted; the finer level l-1 is "
        "sampled by a stride-2 conv, so the 3×3 grid and the offsets are in the finer map's pixels (half a level-l "
        "cell each); the coarser level l+1 reads the same buffer scrambled (the quirk below) before its result is "
        "upsampled. Only direct neighbours are mixed, not all L levels, and every conv is followed by "
        "GroupNorm(16).")
with right:
    rows = []
    for l in range(L):
        off = res.offsets[block - 1][l]  # [18, H, W]
        mask = res.masks[block - 1][l]  # [9, H, W]
        rows.append({"level": level_name(l), "mean |offset| (cells)": float(np.hypot(off[0::2], off[1::2]).mean()),
                     "max |offset| (cells)": float(np.hypot(off[0::2], off[1::2]).max()),
                     "mean mask": float(mask.mean())})
    st.markdown(f"**This image, block {block}:** how far the sampling points move and how much they count.")
    st.dataframe(pd.DataFrame(rows).round(3), hide_index=True, key="hw_offsets")
    st.caption("The page *Inside the head* draws the 9 sampling points of any position.")

# ------------------------------------------------------------------------------------------------
st.header("3 · Task-aware attention π_C")
st.latex(r"\pi_C(\mathcal{F})\cdot\mathcal{F} = \max\big(\alpha^1(\mathcal{F})\cdot\mathcal{F}_c+\beta^1(\mathcal{F}),\;"
         r"\alpha^2(\mathcal{F})\cdot\mathcal{F}_c+\beta^2(\mathcal{F})\big)")
left, right = st.columns([1, 1])
with left:
    st.markdown(
        "Classification, box regression and centerness want different channels. Task-aware attention is a dynamic "
        "ReLU: for every channel it takes the larger of two lines whose slopes and intercepts are computed from the "
        "pooled feature itself, so it can switch channels on and off per image (Eq. 5, above).")
    st.markdown(
        "**The paper's hyper-function θ** pools over L×S, then two fully connected layers and a *normalisation "
        "layer*, then a shifted sigmoid that maps the output to [−1, 1]. **The official code** pools each level "
        "separately over H×W, then FC(C→C/4) → ReLU → FC(C/4→4C) with **no normalisation layer**, then the hard "
        "sigmoid `relu6(x + 3) / 6` ∈ [0, 1], rescaled per coefficient to α¹ ∈ [0, 2], α² ∈ [−1, 1], "
        "β¹, β² ∈ [−0.5, 0.5] (not all of them [−1, 1]). At the centre y = 0.5 this is exactly a ReLU (α¹ = 1, the "
        "rest 0), the paper's starting point.")
with right:
    c1, c2 = st.columns(2)
    level = c1.selectbox("Level", list(range(L)), format_func=lambda l: level_name(l), key="hw_level")
    coeffs = res.dyrelu[block - 1][level]
    C = len(coeffs["a1"])
    # Default: the channel whose coefficients are furthest from a plain ReLU.
    far = int(np.argmax(np.abs(coeffs["a1"] - 1) + np.abs(coeffs["b1"]) + np.abs(coeffs["a2"]) + np.abs(coeffs["b2"])))
    channel = int(c2.number_input(f"Channel (0-{C - 1})", 0, C - 1, far, key="hw_channel"))
    xs = torch.linspace(-3.0, 3.0, 121)
    one = {k: torch.tensor([[float(v[channel])]]) for k, v in coeffs.items()}  # each [N=1, C=1]
    ys = TaskAttention.apply(xs.view(1, 1, 1, -1), DyReLUCoefficients(**one)).view(-1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs.numpy(), y=torch.relu(xs).numpy(), name="ReLU", line=dict(dash="dash")))
    fig.add_trace(go.Scatter(x=xs.numpy(), y=ys.numpy(), name=f"DyReLU, channel {channel}"))
    fig.update_layout(height=300, margin=dict(t=30, b=10), xaxis_title="input x", yaxis_title="output",
                      title=(f"{level_name(level)}, block {block}: a1={one['a1'].item():.2f}, b1={one['b1'].item():.2f}, "
                             f"a2={one['a2'].item():.2f}, b2={one['b2'].item():.2f}"),
                      legend=dict(orientation="h", y=-0.3))
    st.plotly_chart(fig, key="hw_dyrelu")
    csv_download(pd.DataFrame({"x": xs.numpy(), "relu": torch.relu(xs).numpy(), "dyrelu": ys.numpy()}),
                 "dyrelu_curve", key="hw_dyrelu_dl",
                 notes=[f"{image.name}; block {block}; {level_name(level)}; channel {channel}; "
                        + ", ".join(f"{k}={v.item():.6g}" for k, v in one.items())])

# ------------------------------------------------------------------------------------------------
st.header("The paper's equations and the official code")
st.markdown(
    "The released implementation (microsoft/DynamicHead, `DyConv`) does not compute Eqs. 2-5 as written: it "
    "runs the spatial step before the scale step and fuses them, uses a different scale function with another "
    "range, mixes neighbours only, and builds DyReLU's coefficients differently. The rows below list each "
    "difference; those marked *contradicts* change what is computed, not just a detail left unsaid. This project "
    "reproduces the code: in float64 its tower differs from the official golden data by at most about 6e-14 "
    "(round-off) with its fast CPU deformable conv, and not at all with torchvision's kernel.")
st.dataframe(pd.DataFrame([
    ("Order (contradicts)", "π_L, then π_S, then π_C (Eq. 2)", "π_S first (deformable conv + GN on each source "
     "level), then π_L weights each branch's output; the two fuse into one weighted mean, then π_C"),
    ("Levels mixed (contradicts)", "all L levels (1/L Σ_l, Eq. 4)", "the level and its direct neighbours only: 2 "
     "branches at the ends, 3 in the middle; the mean divides by the branches present"),
    ("Scale weight (contradicts)", "σ(x) = max(0, min(1, (x+1)/2)) of f(mean over S and C), in [0, 1] (Eq. 3)",
     "relu6(ReLU(f(mean over H×W)) + 3) / 6: a ReLU, then another hard sigmoid; in [0.5, 1], one per image and "
     "branch"),
    ("Offsets", "from the 'median level' (Eq. 4)", "from each output level's own feature; used as predicted by the "
     "same level, in the finer map's pixels by the stride-2 finer branch, scrambled by the coarser branch"),
    ("DyReLU θ (contradicts)", "pool over L×S, 2 FC, a normalisation layer, shifted sigmoid to [−1, 1] (Eq. 5)",
     "pool per level over H×W, FC → ReLU → FC, no normalisation layer, relu6(x+3)/6 rescaled to α¹ ∈ [0, 2], "
     "α² ∈ [−1, 1], β ∈ [−0.5, 0.5]; one set of α, β per level and image"),
    ("Coarser branch (contradicts)", "-", "its conv runs at level l+1's size but reads level l's offset buffer "
     "(issue 25): official / crop / upsample-first readings, chosen in the sidebar"),
], columns=["", "paper", "official code"]), hide_index=True, key="hw_table")

st.subheader("The coarser-branch quirk")
st.markdown(
    "The coarser neighbour's deformable conv runs at level l+1's size, but receives the offset and mask maps "
    "predicted at level l, which are about four times larger (microsoft/DynamicHead issue 25). The official CUDA "
    "kernel never checks the shapes: it reads the first 18·H′·W′ values of level l's [18, H, W] offset buffer "
    "(H′×W′ = level l+1's size, about a quarter of H×W), i.e. roughly the first 4-5 of the 18 offset channels "
    "over all of level l, and reinterprets them as an [18, H′, W′] map; each coarser tap gets values predicted "
    "for other taps at other positions (the masks likewise, from the first 2-3 mask channels). mmdetection's "
    "port crops the top-left H′×W′ corner instead; the natural reading upsamples level l+1 first and then uses "
    "level l's own offsets. The sidebar's **Coarser-branch mode** switches the loaded model between "
    "them; the comparison below runs this image under all three.")
if st.button("Compare the three readings on this image", key="hw_coarser"):
    from analysis.coarser_modes import compare_coarser_modes, plotly_coarser_modes

    with st.spinner("Running the image under each reading ..."):
        cmp = compare_coarser_modes(ctx.model, image.array)
    st.plotly_chart(plotly_coarser_modes(cmp), key="hw_coarser_chart")
    st.dataframe(cmp.detections.round(3), hide_index=True, key="hw_coarser_table")
