"""The project's own demo dataset: coloured shapes of vastly different sizes in one cluttered image.

The paper motivates scale-aware attention with objects "with vastly different scales" co-existing in
one image (Dynamic Head, section 1). This generator makes exactly that case, deterministically from a
seed, in COCO layout, so that a small detector can be trained from scratch on a CPU and the analysis
figures have something real to show:

* six categories (circle, square, triangle, star, ring, cross), each drawn in its own hue family
  with jittered saturation and brightness, rotated at random (except the circle and the ring);
* object sizes log-uniform from about 10 px to 200 px, and every image mixes small and large ones
  (one object of 80 px or more and at least two of 24 px or less);
* textured backgrounds (colour gradient, noise, desaturated blobs and lines) and thin saturated
  distractor strokes that are not objects;
* partial occlusion: later objects are drawn over earlier ones, a placement is rejected if it would
  leave any earlier object less than half visible, and every box is the box of the *visible* pixels
  (`area` is the visible pixel count, as COCO's area is the mask area).

Layout written (the same as `dyhead.data.coco.resolve_split` reads)::

    OUT/train/000000.jpg ...     OUT/annotations/instances_train.json
    OUT/val/000000.jpg ...       OUT/annotations/instances_val.json

Images are JPEG, quality 92, 4:4:4 chroma, no optimisation pass, written with Pillow; all randomness
comes from `numpy.random.Generator(PCG64)` seeded per image from (seed, split, index), so the same
command gives the same bytes on any machine with the same Pillow build, and every image can be
regenerated alone.

Command line::

    python -m dyhead.data.demo --out data/demo --seed 0 --train 3000 --val 300 --size 384
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: (name, hue in [0, 1)) for every category; category ids are 1..6 in this order.
CATEGORIES: tuple[tuple[str, float], ...] = (
    ("circle", 0.00),  # red
    ("square", 0.60),  # blue
    ("triangle", 0.33),  # green
    ("star", 0.14),  # yellow/orange
    ("ring", 0.83),  # magenta
    ("cross", 0.50),  # cyan
)
CATEGORY_NAMES: tuple[str, ...] = tuple(name for name, _ in CATEGORIES)

JPEG_QUALITY = 92
#: Keys of the per-split seeds, so train and val never share an image.
_SPLIT_KEYS = {"train": 1, "val": 2, "samples": 3}


@dataclass(frozen=True)
class DemoSpec:
    """What one generated split looks like (all sizes in pixels)."""

    #: Longer image side; the shorter side is drawn from [0.83 * size, size] (384 -> 320..384).
    size: int = 384
    min_object: float = 10.0
    max_object: float = 200.0
    min_objects: int = 4
    max_objects: int = 9
    #: An earlier object must keep at least this fraction of its pixels visible.
    min_visible: float = 0.5
    #: Draw only these categories (names of `CATEGORIES`; their ids stay 1..6), e.g. a 3-class
    #: dataset for fine-tuning. Empty = all six (and the same bytes as before this option existed).
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        unknown = [c for c in self.classes if c not in CATEGORY_NAMES]
        if unknown or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names of {list(CATEGORY_NAMES)}, got {list(self.classes)}")

    @property
    def category_indices(self) -> tuple[int, ...]:
        """Indices into `CATEGORIES` that this spec draws."""
        return tuple(CATEGORY_NAMES.index(c) for c in self.classes) or tuple(range(len(CATEGORIES)))


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Gradient + low-frequency colour noise + desaturated blobs and lines + fine noise."""
    # Two-colour linear gradient in a random direction, desaturated.
    c0 = np.array(_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.35, 0.9)), np.float32)
    c1 = np.array(_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.35, 0.9)), np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle)) / max(width, height)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    # Low-frequency colour noise: a coarse random grid upsampled bilinearly.
    grid = rng.normal(0, 18, size=(height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
    coarse = Image.fromarray(np.clip(grid + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.BILINEAR
    )
    img += np.asarray(coarse, np.float32) - 128
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    # Desaturated clutter: blobs and lines of random size.
    for _ in range(int(rng.integers(15, 35))):
        color = _rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.95))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = float(np.exp(rng.uniform(np.log(3), np.log(60))))
        if rng.random() < 0.5:
            rx, ry = r, r * rng.uniform(0.3, 1.0)
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=color)
        else:
            x2, y2 = x + rng.normal(0, 2 * r), y + rng.normal(0, 2 * r)
            draw.line([x, y, x2, y2], fill=color, width=int(rng.integers(1, 6)))
    # Saturated distractor strokes (thin polylines in any hue) that are not objects.
    for _ in range(int(rng.integers(2, 7))):
        color = _rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
        pts = [(rng.uniform(0, width), rng.uniform(0, height))]
        for _ in range(int(rng.integers(2, 5))):
            px, py = pts[-1]
            pts.append((px + rng.normal(0, 30), py + rng.normal(0, 30)))
        draw.line(pts, fill=color, width=int(rng.integers(1, 3)))
    return canvas.filter(ImageFilter.GaussianBlur(radius=0.6))


