"""Small input widgets shared by several pages."""

from __future__ import annotations

import streamlit as st

__all__ = ["block_slider"]


def block_slider(label: str, num_blocks: int, key: str, container=None) -> int:
    """A 1-based block number, defaulting to the last block (a slider needs at least two blocks)."""
    container = container or st
    if num_blocks <= 1:
        container.caption(f"{label}: 1 (the only block)")
        return 1
    return int(container.slider(label, 1, num_blocks, num_blocks, key=key))
