"""Names of the pyramid levels, and the paper's numbering of them.

Index 0 is the finest level, P3 (stride 8), as everywhere in `dyhead`; a Faster R-CNN + DyHead model's
pyramid starts at P2 (stride 4): pass its `first_level` (``model.config.first_level`` or
`first_level_of(strides)`). The paper's Figure 3 numbers
the levels the other way round: its "level 5" is the highest resolution (P3) and "level 1" the lowest
(P7), so paper level = L - index.
"""

from __future__ import annotations

__all__ = ["level_name", "level_stride", "level_label", "paper_level", "first_level_of", "level_note", "LEVEL_NOTE"]


def level_note(first_level: int = 3, num_levels: int = 5) -> str:
    """What the level names mean, for captions and CSV notes: 'levels P3..P7 = strides 8..128 ...'."""
    first, last = f"P{first_level}", f"P{first_level + num_levels - 1}"
    return (f"levels {first}..{last} = strides {2 ** first_level}..{2 ** (first_level + num_levels - 1)} "
            f"(index 0 = {first}, finest); the paper numbers them the other way: its 'level {num_levels}' is "
            f"{first} (highest resolution) and 'level 1' is {last}")


#: The note of the P3..P7 pyramid (ATSS, RetinaNet); Faster R-CNN's P2..P6 uses `level_note(2)`.
LEVEL_NOTE = level_note()


def first_level_of(strides) -> int:
    """The pyramid index of level 0 for a model's strides: (8, ...) -> 3, (4, ...) -> 2."""
    return int(strides[0]).bit_length() - 1


def level_name(level: int, first_level: int = 3) -> str:
    """0 -> 'P3', 4 -> 'P7' (first_level 2: 0 -> 'P2')."""
    return f"P{level + first_level}"


def level_stride(level: int, first_level: int = 3) -> int:
    """0 -> 8, 4 -> 128 (first_level 2: 0 -> 4)."""
    return 2 ** (level + first_level)


def paper_level(level: int, num_levels: int = 5) -> int:
    """The paper's Figure 3 number: P3 -> 5, P7 -> 1 (for five levels)."""
    return num_levels - level


def level_label(level: int, num_levels: int = 5, first_level: int = 3) -> str:
    """'P3 (stride 8, paper level 5)'."""
    return (f"{level_name(level, first_level)} (stride {level_stride(level, first_level)}, "
            f"paper level {paper_level(level, num_levels)})")