def _polygon(cx: float, cy: float, radii: np.ndarray, angles: np.ndarray) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)]


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, size: float,
                rot: float, fill, outline) -> None:
    """Draw one object of nominal extent `size` (diameter) centred at (cx, cy).

    Called twice per object with the same arguments: on the image (colours) and on a mask (255).
    """
    r = size / 2.0
    line = max(1, int(round(size / 25)))
    if name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=line)
    elif name == "ring":
        width = max(2, int(round(r * 0.38)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=width)
    elif name == "square":
        angles = rot + np.pi / 4 + np.arange(4) * np.pi / 2
        draw.polygon(_polygon(cx, cy, np.full(4, r), angles), fill=fill, outline=outline)
    elif name == "triangle":
        angles = rot + np.arange(3) * 2 * np.pi / 3
        draw.polygon(_polygon(cx, cy, np.full(3, r), angles), fill=fill, outline=outline)
    elif name == "star":
        angles = rot + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        draw.polygon(_polygon(cx, cy, radii, angles), fill=fill, outline=outline)
    elif name == "cross":
        a, b = r, r * 0.33
        arms = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b),
                (-a, b), (-a, -b), (-b, -b)]
        c, s = math.cos(rot), math.sin(rot)
        pts = [(cx + x * c - y * s, cy + x * s + y * c) for x, y in arms]
        draw.polygon(pts, fill=fill, outline=outline)
    else:  # pragma: no cover - CATEGORIES is closed
        raise ValueError(f"unknown shape {name!r}")


def _object_sizes(rng: np.random.Generator, n: int, spec: DemoSpec, width: int, height: int) -> list[float]:
    """Log-uniform sizes with one large (>= 80 px) and two small (<= 24 px) objects guaranteed."""
    hi = min(spec.max_object, 0.6 * min(width, height))
    lo = spec.min_object
    sizes = [float(np.exp(rng.uniform(np.log(min(80.0, hi)), np.log(hi))))]
    sizes += [float(np.exp(rng.uniform(np.log(lo), np.log(max(lo, 24.0))))) for _ in range(2)]
    sizes += [float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) for _ in range(n - 3)]
    order = rng.permutation(len(sizes))  # draw large and small in random order (occlusion both ways)
    return [sizes[i] for i in order]


def generate_image(seed: int, split: str, index: int, spec: DemoSpec = DemoSpec()) -> tuple[Image.Image, list[dict]]:
    """One image and its annotations (boxes of visible pixels, xywh, category ids 1..6)."""
    key = _SPLIT_KEYS.get(split.removesuffix("2017"))
    if key is None:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_KEYS)} (optionally with 2017)")
    rng = np.random.default_rng([seed, key, index])
    width = int(spec.size) if rng.random() < 0.5 else int(rng.integers(int(0.83 * spec.size), spec.size + 1))
    height = int(rng.integers(int(0.83 * spec.size), spec.size + 1)) if width == spec.size else int(spec.size)
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    owner = np.zeros((height, width), np.int16)  # which object owns each pixel (0 = background)
    full_area: dict[int, int] = {}
    visible: dict[int, int] = {}
    placed: list[tuple[int, int]] = []  # (object id, category index)
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    for size in _object_sizes(rng, n, spec, width, height):
        drawn = spec.category_indices
        cat = drawn[int(rng.integers(len(drawn)))]
        name, hue = CATEGORIES[cat]
        rot = float(rng.uniform(0, 2 * math.pi))
        fill = _rgb(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
        outline = _rgb(hue, rng.uniform(0.3, 1.0), rng.uniform(0.15, 0.5))
        for _attempt in range(12):
            r = size / 2
            cx = float(rng.uniform(r * 0.7, width - r * 0.7))
            cy = float(rng.uniform(r * 0.7, height - r * 0.7))
            # Rasterise the shape's mask in a local window (fast: no full-size mask per object).
            x0, y0 = max(0, int(cx - r) - 3), max(0, int(cy - r) - 3)
            x1, y1 = min(width, int(cx + r) + 4), min(height, int(cy + r) + 4)
            mask_img = Image.new("L", (x1 - x0, y1 - y0), 0)
            _draw_shape(ImageDraw.Draw(mask_img), name, cx - x0, cy - y0, size, rot, 255, 255)
            mask = np.asarray(mask_img) > 127
            if mask.sum() < 12:
                continue
            window = owner[y0:y1, x0:x1]
            covered = np.bincount(window[mask].ravel(), minlength=len(placed) + 1)
            if any(
                visible[oid] - covered[oid] < spec.min_visible * full_area[oid]
                for oid in np.nonzero(covered[1:])[0] + 1
            ):
                continue  # would hide too much of an earlier object: try another place
            oid = len(placed) + 1
            for hidden in np.nonzero(covered[1:])[0] + 1:
                visible[hidden] -= int(covered[hidden])
            window[mask] = oid
            full_area[oid] = visible[oid] = int(mask.sum())
            placed.append((oid, cat))
            _draw_shape(draw, name, cx, cy, size, rot, fill, outline)
            break
    annotations = []
    for oid, cat in placed:
        ys, xs = np.nonzero(owner == oid)
        if xs.size == 0:
            continue
        x_min, y_min, x_max, y_max = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        annotations.append({
            "category_id": cat + 1,
            "bbox": [x_min, y_min, x_max - x_min, y_max - y_min],
            "area": int(xs.size),
            "iscrowd": 0,
        })
    # Mild sensor noise over everything, so that flat object interiors are not perfectly flat.
    arr = np.asarray(image, np.int16) + rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), annotations


