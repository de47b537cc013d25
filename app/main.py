"""DyHead Explorer dashboard: the router.

    streamlit run app/main.py --server.fileWatcherType none --server.headless true   (./run.sh app)

Draws the shared sidebar (model, data, image; `app.sidebar`) and runs the chosen page from
`app/views/`. Runs on the GPU when there is one, on the CPU otherwise.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # `streamlit run` puts app/ on the path, not the repository root
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from app.sidebar import draw_sidebar  # noqa: E402

st.set_page_config(page_title="DyHead Explorer", page_icon=":material/visibility:", layout="wide")

PAGES = [
    st.Page("views/detect.py", title="Detect", icon=":material/center_focus_strong:", default=True),
    st.Page("views/inside_head.py", title="Inside the head", icon=":material/layers:"),
    st.Page("views/scale_ratios.py", title="Scale ratios", icon=":material/bar_chart:"),
    st.Page("views/attention_switches.py", title="Attention on/off", icon=":material/toggle_on:"),
    st.Page("views/internals.py", title="Internals over a dataset", icon=":material/query_stats:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("views/efficiency.py", title="Efficiency", icon=":material/speed:"),
    st.Page("views/how_it_works.py", title="How it works", icon=":material/school:"),
    st.Page("views/model_data.py", title="Model & data", icon=":material/info:"),
]

page = st.navigation(PAGES)
try:
    draw_sidebar()
    page.run()
except Exception as exc:  # noqa: BLE001 - one failing view must not take the app down with a traceback
    # (Streamlit's stop/rerun signals are BaseExceptions and pass through.)
    logging.getLogger("dyhead.app").exception("page %r failed", page.title)
    st.error(f"This page stopped: {type(exc).__name__}: {exc}")
    st.info("The other pages keep working; the full error is in the server log.")
