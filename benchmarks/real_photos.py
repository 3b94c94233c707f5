"""Real photographs: a multi-label benchmark composed from the sample photos of scikit-image and scikit-learn.

Nothing is downloaded: the 20 sources are the photographs that ship inside the scikit-image
wheel (`skimage/data/*.png|jpg`: astronaut, brick, camera, cell, chelsea, clock_motion, coffee,
coins, grass, gravel, hubble_deep_field, ihc, moon, motorcycle_left, page, retina, rocket, text)
and scikit-learn (`load_sample_images`: china, flower). Needs `pip install -e ".[bench]"`
(scikit-image 0.26.0, pinned: its bundled files are the data) and scikit-learn.

Each source is cut into a 3x3 grid of regions, dealt out per source (seeded) as 5 regions for
train, 2 for val and 2 for test: every val/test tile comes from a part of the photo that no
training tile shows (a model must recognise the photo's content, not memorise its pixels).

An image is a 224x224 grid (2x2 or 3x3 cells, so tiles of 112 or ~75 pixels) showing K sources
(K = 1..4, P = 0.25, 0.35, 0.25, 0.15), drawn without replacement with a mild long tail (source
weights falling from 1 to 0.2); each source fills at least one cell, the other cells repeat one of
them. A tile is a heavy random crop of one of the split's regions of its source (8%..100% of the
region's area, aspect 3:4..4:3), resized to the cell, flipped half the time, with colour jitter
(brightness, contrast, saturation down to gray, per-channel gains; a grayscale source gets a tint
too) and turned gray 15% of the time. The labels are the sources shown. Textures (brick, grass,
gravel), documents (page, text) and microscopy (cell, ihc, retina) are look-alikes.

Output: OUT/{train,val,test}/NNNNN.jpg (JPEG quality 90), OUT/{train,val,test}.csv in graphfix's
manifest format (`path,labels`, `;`-separated names, paths relative to the CSV), OUT/labels.txt
and OUT/summary.json (counts per split and label). Seeded: the same arguments give the same files.

    python benchmarks/real_photos.py --out /tmp/photos                       # 600 / 300 / 600 images
    python benchmarks/real_photos.py --out /tmp/photos --n-train 1200 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

#: label -> (package, file inside the package's data folder)
SOURCES = {
    "astronaut": ("skimage", "astronaut.png"),
    "brick": ("skimage", "brick.png"),
    "camera": ("skimage", "camera.png"),
    "cell": ("skimage", "cell.png"),
    "chelsea": ("skimage", "chelsea.png"),
    "china": ("sklearn", "china.jpg"),
    "clock": ("skimage", "clock_motion.png"),
    "coffee": ("skimage", "coffee.png"),
    "coins": ("skimage", "coins.png"),
    "flower": ("sklearn", "flower.jpg"),
    "grass": ("skimage", "grass.png"),
    "gravel": ("skimage", "gravel.png"),
    "hubble": ("skimage", "hubble_deep_field.jpg"),
    "ihc": ("skimage", "ihc.png"),
    "moon": ("skimage", "moon.png"),
    "motorcycle": ("skimage", "motorcycle_left.png"),
    "page": ("skimage", "page.png"),
    "retina": ("skimage", "retina.jpg"),
    "rocket": ("skimage", "rocket.jpg"),
    "text": ("skimage", "text.png"),
}
LABELS = list(SOURCES)
SPLITS = {"train": 5, "val": 2, "test": 2}  # regions of each source's 3x3 grid per split
K_PROBS = (0.25, 0.35, 0.25, 0.15)  # P(K = 1..4 sources in an image)
SIZE = 224


def data_folder(package: str) -> Path:
    """The folder of bundled sample files of scikit-image (`skimage/data`) or scikit-learn."""
    if package == "skimage":
        import skimage

        return Path(skimage.__file__).parent / "data"
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


def load_sources() -> dict[str, np.ndarray]:
    """Every source photo as uint8 RGB [H, W, 3] (grayscale repeated, alpha dropped)."""
    from PIL import Image

    out = {}
    for name, (package, file) in SOURCES.items():
        path = data_folder(package) / file
        if not path.is_file():
            raise SystemExit(f"real_photos: {path}: not found (install scikit-image==0.26.0 and scikit-learn)")
        with Image.open(path) as img:
            out[name] = np.asarray(img.convert("RGB"))
    return out


def split_regions(shapes: dict[str, tuple[int, int]], seed: int) -> dict[str, dict[str, list[tuple[int, int, int, int]]]]:
    """Per split, per source: its regions (y0, y1, x0, x1) of the source's 3x3 grid (disjoint between splits)."""
    rng = np.random.default_rng(seed)
    regions: dict[str, dict[str, list]] = {s: {} for s in SPLITS}
    for name, (h, w) in shapes.items():
        ys, xs = np.linspace(0, h, 4).astype(int), np.linspace(0, w, 4).astype(int)
        cells = [(ys[r], ys[r + 1], xs[c], xs[c + 1]) for r in range(3) for c in range(3)]
        order = rng.permutation(len(cells))
        start = 0
        for split, count in SPLITS.items():
            regions[split][name] = [tuple(int(v) for v in cells[k]) for k in order[start:start + count]]
            start += count
    return regions


