"""Names of the pyramid levels, and the paper's numbering of them.

Index 0 is the finest level, P3 (stride 8), as everywhere in `dyhead`. The paper's Figure 3 numbers
the levels the other way round: its "level 5" is the highest resolution (P3) and "level 1" the lowest
(P7), so paper level = L - index.
"""

from __future__ import annotations

__all__ = ["level_name", "level_stride", "level_label", "paper_level", "LEVEL_NOTE"]

LEVEL_NOTE = (
    "levels P3..P7 = strides 8..128 (index 0 = P3, finest); the paper numbers them the other way: "
    "its 'level 5' is P3 (highest resolution) and 'level 1' is P7"
)


def level_name(level: int) -> str:
    """0 -> 'P3', 4 -> 'P7'."""
    return f"P{level + 3}"


def level_stride(level: int) -> int:
    """0 -> 8, 4 -> 128."""
    return 8 * 2**level


def paper_level(level: int, num_levels: int = 5) -> int:
    """The paper's Figure 3 number: P3 -> 5, P7 -> 1 (for five levels)."""
    return num_levels - level


def level_label(level: int, num_levels: int = 5) -> str:
    """'P3 (stride 8, paper level 5)'."""
    return f"{level_name(level)} (stride {level_stride(level)}, paper level {paper_level(level, num_levels)})"
