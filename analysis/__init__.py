"""The paper's figures and tables computed from any DyHead model and any COCO-format dataset.

Modules return numbers (tensors, numpy arrays, pandas DataFrames) and draw figures (matplotlib for
files, plotly for the app); none of them imports Streamlit.

* `analysis.scale_ratios`  - learned scale ratios per level (Fig. 3)
* `analysis.feature_maps`  - feature maps before the head and after each block (Fig. 4)
* `analysis.ablation`      - attention on/off at inference (Table 1 analogue) and detection changes
* `analysis.efficiency`    - parameters, GMACs and latency against depth (Table 2)
* `analysis.coarser_modes` - the three readings of the coarser branch's offsets compared
* `analysis.sources`       - the bundled demo model and data, any checkpoint and COCO-format dataset

Command line: ``python -m analysis <command> --out DIR`` (see ``python -m analysis --help``).
"""
