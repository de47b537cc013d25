"""What a newcomer needs to know about the loaded model, said on the pages where it matters.

The bundled demo model knows only the project's generated shapes; on a photo it still answers with
one of them ("circle 0.39" on a cat). The image pages say so in one line while it is loaded, and a
note follows an uploaded image. The README's section on official releases is the one home of how to
load real weights; the Model & data page shows it (`readme_section`).
"""

from __future__ import annotations

import functools

import streamlit as st

from analysis.sources import REPO_ROOT

from .sidebar import UPLOAD_NOTE, AppContext

__all__ = ["demo_model_line", "demo_model_notice", "upload_notice", "readme_section", "OFFICIAL_SECTION"]

#: The README heading that says how to use the official releases.
OFFICIAL_SECTION = "Official weights and COCO"


def demo_model_line(class_names) -> str:
    names = ", ".join(class_names)
    return (f"**Demo model:** it knows {len(class_names)} shapes ({names}), trained on generated images, "
            "and finds nothing else; on a photo it still answers with one of them. Real photos need an "
            "official DyHead release.")


def demo_model_notice(ctx: AppContext) -> None:
    """One line on what the demo model knows, with a link to the official releases; nothing for
    other models."""
    if not (ctx.ready and ctx.demo_model):
        return
    st.info(demo_model_line(ctx.class_names), icon=":material/info:")
    st.page_link("views/model_data.py", label=f"{OFFICIAL_SECTION}: how to load an official release",
                 icon=":material/arrow_forward:")


def upload_notice(ctx: AppContext) -> None:
    """A short note under an uploaded image while the demo model is loaded."""
    if ctx.ready and ctx.demo_model and ctx.image is not None and ctx.image.uploaded:
        st.warning(UPLOAD_NOTE, icon=":material/photo_camera:")


@functools.lru_cache(maxsize=4)
def readme_section(heading: str) -> str:
    """The body of the README.md section `## heading` (up to the next `## `), "" when absent."""
    try:
        lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    body, inside = [], False
    for line in lines:
        if line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip() == heading
            continue
        if inside:
            body.append(line)
    return "\n".join(body).strip()
