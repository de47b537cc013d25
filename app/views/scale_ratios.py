"""Scale ratios (paper Fig. 3): the learned scale-attention ratios of every level over a dataset."""

from __future__ import annotations

import streamlit as st

from analysis.levels import first_level_of, level_note
from analysis.scale_ratios import (RATIO_DEFINITION, plot_scale_ratios, plotly_scale_ratios, ratio_summary,
                                   saturation_note, weight_saturation)
from app import compute
from app.controls import block_slider, dataset_pass
from app.downloads import csv_download, figure_downloads
from app.sidebar import dataset_or_stop, require_model

st.title("Scale ratios")
ctx = require_model()
LEVEL_NOTE = level_note(first_level_of(ctx.model.config.strides), len(ctx.model.config.strides))
st.caption("An analogue of the paper's Figure 3: for every level, the ratio of the learned scale weight of the "
           "higher-resolution source to that of the lower-resolution one, over a dataset. "
           + RATIO_DEFINITION[0].upper() + RATIO_DEFINITION[1:] + ". " + LEVEL_NOTE[0].upper() + LEVEL_NOTE[1:] + ".")
if ctx.num_blocks == 0:
    st.error("This model has no DyHead blocks: there are no scale weights to show.")
    st.stop()
root, records = dataset_or_stop(ctx)

folder = compute.scale_ratio_folder(ctx.ref, root, ctx.split)
n, ids, done, run = dataset_pass(
    records, ctx.data_label, ctx.split, "sr", lambda ids: compute.scale_ratio_progress(ctx.ref, root, ctx.split, ids),
    lambda n, progress: compute.run_scale_ratio_pass(ctx.model, ctx.ref, root, ctx.split, n, progress=progress),
    where=str(folder))
if run is not None and run.skipped:
    st.warning(f"{len(run.skipped)} unreadable image(s) skipped: "
               + "; ".join(f"{f}: {r}" for f, r in run.skipped[:3]))

if done == 0:
    st.info("Press **Run the pass** to compute the scale weights of the first N images "
            "(about 0.1-0.3 s per image for the demo model on a CPU).")
    st.stop()

weights, ratios = compute.load_scale_ratios(ctx.ref, root, ctx.split, ids)
if ratios is None:
    st.warning("No readable image among the chosen ones.")
    st.stop()
if done < n:
    st.warning(f"Partial result: {done} of {n} images. Press **Resume the pass** to finish.")

num_blocks = int(ratios["block"].max()) + 1
block = block_slider("Block shown", num_blocks, key="sr_block")
st.markdown(f"**Block {block} of {num_blocks}** (the paper does not say which block its Figure 3 shows; the slider "
            "picks one, the last by default).")
st.plotly_chart(plotly_scale_ratios(ratios, block=block - 1), key="sr_hist")
st.caption("The paper reports, for the official model on COCO val2017, that scale attention pulls the finest level "
           "(its 'level 5', P3 here) towards lower resolution and the coarsest ('level 1', P7) towards higher "
           "resolution. Read the ends with care: P4-P6 divide the finer neighbour's weight by the coarser one's, but "
           "P3 and P7 have one neighbour only, so their ratio sets the level's own weight against that neighbour "
           "(the legend names each pair). A P3 ratio above 1 or a P7 ratio below 1 can come from the level's own "
           "weight alone, e.g. when it sits at the 1.0 ceiling, and is not the opposite of the paper's finding. The "
           "weights lie in [0.5, 1], so every ratio lies between 0.5 and 2.")
summary = ratio_summary(ratios)
saturation = weight_saturation(weights)
st.info(saturation_note(weights, ratios, block - 1)[0].upper() + saturation_note(weights, ratios, block - 1)[1:]
        + ". A weight at the floor only says the logit was cut by the ReLU; a ratio of 1 with both weights there does "
        "not mean the model weighs the two sources alike.")
summary_block = summary[summary.block == block - 1].drop(columns=["block"]).merge(
    saturation[saturation.block == block - 1].drop(columns=["block", "level_name"]), on="level")
st.dataframe(summary_block.round(3), hide_index=True, key="sr_summary")
st.caption("share_at_floor / share_at_ceiling: of all the level's weights (every image and source level) at 0.5 / "
           "1.0; share_both_at_floor: ratios whose two weights both sit at 0.5.")

d1, d2, d3 = st.columns([1.2, 1, 1])
with d1:
    figure_downloads(lambda: plot_scale_ratios(ratios, focus_block=block - 1), "scale_ratios_fig3", pdf=True,
                     key="sr_fig")
with d2:
    csv_download(ratios, "scale_ratios", key="sr_ratios", notes=[RATIO_DEFINITION, LEVEL_NOTE], label="Ratios CSV")
with d3:
    csv_download(weights, "scale_weights", key="sr_weights",
                 notes=["raw scale-attention weights w(level <- source_level); block 0-based", LEVEL_NOTE],
                 label="Weights CSV")
