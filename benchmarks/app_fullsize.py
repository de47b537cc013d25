"""The dashboard at the official size: a random checkpoint in the official ATSS R50 layout (412 keys,
256 channels, 6 blocks) and an 800x1333 photo-sized image, served by the real Streamlit server and
driven in headless Chromium. Everything is measured in one run, as ratios to one plain prediction:

* unit: one `model.predict` of the image in this process (median of --repeats, after a warm-up);
* Inside the head, first render: from handing the upload to the page until its maps are drawn;
* a switch toggle on Attention on/off (spatial attention off in every block): one new setting;
* the server's peak resident memory (VmHWM) over the whole browser session;
* optionally the same on an earlier revision of this repository (--before REV, a git worktree), so
  that a before/after table comes from the same machine and the same run;
* bfloat16 autocast on the CPU (`precision="bfloat16"`): its speed and its difference to float32.

    python -m benchmarks.app_fullsize                       # 1 thread, the current tree
    python -m benchmarks.app_fullsize --before 5335771      # and an earlier revision, same run

The manifest of the release's keys comes from the conformance kit (../shared/conformance); without
it the same layout is built from the `atss_r50_dyhead6` preset and the official key map.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, serve_app, settle  # noqa: E402

MANIFEST = REPO.parent / "shared" / "conformance" / "official_atss_r50_dyhead_keys.json"


def make_checkpoint(out: Path) -> Path:
    """A file with exactly the release's keys and shapes (random values)."""
    import torch

    from dyhead.weights.manifest import save_random_release

    if MANIFEST.is_file():
        return save_random_release(MANIFEST, out)
    from dyhead.detector import PRESETS, build_detector
    from dyhead.weights import official_key_map

    torch.manual_seed(0)
    model = build_detector(PRESETS["atss_r50_dyhead6"])
    names = official_key_map(model)
    torch.save({"model": {names[k]: v for k, v in model.state_dict().items()}}, out)
    return out


def make_image(out: Path, height: int = 800, width: int = 1333) -> Path:
    """A smooth random photo-sized image (the content does not matter to random weights)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(out)
    return out


def unit_and_bf16(ckpt: Path, image_path: Path, repeats: int, bf16: bool = True) -> dict:
    """Median seconds of one plain predict, and of a bfloat16 one, with the bfloat16 differences."""
    import torch

    from dyhead.preprocess import load_image
    from dyhead.trace import TraceSpec
    from dyhead.weights import load_detector

    model, _ = load_detector(ckpt)
    image = load_image(image_path)
    model.predict([image])  # warm-up

    def median(fn, clock=time.perf_counter) -> float:
        times = []
        for _ in range(repeats):
            start = clock()
            fn()
            times.append(clock() - start)
        return statistics.median(times)

    cpu_times = []

    def timed_predict():
        start = time.process_time()
        model.predict([image])
        cpu_times.append(time.process_time() - start)

    unit = median(timed_predict)
    out = {"unit_s": unit, "unit_cpu_s": statistics.median(cpu_times)}
    if bf16:
        bf16 = median(lambda: model.infer([image], precision="bfloat16"))
        spec = TraceSpec(outputs=(model.config.tower.num_blocks - 1,))
        a = model.infer([image], trace=spec)
        b = model.infer([image], trace=spec, precision="bfloat16")
        fa = torch.cat([lt.output.flatten() for lt in a.trace.blocks[-1].levels])
        fb = torch.cat([lt.output.float().flatten() for lt in b.trace.blocks[-1].levels])
        from analysis.detection_diff import diff_summary, match_detections

        diff = diff_summary(match_detections(a.detections[0], b.detections[0], 0.5, 0.0, model.config.class_names))
        out.update(bf16_s=bf16, bf16_rel_max=float((fa - fb).abs().max() / fa.abs().max()),
                   bf16_rel_mean=float((fa - fb).abs().mean() / fa.abs().mean()), bf16_dets=diff,
                   cpu=torch.backends.cpu.get_cpu_capability())
    return out


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used: with one thread this is its work, whatever
    else loads the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve_and_measure(tree: Path, ckpt: Path, image_path: Path, threads: int) -> dict:
    """Start the app of `tree` on `ckpt`, upload the image on Inside the head, toggle spatial attention
    on Attention on/off; seconds of each and the server's peak RSS."""
    from playwright.sync_api import sync_playwright

    env = {"DYHEAD_APP_CHECKPOINT": str(ckpt), "DYHEAD_APP_CACHE": tempfile.mkdtemp(prefix="dyhead_fs_"),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(tree)}
    out = {}

    def wait(page) -> None:  # the rerun an action started, until it is done (no extra time counted)
        settle(page, timeout_s=900, appear_s=3.0, quiet_s=0.3, after_ms=0)

    with serve_app(env, cwd=tree, start_timeout_s=300) as (url, proc), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        start = time.perf_counter()
        page.goto(f"{url}/inside_head")
        page.locator("h1", has_text="Inside the head").wait_for(timeout=900_000)
        wait(page)
        out["open + model load + sample image_s"] = time.perf_counter() - start
        page.get_by_text("Upload", exact=True).click()
        wait(page)
        start, cpu = time.perf_counter(), _cpu_s(proc.pid)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(image_path))
        wait(page)
        page.locator('[data-testid="stImage"] img').first.wait_for(timeout=900_000)
        out["inside_first_s"] = time.perf_counter() - start
        out["inside_first_cpu_s"] = _cpu_s(proc.pid) - cpu
        errors = page.locator('[data-testid="stException"]').count()
        page.get_by_role("link", name="Attention on/off").click()
        page.locator("h1", has_text="Attention on/off").wait_for(timeout=900_000)
        wait(page)
        start, cpu = time.perf_counter(), _cpu_s(proc.pid)
        page.get_by_text("Spatial-aware (S)").click()
        wait(page)
        out["toggle_s"] = time.perf_counter() - start
        out["toggle_cpu_s"] = _cpu_s(proc.pid) - cpu
        errors += page.locator('[data-testid="stException"]').count()
        out["errors"] = errors
        browser.close()
        out["peak_rss_mb"] = _peak_rss_mb(proc.pid)
    return out


def worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="dyhead_before_")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the bundled demo model and samples are tracked; the checkpoint under test is passed by path
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads here and in the server (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the plain prediction (median)")
    parser.add_argument("--before", default=None, help="also measure this git revision (worktree), same run")
    parser.add_argument("--no-browser", action="store_true", help="only the in-process unit and bfloat16 rows")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="dyhead_fullsize_"))
    ckpt = make_checkpoint(tmp / "atss_r50_random.pth")
    image_path = make_image(tmp / "photo_800x1333.png")
    from benchmarks.common import describe_machine

    print(describe_machine(torch.device("cpu"), args.threads))
    print(f"checkpoint: official ATSS R50 layout, random weights ({ckpt.stat().st_size / 2**20:.0f} MB); "
          f"image 800x1333 (resized to 800x1333, padded to 896x1408)")
    unit = unit_and_bf16(ckpt, image_path, args.repeats)
    u = unit["unit_s"]
    print(f"unit: one plain predict {u:.2f} s (median of {args.repeats})")
    if "bf16_s" in unit:
        d = unit["bf16_dets"]
        print(f"bfloat16 autocast (CPU {unit['cpu']}): {unit['bf16_s']:.2f} s = {unit['bf16_s'] / u:.2f}x; last block "
              f"output max |diff| / max |x| {unit['bf16_rel_max']:.3g}, mean |diff| / mean |x| {unit['bf16_rel_mean']:.3g}; "
              f"detections (all kept) {d['reference']} vs {d['other']}, {d['matched']} matched at IoU 0.5")
    if args.no_browser or not Path(CHROMIUM).exists():
        return
    trees = [("after (this tree)", REPO)]
    if args.before:
        trees.insert(0, (f"before ({args.before})", worktree(args.before)))
    rows = []
    try:
        _measure_trees(trees, rows, ckpt, image_path, args)
    finally:
        for label, tree in trees:
            if tree != REPO:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _print_table(rows)


def _measure_trees(trees, rows, ckpt, image_path, args) -> None:
    for label, tree in trees:
        # the unit again right before and after each server run: on a shared machine the load moves,
        # and each tree's ratios use the mean of the predictions around its own run
        first = unit_and_bf16(ckpt, image_path, args.repeats, bf16=False)
        r = serve_and_measure(tree, ckpt, image_path, args.threads)
        last = unit_and_bf16(ckpt, image_path, args.repeats, bf16=False)
        r["unit_s"] = (first["unit_s"] + last["unit_s"]) / 2
        r["unit_cpu_s"] = (first["unit_cpu_s"] + last["unit_cpu_s"]) / 2
        rows.append((label, r))
        u, uc = r["unit_s"], r["unit_cpu_s"]
        print(f"{label}: unit {first['unit_s']:.2f} s before, {last['unit_s']:.2f} s after the run ({uc:.2f} CPU s); "
              f"Inside the head first render {r['inside_first_s']:.1f} s = {r['inside_first_s'] / u:.2f}x "
              f"({r['inside_first_cpu_s'] / uc:.2f}x in CPU time); switch toggle {r['toggle_s']:.1f} s = "
              f"{r['toggle_s'] / u:.2f}x ({r['toggle_cpu_s'] / uc:.2f}x in CPU time); server peak RSS "
              f"{r['peak_rss_mb'] / 1024:.2f} GB; exceptions: {r['errors']}")


def _print_table(rows) -> None:
    print()
    print("Ratios to one plain predict of the same image, in wall time (machine load moves it) and in CPU "
          "seconds of the server process (1 thread: its own work, robust to load).")
    print()
    print("| tree | one plain predict (unit) | Inside the head, first render | switch toggle | server peak RSS |")
    print("|---|---|---|---|---|")
    for label, r in rows:
        u, uc = r["unit_s"], r["unit_cpu_s"]
        print(f"| {label} | {u:.2f} s ({uc:.2f} CPU s) | {r['inside_first_s']:.1f} s ({r['inside_first_s'] / u:.2f}x; "
              f"CPU {r['inside_first_cpu_s'] / uc:.2f}x) | {r['toggle_s']:.1f} s ({r['toggle_s'] / u:.2f}x; CPU "
              f"{r['toggle_cpu_s'] / uc:.2f}x) | {r['peak_rss_mb'] / 1024:.2f} GB |")


if __name__ == "__main__":
    main()
