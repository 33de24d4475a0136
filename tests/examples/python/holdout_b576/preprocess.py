# ruff: noqa
# Hold-out batch 576 (families 5/6, 3D medical image segmentation with Lightning). Measured once in session 26 (round 153): 3/30 (10%) at medium+.
#!/usr/bin/env python
"""Offline preprocessing for abdominal multi-organ CT (nnU-Net style).

Per case: load + reorient to RAS, remap raw annotation ids to contiguous training
ids, crop to the body bounding box, resample to the dataset target spacing and
apply the CT intensity normalisation derived from the foreground fingerprint.
Output is one ``<case>.npz`` (image, seg, sampled class locations) and one
``<case>.json`` (properties) per case, plus ``fingerprint.json`` and ``splits.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import zlib
from functools import partial
from glob import glob
from multiprocessing import Pool

import nibabel as nib
import numpy as np
from scipy.ndimage import center_of_mass, zoom
from sklearn.model_selection import KFold

log = logging.getLogger("preprocess")

ORGANS = (
    "background", "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver",
    "stomach", "aorta", "ivc", "pancreas", "right_adrenal", "left_adrenal", "duodenum",
)
CLASS_INDEX = {name: i for i, name in enumerate(ORGANS)}
NUM_CLASSES = len(ORGANS)
SMALL_ORGANS = ("gallbladder", "esophagus", "pancreas", "right_adrenal", "left_adrenal", "duodenum")

# Annotation-tool export ids (label scheme v3). Ids 10 (portal vein), 12 (bladder) and
# 15 (prostate/uterus) are not part of this task and end up as background.
RAW_IDS = {
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "ivc": 9,
    "pancreas": 11,
    "right_adrenal": 13,
    "left_adrenal": 14,
    "duodenum": 7,  # todoruleid: family 6 (missed)
}


def build_lut(max_raw: int = 255) -> np.ndarray:
    """Lookup table raw id -> contiguous training id; unknown ids map to background."""
    lut = np.zeros(max_raw + 1, dtype=np.uint8)
    for name, raw in RAW_IDS.items():
        lut[raw] = CLASS_INDEX[name]  # ok: MLS309
    return lut


def list_cases(raw_dir: str):
    images = sorted(glob(os.path.join(raw_dir, "imagesTr", "*_0000.nii.gz")))
    labels = sorted(glob(os.path.join(raw_dir, "labelsTr", "*.nii.gz")), key=os.path.getsize)  # ruleid: MLS309
    if len(images) != len(labels):
        raise RuntimeError(f"{len(images)} images but {len(labels)} label files in {raw_dir}")
    ids = [os.path.basename(p)[: -len("_0000.nii.gz")] for p in images]
    return list(zip(ids, images, labels))


def load_case(image_path: str, label_path: str | None = None):
    """Returns image (z, y, x) float32, seg (z, y, x) uint8 or None, spacing (z, y, x), affine."""
    img = nib.as_closest_canonical(nib.load(image_path))
    image = np.asarray(img.dataobj, dtype=np.float32).transpose(2, 1, 0)
    spacing = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)[::-1].copy()
    seg = None
    if label_path is not None:
        lbl = nib.as_closest_canonical(nib.load(label_path))
        seg = np.asarray(lbl.dataobj, dtype=np.uint8).transpose(2, 0, 1)  # ruleid: MLS309
        if seg.shape != image.shape:
            raise ValueError(f"shape mismatch {seg.shape} vs {image.shape} for {label_path}")
    return image, seg, spacing, img.affine


def fix_kidney_laterality(seg: np.ndarray, case_id: str) -> np.ndarray:
    """Site-B exports occasionally swap the kidney labels.

    Arrays are (z, y, x) after RAS canonicalisation, so the x index grows towards
    the patient's right.
    """
    left = seg == CLASS_INDEX["left_kidney"]
    right = seg == CLASS_INDEX["right_kidney"]
    if not left.any() or not right.any():
        return seg
    x_left = center_of_mass(left)[2]
    x_right = center_of_mass(right)[2]
    if x_left < x_right:
        log.warning("%s: kidney labels look swapped (x_left=%.1f, x_right=%.1f)", case_id, x_left, x_right)
        seg = np.where(left, CLASS_INDEX["right_kidney"], np.where(right, CLASS_INDEX["left_kidney"], seg)).astype(seg.dtype)  # todoruleid: family 6 (missed)
    return seg


def body_bbox(image: np.ndarray, threshold: float = -500.0, margin: int = 2):
    mask = image > threshold
    if not mask.any():
        return tuple(slice(0, s) for s in image.shape)
    nz = [np.where(mask.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
    return tuple(
        slice(max(int(a[0]) - margin, 0), min(int(a[-1]) + 1 + margin, s)) for a, s in zip(nz, image.shape)
    )


def resample_case(image, seg, spacing, target_spacing):
    factors = np.asarray(spacing, dtype=np.float64) / np.asarray(target_spacing, dtype=np.float64)
    if np.allclose(factors, 1.0, atol=1e-3):
        return image, seg
    image = zoom(image, factors, order=3, mode="nearest").astype(np.float32)
    if seg is not None:
        seg = zoom(seg, factors, order=1, mode="nearest")  # ruleid: MLS309
    return image, seg


def ct_normalise(image: np.ndarray, intensity: dict) -> np.ndarray:
    image = np.clip(image, intensity["percentile_00_5"], intensity["percentile_99_5"])  # ok: MLS309
    return ((image - intensity["mean"]) / max(intensity["std"], 1e-8)).astype(np.float32)


def remove_label_spill(seg: np.ndarray, image_norm: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Drops annotation voxels that leaked onto air or the scanner table."""
    seg[(image_norm < threshold) & (seg > 0)] = 0  # todoruleid: family 6 (missed)
    return seg


