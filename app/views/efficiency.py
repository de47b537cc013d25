"""Efficiency (paper Table 2): parameters, GMACs and latency of the head against its number of blocks."""

from __future__ import annotations

import streamlit as st

from analysis.efficiency import (
    BLOCK_COUNTS,
    PAPER_BASELINE_GFLOPS,
    PAPER_FLOPS_NOTE,
    PAPER_PER_BLOCK,
    PAPER_TABLE2,
    efficiency_table,
    plot_efficiency,
    plotly_efficiency,
)
from app import compute
from app.downloads import csv_download, figure_downloads
from app.sidebar import context

st.title("Efficiency")
st.caption("The head's cost against its depth, next to the paper's Table 2. Counted on meta tensors (no memory, "
           "no arithmetic), for the official widths (256 channels, P3-P7 of an 800×1333 input), whatever model "
           "is loaded. 0 blocks = the ATSS head's two 4-conv towers.")

df = compute.efficiency_cached(BLOCK_COUNTS, 256, (800, 1333), 32)
st.markdown(f"**Convention:** {df.attrs.get('convention', '')}")

latency_key = "eff_latency_result"
latency = st.session_state.get(latency_key)
shown = df.copy()
if latency is not None:
    shown["latency_ms"] = shown["blocks"].map(dict(zip(latency["blocks"], latency["latency_ms"])))
    shown.attrs = {**df.attrs, "latency_device": latency.attrs.get("latency_device", "")}

cols = ["blocks", "label", "params", "gmacs", "per_block_gmacs", "delta_gmacs", "paper_delta", "delta_minus_paper",
        "latency_ms"]
st.dataframe(shown[cols].round(2), hide_index=True, key="eff_table",
             column_config={"gmacs": "GMACs", "delta_gmacs": "Δ GMACs vs 0 blocks",
                            "paper_delta": "paper Table 2 Δ GFLOPs", "latency_ms": "latency (ms)"})
baseline = df.loc[df.blocks == 0, "detector_gmacs"] if "detector_gmacs" in df else None
ours = (f"{float(baseline.iloc[0]):.1f} GMACs" if baseline is not None and len(baseline) and baseline.notna().all()
        else "not counted here")
st.caption(f"Paper Table 2 lists the whole ATSS R50 detector ({PAPER_BASELINE_GFLOPS} GFLOPs with the baseline "
           f"head) and the change per depth: {', '.join(f'{k}: {v:+.2f}' for k, v in PAPER_TABLE2.items())}; "
           f"about {PAPER_PER_BLOCK} per block. This count gives the whole baseline detector {ours}, not "
           f"{PAPER_BASELINE_GFLOPS}, so only the deltas are compared. Note: {PAPER_FLOPS_NOTE}.")
st.plotly_chart(plotly_efficiency(shown), key="eff_chart")

d1, d2 = st.columns([1.2, 2])
with d1:
    figure_downloads(lambda: plot_efficiency(shown), "efficiency_table2", pdf=True, key="eff_fig")
with d2:
    csv_download(shown, "efficiency", key="eff_csv", notes=[df.attrs.get("convention", "")])

st.subheader("Latency")
ctx = context()
device = str(ctx.model.device) if ctx.ready else "cpu"
l1, l2, l3 = st.columns(3)
size_label = l1.selectbox("Input size", ["800×1333 (paper)", "512×853", "320×533"], index=2, key="eff_size",
                          help="Latency on a CPU at the paper's size takes minutes; smaller inputs are quick.")
repeats = l2.number_input("Repeats", 1, 10, 1, key="eff_repeats")
l3.write("")
if l3.button("Measure latency", key="eff_measure"):
    h, w = (int(v) for v in size_label.split(" ")[0].split("×"))
    bar = st.progress(0.0, text="measuring ...")
    result = efficiency_table(blocks=BLOCK_COUNTS, channels=256, image_size=(h, w), pad=32, latency=True,
                              latency_repeats=int(repeats), device=device,
                              progress=lambda d, t: bar.progress(d / t, text=f"{d} / {t} depths"))
    bar.empty()
    result.attrs["latency_device"] = f"{device}, {h}x{w}"
    st.session_state[latency_key] = result
    st.rerun()
if latency is not None:
    st.caption(f"Latency measured on {latency.attrs.get('latency_device', '')} with random weights "
               "(speed does not depend on the values); median of the repeats.")
else:
    st.caption(f"Not measured yet; runs on {device} with random weights at the chosen input size.")
