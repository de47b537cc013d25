"""Attention on/off: switch attentions off at inference (globally or per block) and see what changes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.ablation import KNOCKOUT_NOTE, VARIANT_NOTES, plot_ablation, plotly_ablation
from analysis.detection_diff import diff_summary, match_detections, plot_detection_pair
from analysis.feature_maps import FeatureStages, color_scale_note, plot_feature_grid, reduce_stages
from app import compute
from app.downloads import csv_download, figure_downloads, reduced_maps_table
from app.drawing import detections_figure, show_feature_grid
from app.notices import demo_model_notice, upload_notice
from app.sidebar import dataset_or_stop, require_model

ATTENTIONS = ("scale", "spatial", "task")

st.title("Attention on/off")
st.caption("Switch attentions off for this model at inference time. What replaces an attention is a named "
           "variant, chosen below: scale off = the calibrated dataset-mean weight of each (block, level) (keeps the "
           "feature magnitude the network was trained on), per source, or every weight 1; spatial off = zero "
           "offsets and masks of 1 (an ordinary 3×3 conv; the branches from the neighbouring levels are still "
           "averaged); task off = a plain ReLU or the dataset-mean DyReLU coefficients (static). The switches are "
           "passed with each call; the shared model is never changed, so other sessions are not affected.")
ctx = require_model()
demo_model_notice(ctx)
B = ctx.num_blocks
if B == 0:
    st.error("This model has no DyHead blocks: there is no attention to switch.")
    st.stop()

g1, g2, g3 = st.columns(3)
global_on = {
    "scale": g1.toggle("Scale-aware (L)", True, key="sw_scale"),
    "spatial": g2.toggle("Spatial-aware (S)", True, key="sw_spatial"),
    "task": g3.toggle("Task-aware (C)", True, key="sw_task"),
}
with st.expander("Per block"):
    cols = st.columns(B)
    per_block = []
    for b in range(B):
        with cols[b]:
            st.markdown(f"**Block {b + 1}**")
            per_block.append(tuple(st.checkbox(a, True, key=f"sw_b{b}_{a}", disabled=not global_on[a])
                                   for a in ATTENTIONS))
v1, v2 = st.columns(2)
scale_off = v1.radio("Scale off means", ["calibrated", "calibrated-per-source", "fixed-1"], horizontal=True,
                     key="sw_scale_off", help=VARIANT_NOTES["scale calibrated"] + ". calibrated-per-source: "
                     + VARIANT_NOTES["scale calibrated-per-source"] + ". fixed-1: " + VARIANT_NOTES["scale fixed-1"])
task_off = v2.radio("Task off means", ["relu", "static"], horizontal=True, key="sw_task_off",
                    help=VARIANT_NOTES["task relu"] + ". static: " + VARIANT_NOTES["task static"])
variants = (scale_off, task_off)
switch_key = tuple(tuple(global_on[a] and per_block[b][i] for i, a in enumerate(ATTENTIONS)) for b in range(B))
all_on = compute.all_on_key(B)
setting = compute.describe_switches(switch_key, variants)
st.markdown(f"**Chosen setting:** {setting}")
constants = compute.knockout_constants(ctx.ref, ctx.model)
needs_constants = scale_off != "fixed-1" or task_off == "static"
if constants is not None and needs_constants:
    st.caption(f"Calibrated constants: {constants.describe()}.")
elif constants is None and needs_constants:
    st.warning("This model has no calibrated knock-out constants yet (the dataset means that the calibrated and "
               "static variants use). Compute them once on the chosen dataset's split (all attentions on, no "
               "detection head; saved beside the model file), or choose the fixed-1 and relu variants.")
    if st.button(f"Calibrate on {ctx.split}", key="sw_calibrate"):
        bar = st.progress(0.0, text="calibrating ...")
        try:
            root, _ = dataset_or_stop(ctx)
            compute.calibrate_constants(ctx.ref, ctx.model, root, ctx.split,
                                        progress=lambda d, t: bar.progress(d / t, text=f"{d} / {t} images"))
        except compute.BusyError as exc:
            st.info(str(exc).capitalize())
        bar.empty()
        st.rerun()
    if any(not all(t) for t in switch_key) and (
            any(not t[0] for t in switch_key) and scale_off != "fixed-1"
            or any(not t[2] for t in switch_key) and task_off == "static"):
        st.stop()


def _image_tab(image) -> None:
    upload_notice(ctx)
    threshold = st.slider("Score threshold", 0.05, 1.0, 0.3, 0.01, key="sw_threshold")
    ref = compute.inspect_cached(ctx.ref, ctx.model, image.key, image.array, all_on, image.name)
    other = ref if switch_key == all_on else compute.inspect_cached(ctx.ref, ctx.model, image.key, image.array,
                                                                   switch_key, image.name, variants=variants)
    names = ctx.class_names
    diff = match_detections(ref.detections.as_detections(), other.detections.as_detections(), 0.5, threshold, names)
    s = diff_summary(diff)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Boxes (all on)", s["reference"])
    m2.metric("Boxes (chosen)", s["other"], delta=s["other"] - s["reference"])
    m3.metric("Removed / added", f"{s['removed']} / {s['added']}")
    m4.metric("Mean |score change|", "-" if s["matched"] == 0 else f"{s['mean_abs_score_change']:.3f}")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(detections_figure(image.array, diff.ref.boxes.numpy(), diff.ref.scores.numpy(),
                                          diff.ref.labels.numpy(), names, title="All attentions on",
                                          highlight=set(diff.removed["index"]), height=380), key="sw_det_ref")
    with right:
        st.plotly_chart(detections_figure(image.array, diff.other.boxes.numpy(), diff.other.scores.numpy(),
                                          diff.other.labels.numpy(), names, title=setting,
                                          highlight=set(diff.added["index"]), height=380), key="sw_det_other")
    st.caption(f"Boxes scoring ≥ {threshold:.2f}, matched within a class by IoU ≥ 0.5. Dashed: removed "
               "(left) or added (right) by the chosen setting.")
    with st.expander("What changed (tables)"):
        st.markdown("**Matched**")
        st.dataframe(diff.matched.round(3), hide_index=True)
        st.markdown("**Removed** (only with all on)")
        st.dataframe(diff.removed.round(1), hide_index=True)
        st.markdown("**Added** (only with the chosen setting)")
        st.dataframe(diff.added.round(1), hide_index=True)
    c1, c2 = st.columns([1, 3])
    with c1:
        figure_downloads(lambda: plot_detection_pair(image.array, diff, "all attentions on", setting, names),
                         "detections_on_vs_chosen", key="sw_pair")
    with c2:
        csv_download(lambda: pd.concat([diff.matched.assign(status="matched"), diff.removed.assign(status="removed"),
                                        diff.added.assign(status="added")], ignore_index=True),
                     "detection_changes", key="sw_changes", notes=[f"{image.name}; all on vs {setting}; {KNOCKOUT_NOTE}"])

    st.markdown("#### Feature maps, all on vs chosen")
    f1, f2, f3 = st.columns([2, 1, 1])
    stage_names = ref.stages.stages
    stage = f1.selectbox("Stage", stage_names, index=len(stage_names) - 1, key="sw_stage")
    reduction = f2.selectbox("Reduction", ["mean_abs", "l2", "max", "pca"], key="sw_reduction")
    opacity = f3.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="sw_opacity")
    # Both runs' maps in one FeatureStages, so that one colour range per level covers both rows.
    rows = [f"all on: {stage}", f"chosen: {stage}"]
    pair = FeatureStages(image=image.array, stages=rows, maps={}, num_blocks=ref.stages.num_blocks,
                         resized_size=ref.resized_size, strides=ref.strides, channels=ref.stages.channels,
                         reduced={r: {rows[0]: ref.stages.reduced[r][stage], rows[1]: other.stages.reduced[r][stage]}
                                  for r in ref.stages.reduced})
    reduced = reduce_stages(pair, reduction, "per_level", which=rows)
    show_feature_grid(pair, reduced, rows, opacity)
    st.caption("Colour scale shared across the two rows, one range per level, so brightness compares between "
               "them: both rows are the same stage, and a knock-out that changes the magnitude (e.g. scale off at "
               "fixed-1) shows as a brighter or darker row, not only as a different pattern.")
    c1, c2 = st.columns([1, 3])
    with c1:
        figure_downloads(lambda: plot_feature_grid(pair, reduction, "per_level", rows=rows, opacity=opacity),
                         "feature_maps_on_vs_chosen", key="sw_maps_dl")
    with c2:
        csv_download(lambda: reduced_maps_table(reduced, rows), "feature_maps_on_vs_chosen", key="sw_maps_dl",
                     notes=[f"{image.name}; all on vs {setting}; reduction {reduction}; level cells (y, x); raw "
                            f"reduced values; the figure's {color_scale_note('per_level')}"])


tab_image, tab_table = st.tabs(["This image", "AP over the dataset"])

# ------------------------------------------------------------------------------------------------
with tab_image:
    if ctx.image is None:
        st.error(f"No usable image: {ctx.image_error}" if ctx.image_error else "No image chosen.")
    else:
        _image_tab(ctx.image)

# ------------------------------------------------------------------------------------------------
with tab_table:
    st.info("Inference-time knock-outs: " + KNOCKOUT_NOTE + ". COCO AP from pycocotools, in percent. Each image "
            "runs alone (batch size 1, the official test path, as `python -m analysis ablation` by default).")
    root, records = dataset_or_stop(ctx)
    a1, a2 = st.columns(2)
    n = int(a1.number_input(f"Images (first N of {len(records)})", 1, len(records), min(20, len(records)),
                            key="ab_n"))
    one_block = a2.checkbox(f"Also each attention off in one block ({3 * B} more settings)", False, key="ab_one")
    st.caption(f"Knock-out variants of this table (chosen above): scale off = {scale_off}, task off = {task_off}, "
               "spatial off = zero offsets and masks of 1. Each row names its variant.")
    df = compute.cached_ablation(ctx.ref, root, ctx.split, n, one_block, variants, ctx.model)
    if df is None and st.button("Compute the AP table", type="primary", key="ab_run"):
        settings = 8 + (3 * B if one_block else 0)
        bar = st.progress(0.0, text=f"0 / {settings} settings")
        try:
            df = compute.run_ablation(ctx.model, ctx.ref, root, ctx.split, n, one_block,
                                      progress=lambda d, t: bar.progress(d / t, text=f"{d} / {t} settings"),
                                      variants=variants)
        except compute.BusyError as exc:
            st.info(str(exc).capitalize())
            st.stop()
        except Exception as exc:  # noqa: BLE001 - dataset/category problems are shown, the app keeps running
            st.error(f"The AP table could not be computed: {exc}")
            st.stop()
        bar.empty()
    if df is None:
        st.caption(f"{8 + (3 * B if one_block else 0)} settings × {n} images; the result is kept on disk.")
    else:
        st.dataframe(df.round(2), hide_index=True, key="ab_table")
        st.plotly_chart(plotly_ablation(df), key="ab_chart")
        d1, d2 = st.columns([1.2, 2])
        with d1:
            figure_downloads(lambda: plot_ablation(df), "attention_knockouts_table1", pdf=True, key="ab_fig")
        with d2:
            csv_download(df, "attention_knockouts", key="ab_csv", notes=df.attrs.get("notes") or [KNOCKOUT_NOTE])

    retrained = compute.retrain_results()
    st.markdown("#### Retrained (the paper's Table 1 and Table 2 as the paper made them)")
    if retrained is None:
        st.caption("No retrained results found (looked in "
                   f"{', '.join(str(f) for f in compute.retrain_folders())}): `python -m analysis retrain --grid "
                   "table1 --data <root> --out runs/retrain` trains one model per row and seed (see docs/analysis.md).")
    else:
        from analysis.retrain import plot_table1, plot_table2, retrain_display, retrain_summary, seed_spread

        st.markdown("The knock-outs above switch an attention off in *one trained model*: they measure how much "
                    "that model relies on it (with the calibrated and static variants, its input-dependent "
                    "part). A retrained row trains a separate model *without* the attention (or with another "
                    "number of blocks) and evaluates it: it measures what the detector reaches without it, which "
                    "is what the paper's Tables 1 and 2 report. The paper's numbers are ResNet-50 on COCO; the "
                    "retrained ones are whatever model and data the runs used (below), so compare the order and "
                    "size of differences between rows, not the values.")
        st.caption(f"From {retrained.attrs.get('folder')}: " + " · ".join(dict.fromkeys(retrained.attrs.get("notes", []))))
        for grid, title, plot in (("table1", "Table 1: attentions built in (L scale, S spatial, C task; 6 blocks)",
                                   plot_table1), ("table2", "Table 2: number of blocks, all attentions", plot_table2)):
            if not (retrained.grid == grid).any():
                continue
            st.markdown(f"**{title}**")
            st.dataframe(retrain_display(retrained, grid), hide_index=True, key=f"rt_{grid}")
            st.caption("Spread: " + seed_spread(retrained, grid) + " (± and standard deviation: the sample "
                       "standard deviation over the row's seeds, n - 1). A difference between two rows smaller "
                       "than this spread is not a finding.")
            st.pyplot(plot(retrained), clear_figure=True)
            figure_downloads(lambda plot=plot: plot(retrained), f"retrained_{grid}", pdf=True, key=f"rt_fig_{grid}")
        main_iterations = int(retrained.iterations.max())
        for longer in compute.retrain_longer_runs(retrained.attrs["folder"]):
            its = int(longer.iterations.max())
            st.markdown(f"**The same recipe trained for {its} iterations** (instead of {main_iterations}; rows "
                        f"{', '.join(dict.fromkeys(longer.row))}): whether the order of the rows depends on the "
                        "training length.")
            for grid in dict.fromkeys(longer.grid):
                st.dataframe(retrain_display(longer, grid), hide_index=True, key=f"rt_long_{its}_{grid}")
        if df is not None and (retrained.grid == "table1").any():
            from analysis.retrain import beside_knockouts

            st.markdown("Table 1, side by side: retrained (mean over seeds), knocked out at inference (this "
                        "model, this table's variants), the paper's. The baseline is retrained as the ATSS head with "
                        "its own conv towers; its knock-out column is the DyHead with every attention off, another "
                        "network.")
            st.dataframe(beside_knockouts(retrained, df).round(2), hide_index=True, key="rt_beside")
        elif (retrained.grid == "table1").any():
            st.caption("Compute the AP table above to see this model's knock-outs beside the retrained rows.")
        csv_download(retrain_summary(retrained), "retrained_tables", key="rt_csv",
                     notes=list(dict.fromkeys(retrained.attrs.get("notes") or [])))
