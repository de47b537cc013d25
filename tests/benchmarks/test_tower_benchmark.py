"""The tower benchmark's harness on a tiny case: it times reference, ours and both floors, and the
floors are the tower's own convolutions."""

from __future__ import annotations

import argparse

import torch

from benchmarks import tower as bench


def test_tiny_case_reports_both_floors_and_a_small_difference(capsys):
    args = argparse.Namespace(repeats=1, bf16=False)
    rows: list = []
    sizes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    ours_floor, ours_floor_cl, ours_ref, diff = bench._run_case(
        args, torch.device("cpu"), 2, 16, sizes, 2, rows, "tiny", 1)
    labels = [row[2] for row in rows]
    assert labels == [bench.REFERENCE, bench.OURS, bench.FLOOR, bench.FLOOR_CL]
    assert diff < 1e-4  # ours computes what the reference computes
    assert all(r > 0 for r in (ours_floor, ours_floor_cl, ours_ref))
    by_label = {row[2]: row for row in rows}
    assert by_label[bench.OURS][5] == ours_floor  # the "/ floor" column is ours over the NCHW floor


def test_floor_runs_the_towers_convolution_shapes(monkeypatch):
    tower = bench.make_tower(1, 16, torch.device("cpu"))
    feats = bench.make_features([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], 1, 16, torch.device("cpu"))
    shapes = []
    real = torch.nn.functional.conv2d

    def record(x, w, b=None, stride=1, padding=0):
        out = real(x, w, b, stride=stride, padding=padding)
        shapes.append((tuple(w.shape), stride, tuple(out.shape[-2:])))
        return out

    monkeypatch.setattr(bench.F, "conv2d", record)
    bench.floor_convs(tower, feats)
    # per level: the offset conv (27 outputs) and the same-level conv; the stride-2 conv from the
    # finer level at levels 1-4; the coarser level's conv (at its own size) at levels 0-3
    assert len(shapes) == 5 * 2 + 4 + 4
    assert sum(1 for w, s, _ in shapes if w[0] == 27) == 5
    assert sum(1 for w, s, _ in shapes if s == 2) == 4