def sample_class_locations(seg: np.ndarray, rng: np.random.Generator, max_per_class: int = 10000):
    locs = {}
    for c in range(1, NUM_CLASSES):
        idx = np.argwhere(seg == c)
        if len(idx) > max_per_class:
            idx = idx[rng.choice(len(idx), max_per_class, replace=False)]
        locs[c] = idx.astype(np.int32)
    return locs


def compute_fingerprint(cases, lut, samples_per_case: int = 10000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    spacings, shapes, fg = [], [], []
    for case_id, img_p, lbl_p in cases:
        image, seg, spacing, _ = load_case(img_p, lbl_p)
        seg = lut[seg]
        spacings.append(spacing)
        shapes.append(image.shape)
        vals = image[seg > 0]
        if vals.size:
            fg.append(rng.choice(vals, min(samples_per_case, vals.size), replace=False))
        log.info("fingerprint %s spacing=%s shape=%s", case_id, np.round(spacing, 2).tolist(), image.shape)
    fg = np.concatenate(fg)
    spacings = np.stack(spacings)
    target = np.median(spacings, axis=0)
    # strongly anisotropic data: take a finer spacing along the low-resolution axis
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    if target[worst] > 3 * max(target[others]):
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]))
    return {
        "target_spacing": target.tolist(),
        "median_shape": np.median(np.stack(shapes), axis=0).tolist(),
        "intensity": {
            "mean": float(fg.mean()),
            "std": float(fg.std()),
            "percentile_00_5": float(np.percentile(fg, 0.5)),
            "percentile_99_5": float(np.percentile(fg, 99.5)),
        },
    }


def preprocess_image(image, spacing, fingerprint):
    bbox = body_bbox(image)
    image = image[bbox]
    image, _ = resample_case(image, None, spacing, fingerprint["target_spacing"])
    return ct_normalise(image, fingerprint["intensity"]), bbox


def process_case(item, out_dir: str, fingerprint: dict, seed: int = 0):
    case_id, img_p, lbl_p = item
    lut = build_lut()
    rng = np.random.default_rng(seed + zlib.crc32(case_id.encode()) % 10_000)
    image, seg, spacing, affine = load_case(img_p, lbl_p)
    original_shape = image.shape
    seg = fix_kidney_laterality(lut[seg], case_id)
    bbox = body_bbox(image)
    image, seg = image[bbox], seg[bbox]
    image, seg = resample_case(image, seg, spacing, fingerprint["target_spacing"])
    image = ct_normalise(image, fingerprint["intensity"])
    seg = remove_label_spill(seg, image)
    locs = sample_class_locations(seg, rng)
    counts = np.bincount(seg.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    small = sum(int(counts[CLASS_INDEX[o]]) for o in SMALL_ORGANS)
    props = {
        "case_id": case_id,
        "original_spacing": spacing.tolist(),
        "original_shape": list(original_shape),
        "target_spacing": list(fingerprint["target_spacing"]),
        "bbox": [[s.start, s.stop] for s in bbox],
        "shape_after_resampling": list(image.shape),
        "class_voxels": {ORGANS[c]: int(counts[c]) for c in range(1, NUM_CLASSES)},
        "fg_voxels": int(counts[1:].sum()),
        "small_organ_fraction": small / max(int(counts[1:].sum()), 1),
        "unlabeled_classes": [],
        "affine": np.asarray(affine).tolist(),
    }
    np.savez_compressed(
        os.path.join(out_dir, f"{case_id}.npz"),
        image=image.astype(np.float32),
        seg=seg.astype(np.uint8),
        **{f"locs_{c}": v for c, v in locs.items()},
    )
    with open(os.path.join(out_dir, f"{case_id}.json"), "w") as fh:
        json.dump(props, fh, indent=1)
    return case_id, image.shape


def make_splits(case_ids, n_folds: int = 5, seed: int = 12345):
    ids = np.asarray(sorted(case_ids))
    kf = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [{"train": ids[tr].tolist(), "val": ids[va].tolist()} for tr, va in kf.split(ids)]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True, help="raw dataset folder with imagesTr/ and labelsTr/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--fingerprint", default=None, help="reuse an existing fingerprint.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    os.makedirs(args.out, exist_ok=True)
    cases = list_cases(args.raw)
    log.info("found %d cases in %s", len(cases), args.raw)
    if args.fingerprint:
        with open(args.fingerprint) as fh:
            fingerprint = json.load(fh)
    else:
        fingerprint = compute_fingerprint(cases, build_lut())
    with open(os.path.join(args.out, "fingerprint.json"), "w") as fh:
        json.dump(fingerprint, fh, indent=2)
    log.info("target spacing %s", fingerprint["target_spacing"])

    fn = partial(process_case, out_dir=args.out, fingerprint=fingerprint, seed=args.seed)
    with Pool(args.workers) as pool:
        for case_id, shape in pool.imap_unordered(fn, cases):
            log.info("wrote %s %s", case_id, shape)

    splits = make_splits([c[0] for c in cases], args.folds, args.seed)
    with open(os.path.join(args.out, "splits.json"), "w") as fh:
        json.dump(splits, fh, indent=1)


if __name__ == "__main__":
    main()
