"""Compare: two models side by side on the current image (a second checkpoint, or this one under another
coarser-branch mode or attention switches): detections, feature maps on one colour scale, scale weights,
and the AP of both on a dataset."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.compare import Side, compare_ap, compare_detections, pair_maps, plot_compare_maps, run_side
from analysis.detection_diff import diff_summary, match_detections, plot_detection_pair, plotly_detection_pair
from analysis.sources import SourceError
from app import compute, dataset_views
from app.downloads import csv_download, figure_downloads
from app.sidebar import COARSER_CHOICES, dataset_or_stop, require_image, require_model

st.title("Compare")
st.caption("Model A is the sidebar's model; model B is another checkpoint, or the same one run with another "
           "coarser-branch mode or with attentions off. Both run on the same image; boxes are matched within a "
           "class by IoU ≥ 0.5.")
ctx = require_model()
image = require_image(ctx)
c1, c2 = st.columns([2, 1])
path_b = c1.text_input("Checkpoint B", value=str(ctx.checkpoint), key="cmp_ckpt")
labels = list(COARSER_CHOICES)
mode_b_label = c2.selectbox("B: coarser-branch mode", labels, index=labels.index("upsample first (no mismatch)"),
                            key="cmp_coarser")
t1, t2, t3 = st.columns(3)
off = {a for a, col in zip(("scale", "spatial", "task"), (t1, t2, t3))
       if not col.toggle(f"B: {a} attention", True, key=f"cmp_{a}")}
try:
    ref_b, model_b = dataset_views.model_b(path_b, ctx.ref.device, COARSER_CHOICES[mode_b_label])
except ValueError as exc:
    st.error(str(exc))
    st.stop()
if model_b.config.num_classes != ctx.model.config.num_classes:
    st.error("Model B predicts other classes than model A: boxes can't be matched.")
    st.stop()
key_a = compute.all_on_key(ctx.num_blocks)
key_b = tuple((("scale" not in off), ("spatial" not in off), ("task" not in off)) for _ in range(model_b.config.tower.num_blocks))
res_a = compute.inspect_cached(ctx.ref, ctx.model, image.key, image.array, key_a, image.name)
res_b = compute.inspect_cached(ref_b, model_b, image.key, image.array, key_b, image.name)
label_a = f"A: {ctx.checkpoint.name}, coarser {ctx.coarser or ctx.model.config.tower.coarser_branch.value}"
label_b = (f"B: {ref_b.path.rsplit('/', 1)[-1]}, coarser {ref_b.coarser or model_b.config.tower.coarser_branch.value}"
           + (f", {compute.describe_switches(key_b)}" if off else ""))
st.markdown(f"**{label_a}** · **{label_b}**")

st.subheader("Detections")
threshold = st.slider("Score threshold", 0.05, 1.0, 0.3, 0.01, key="cmp_threshold")
names = ctx.class_names
diff = match_detections(res_a.detections.as_detections(), res_b.detections.as_detections(), 0.5, threshold, names)
s = diff_summary(diff)
m1, m2, m3 = st.columns(3)
m1.metric("Matched", s["matched"])
m2.metric("Only A", s["removed"])
m3.metric("Only B", s["added"])
st.plotly_chart(plotly_detection_pair(image.array, diff, "A", "B", names), key="cmp_pair")
e1, e2 = st.columns([1, 3])
with e1:
    figure_downloads(lambda: plot_detection_pair(image.array, diff, "A", "B", names), "compare_detections",
                     key="cmp_det_dl")
with e2:
    csv_download(lambda: pd.concat([diff.matched.assign(status="matched"),
                                   diff.removed.assign(status="only A"),
                                   diff.added.assign(status="only B")], ignore_index=True),
                 "compare_detections", key="cmp_det_csv", notes=[f"{image.name}; {label_a}; {label_b}"])

st.subheader("Feature maps on one colour scale")
pair = pair_maps(res_a.stages, res_b.stages)
st.pyplot(plot_compare_maps(pair, "A", "B"), clear_figure=True)
st.caption("Mean |x| over channels; each (stage, level) has one colour range covering both models' maps, so "
           "brighter means larger in either model.")
st.dataframe(pair.table.round(4), hide_index=True, key="cmp_maps")
f1, f2 = st.columns([1, 3])
with f1:
    figure_downloads(lambda: plot_compare_maps(pair, "A", "B"), "compare_feature_maps", key="cmp_maps_dl")
with f2:
    csv_download(pair.table, "compare_feature_maps", key="cmp_maps_csv", notes=[f"{image.name}; {label_a}; {label_b}"])

st.subheader("Scale weights of this image")
wa = res_a.weights.assign(model="A")
wb = res_b.weights.assign(model="B")
w = pd.concat([wa, wb], ignore_index=True)
if len(w):
    piv = w.pivot_table(index=["block", "level_name", "source_name"], columns="model", values="weight").reset_index()
    piv["block"] += 1
    st.dataframe(piv.round(4), hide_index=True, key="cmp_weights")
    csv_download(piv, "compare_scale_weights", key="cmp_w_csv", notes=[f"{image.name}; {label_a}; {label_b}"])
else:
    st.info("Neither model records scale weights here (scale attention off).")

st.subheader("AP on the dataset")
root, records = dataset_or_stop(ctx)
n = int(st.number_input(f"Images (first N of {len(records)})", 1, len(records), min(20, len(records)), key="cmp_n"))
token = (ctx.ref.key, ref_b.key, key_b, str(root), ctx.split, n)
if st.button("Compute the AP of both", key="cmp_ap_run"):
    sw_b = compute.switches_from_key(key_b, constants=compute.knockout_constants(ref_b, model_b))
    a = Side(ctx.model, label_a, None, ctx.ref.coarser)
    b = Side(model_b, label_b, sw_b, ref_b.coarser)
    with st.spinner(f"Two passes over {n} images ..."):
        try:
            recs = records[:n]
            pa, pb = run_side(a, recs), run_side(b, recs)
            st.session_state["cmp_ap"] = (token, compare_ap([a, b], [pa, pb], root, ctx.split),
                                          compare_detections(pa, pb, recs, names, threshold))
        except (SourceError, ValueError, OSError) as exc:
            st.error(f"The AP pass stopped: {exc}")
stored = st.session_state.get("cmp_ap")
if stored and stored[0] == token:
    st.dataframe(stored[1].round(2), hide_index=True, key="cmp_ap_table")
    counts = stored[2].status.value_counts()
    st.caption(f"AP in percent (COCOeval) on the first {n} images; boxes over them: {int(counts.get('matched', 0))} "
               f"matched, {int(counts.get('only A', 0))} only A, {int(counts.get('only B', 0))} only B.")
    csv_download(stored[1], "compare_ap", key="cmp_ap_csv", notes=[f"{label_a}; {label_b}; AP in percent"])