def random_tile(src: np.ndarray, region: tuple[int, int, int, int], size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A jittered crop of `region` of `src`, resized to `size` (H, W): uint8 [H, W, 3]."""
    from PIL import Image

    y0, y1, x0, x1 = region
    rh, rw = y1 - y0, x1 - x0
    area = rng.uniform(0.08, 1.0) * rh * rw
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(rh, max(8, round(np.sqrt(area / aspect)))))
    cw = int(min(rw, max(8, round(np.sqrt(area * aspect)))))
    top = y0 + int(rng.integers(0, rh - ch + 1))
    left = x0 + int(rng.integers(0, rw - cw + 1))
    crop = Image.fromarray(src[top:top + ch, left:left + cw]).resize((size[1], size[0]), Image.BILINEAR)
    tile = np.asarray(crop, np.float32)
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    gray = tile @ np.float32([0.299, 0.587, 0.114])
    if rng.random() < 0.15:  # gray now (a later tint can colour it again)
        tile = np.repeat(gray[..., None], 3, axis=2)
    else:  # saturation: mix with gray, 0 (gray) .. 1.6
        s = np.float32(rng.uniform(0.0, 1.6))
        tile = gray[..., None] + s * (tile - gray[..., None])
    tile = tile * np.float32(rng.uniform(0.6, 1.4))  # brightness
    mean = tile.mean()
    tile = mean + np.float32(rng.uniform(0.6, 1.4)) * (tile - mean)  # contrast
    tile = tile * rng.uniform(0.85, 1.15, 3).astype(np.float32)  # per-channel gains (a tint)
    return np.clip(np.rint(tile), 0, 255).astype(np.uint8)


def compose(sources: dict[str, np.ndarray], regions: dict[str, list], rng: np.random.Generator,
            weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 [SIZE, SIZE, 3]) and its labels (uint8 [len(LABELS)])."""
    k = int(rng.choice(len(K_PROBS), p=K_PROBS)) + 1
    chosen = rng.choice(len(LABELS), size=k, replace=False, p=weights)
    grid = 2 if rng.random() < 0.5 else 3
    cells = np.concatenate([chosen, rng.choice(chosen, size=grid * grid - k)])
    rng.shuffle(cells)
    edges = np.linspace(0, SIZE, grid + 1).astype(int)
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    for cell, j in enumerate(cells):
        r, c = divmod(cell, grid)
        name = LABELS[j]
        region = regions[name][int(rng.integers(len(regions[name])))]
        img[edges[r]:edges[r + 1], edges[c]:edges[c + 1]] = random_tile(
            sources[name], region, (edges[r + 1] - edges[r], edges[c + 1] - edges[c]), rng)
    y = np.zeros(len(LABELS), np.uint8)
    y[chosen] = 1
    return img, y


def generate(out: str | os.PathLike, *, n_train: int = 600, n_val: int = 300, n_test: int = 600, seed: int = 0,
             tail: float = 0.2) -> dict[str, str]:
    """Write the images, CSVs, labels.txt and summary.json; the paths (keys: train, val, test, labels)."""
    from PIL import Image

    out = Path(out)
    sources = load_sources()
    regions = split_regions({k: v.shape[:2] for k, v in sources.items()}, seed)
    weights = np.geomspace(1.0, tail, len(LABELS))
    weights /= weights.sum()
    paths = {"labels": str(out / "labels.txt")}
    summary: dict = {"seed": seed, "tail": tail, "labels": LABELS, "splits": {}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)  # written last: a set cut short is not reused by `ensure`
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    for k, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        rng = np.random.default_rng([seed, k])
        (out / split).mkdir(exist_ok=True)
        rows, ys = [], []
        for i in range(n):
            img, y = compose(sources, regions[split], rng, weights)
            name = f"{split}/{i:05d}.jpg"
            Image.fromarray(img).save(out / name, quality=90)
            rows.append(f"{name},{';'.join(LABELS[j] for j in np.flatnonzero(y))}")
            ys.append(y)
        (out / f"{split}.csv").write_text("path,labels\n" + "\n".join(rows) + "\n")
        paths[split] = str(out / f"{split}.csv")
        y = np.array(ys).reshape(n, len(LABELS))
        summary["splits"][split] = {"images": n, "labels_per_image": round(float(y.sum(1).mean()), 3),
                                    "positives": dict(zip(LABELS, y.sum(0).astype(int).tolist()))}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return paths


def ensure(out: str | os.PathLike, *, n_train: int = 600, n_val: int = 300, n_test: int = 600, seed: int = 0,
           tail: float = 0.2) -> dict[str, str]:
    """`generate`, unless `out` already holds the set of these arguments (its summary.json says so)."""
    out = Path(out)
    try:
        doc = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        doc = {}
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if doc.get("seed") == seed and doc.get("tail") == tail and \
            {k: v["images"] for k, v in doc.get("splits", {}).items()} == sizes:
        return {k: str(out / f"{k}.csv") for k in sizes} | {"labels": str(out / "labels.txt")}
    return generate(out, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, tail=tail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="real-photos", help="output folder (default ./real-photos)")
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tail", type=float, default=0.2, help="weight of the rarest source (the commonest: 1; default 0.2)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    paths = generate(args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, seed=args.seed, tail=args.tail)
    summary = json.loads(Path(args.out, "summary.json").read_text())
    for split, s in summary["splits"].items():
        few = min(s["positives"].values())
        print(f"{split}: {s['images']} images, {s['labels_per_image']} labels per image, fewest positives {few} "
              f"({paths[split]})")
    print(f"{len(LABELS)} labels; {time.perf_counter() - start:.1f} s; command: python benchmarks/real_photos.py --out "
          f"{args.out} --n-train {args.n_train} --n-val {args.n_val} --n-test {args.n_test} --seed {args.seed} --tail {args.tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