def draw_example(name: str, size: int = 72) -> Image.Image:
    """One object of category `name`, as the generator draws it (its hue, mid saturation and
    brightness, a slight rotation), centred on a plain light background: a picture of the class."""
    hue = dict(CATEGORIES).get(name)
    if hue is None:
        raise ValueError(f"unknown demo category {name!r}; expected one of {list(CATEGORY_NAMES)}")
    image = Image.new("RGB", (size, size), (236, 236, 236))
    _draw_shape(ImageDraw.Draw(image), name, size / 2, size / 2, 0.8 * size, 0.3,
                _rgb(hue, 0.8, 0.85), _rgb(hue, 0.7, 0.35))
    return image


def save_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)


def _one(args: tuple) -> tuple[int, str, int, int, list[dict]]:
    seed, split, index, spec, image_dir = args
    image, anns = generate_image(seed, split, index, spec)
    file_name = f"{index:06d}.jpg"
    save_jpeg(image, Path(image_dir) / file_name)
    return index, file_name, image.width, image.height, anns


def coco_categories(spec: DemoSpec = DemoSpec()) -> list[dict]:
    return [{"id": i + 1, "name": CATEGORIES[i][0], "supercategory": "shape"} for i in spec.category_indices]


def generate_split(out: Path, split: str, count: int, seed: int = 0, spec: DemoSpec = DemoSpec(),
                   workers: int = 1) -> Path:
    """Write `count` images to OUT/<split>/ and OUT/annotations/instances_<split>.json."""
    out = Path(out)
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    jobs = [(seed, split, i, spec, str(image_dir)) for i in range(count)]
    if workers > 1:
        with Pool(workers) as pool:
            results = pool.map(_one, jobs, chunksize=16)
    else:
        results = [_one(job) for job in jobs]
    images, annotations = [], []
    for index, file_name, width, height, anns in sorted(results, key=lambda r: r[0]):
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    coco = {
        "info": {"description": f"DyHead Explorer demo shapes, split {split}, seed {seed}",
                 "version": "1", "generator": "dyhead.data.demo"},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(spec),
    }
    ann_file = out / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps(coco, indent=None, separators=(",", ":"), sort_keys=True))
    return ann_file


def generate(out: Path, seed: int = 0, train: int = 3000, val: int = 300, spec: DemoSpec = DemoSpec(),
             workers: int = 1) -> dict[str, Path]:
    """Generate both splits; returns {split: annotation file}."""
    files = {}
    for split, count in (("train", train), ("val", val)):
        if count > 0:
            files[split] = generate_split(out, split, count, seed=seed, spec=spec, workers=workers)
    return files


def generate_samples(out: Path, count: int = 6, seed: int = 0, spec: DemoSpec = DemoSpec()) -> list[Path]:
    """A few stand-alone sample images (their own seed key, never in train/val) for the app."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image, _ = generate_image(seed, "samples", i, spec)
        path = out / f"demo_sample_{i}.jpg"
        save_jpeg(image, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (COCO layout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=3000, help="number of training images")
    parser.add_argument("--val", type=int, default=300, help="number of validation images")
    parser.add_argument("--size", type=int, default=384, help="longer image side in pixels (320-512)")
    parser.add_argument("--samples", type=int, default=0, help="also write this many sample images to OUT/samples")
    parser.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    parser.add_argument("--classes", default="", help="comma-separated subset of the categories to draw "
                        f"(default all: {','.join(CATEGORY_NAMES)})")
    args = parser.parse_args(argv)
    if not 320 <= args.size <= 512:
        parser.error(f"--size must be between 320 and 512, got {args.size}")
    try:
        spec = DemoSpec(size=args.size, classes=tuple(c for c in args.classes.split(",") if c))
    except ValueError as exc:
        parser.error(str(exc))
    start = time.time()
    files = generate(args.out, seed=args.seed, train=args.train, val=args.val, spec=spec, workers=args.workers)
    if args.samples:
        generate_samples(args.out / "samples", args.samples, seed=args.seed, spec=spec)
    for split, path in files.items():
        data = json.loads(path.read_text())
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} boxes -> {path}")
    print(f"done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
