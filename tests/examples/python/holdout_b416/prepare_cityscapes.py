# ruff: noqa
# Hold-out batch 416 (family-focused 5/6, road-scene segmentation). Measured once in session 17 (round 113): 6/30 (20%) at medium+.
"""Offline preprocessing for Cityscapes.

1. Rasterise gtFine polygon annotations (``*_gtFine_polygons.json``) into
   ``*_gtFine_labelTrainIds.png``.
2. Optionally write a rescaled copy of the dataset (images + labels) to ``--out-root``.
3. Store per-image class presence (``class_presence_<split>.npy``) used by the
   repeat-factor sampler; rows follow the dataset's sorted city/frame order.

Usage:
    python prepare_cityscapes.py --root /datasets/cityscapes --splits train val --workers 16
    python prepare_cityscapes.py --root /datasets/cityscapes --out-root /datasets/cs_half --scale 0.5
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from data import LABELS, NUM_CLASSES, build_label_lut

log = logging.getLogger("prepare")

NAME_TO_ID = {lab.name: lab.id for lab in LABELS}

Job = Tuple[str, str, str, str, float, float]


def resolve_label_id(name: str) -> Optional[int]:
    """Map a polygon label name to its labelId; '*group' labels fall back to the base class."""
    if name not in NAME_TO_ID and name.endswith("group"):
        name = name[: -len("group")]
    return NAME_TO_ID.get(name)


def polygon_area(points: Sequence[Tuple[float, float]]) -> float:
    xs = np.asarray([p[0] for p in points], dtype=np.float64)
    ys = np.asarray([p[1] for p in points], dtype=np.float64)
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def rasterize_polygons(json_path: str, min_area: float = 0.0) -> np.ndarray:
    """Draw polygons in annotation order (later objects occlude earlier ones)."""
    with open(json_path) as fh:
        ann = json.load(fh)
    width, height = int(ann["imgWidth"]), int(ann["imgHeight"])
    canvas = Image.new("L", (width, height), NAME_TO_ID["unlabeled"])
    draw = ImageDraw.Draw(canvas)
    for obj in reversed(ann["objects"]):  # todoruleid: family 6 (missed)
        if obj.get("deleted"):
            continue
        label_id = resolve_label_id(obj["label"])
        if label_id is None:
            log.warning("%s: unknown label %r", os.path.basename(json_path), obj["label"])
            continue
        if label_id < 0:
            continue
        pts = [(float(x), float(y)) for x, y in obj["polygon"]]
        if len(pts) < 3:
            continue
        if polygon_area(pts) < min_area:  # todoruleid: family 6 (missed)
            continue
        draw.polygon(pts, fill=label_id)
    return np.asarray(canvas, dtype=np.uint8)


def process_frame(job: Job) -> np.ndarray:
    json_path, img_path, out_lbl, out_img, scale, min_area = job
    lut = build_label_lut()
    train_ids = lut[rasterize_polygons(json_path, min_area)]
    label = Image.fromarray(train_ids, mode="L")
    os.makedirs(os.path.dirname(out_lbl), exist_ok=True)
    if scale != 1.0:
        img = Image.open(img_path).convert("RGB")
        size = (int(round(img.width * scale)), int(round(img.height * scale)))
        os.makedirs(os.path.dirname(out_img), exist_ok=True)
        img.resize(size, Image.BILINEAR).save(out_img)
        label = label.resize(size, Image.BILINEAR)  # ruleid: MLS309
    elif os.path.abspath(out_img) != os.path.abspath(img_path) and not os.path.exists(out_img):
        os.makedirs(os.path.dirname(out_img), exist_ok=True)
        os.symlink(os.path.abspath(img_path), out_img)
    label.save(out_lbl)
    ids = np.unique(np.asarray(label))
    present = np.zeros(NUM_CLASSES, dtype=bool)
    present[ids[ids < NUM_CLASSES]] = True
    return present


def collect_jobs(root: str, out_root: str, split: str, scale: float, min_area: float) -> List[Job]:
    img_root = os.path.join(root, "leftImg8bit", split)
    ann_root = os.path.join(root, "gtFine", split)
    jobs: List[Job] = []
    for city in sorted(os.listdir(img_root)):
        for fname in sorted(os.listdir(os.path.join(img_root, city))):
            if not fname.endswith("_leftImg8bit.png"):
                continue
            stem = fname[: -len("_leftImg8bit.png")]
            json_path = os.path.join(ann_root, city, f"{stem}_gtFine_polygons.json")
            if not os.path.isfile(json_path):
                raise FileNotFoundError(json_path)
            jobs.append((
                json_path,
                os.path.join(img_root, city, fname),
                os.path.join(out_root, "gtFine", split, city, f"{stem}_gtFine_labelTrainIds.png"),
                os.path.join(out_root, "leftImg8bit", split, city, fname),
                scale,
                min_area,
            ))
    return jobs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--out-root", default=None, help="defaults to --root (in-place)")
    p.add_argument("--splits", nargs="+", default=["train", "val"])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--min-polygon-area", type=float, default=256.0,
                   help="skip degenerate sliver polygons smaller than this (pixels)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 4)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    out_root = args.out_root or args.root
    for split in args.splits:
        jobs = collect_jobs(args.root, out_root, split, args.scale, args.min_polygon_area)
        log.info("%s: %d frames", split, len(jobs))
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            presence = np.stack(list(pool.map(process_frame, jobs, chunksize=8)))
        out = os.path.join(out_root, f"class_presence_{split}.npy")
        np.save(out, presence)
        freq = presence.mean(axis=0)
        log.info("%s: wrote %s; rarest classes %s", split, out,
                 ", ".join(f"{i}:{freq[i]:.3f}" for i in np.argsort(freq)[:5]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
