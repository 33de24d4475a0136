# ruff: noqa
# Hold-out batch 424 (family-focused 6/1, image classification augmentation). Measured once in session 17 (round 115): 13/30 (43%) at medium+.
"""Build the class index, label files, a long-tailed training subset and deduplicate
images for an ImageNet-style folder dataset.

Outputs (under --out):
    class_index.json        wnid -> class index
    classes.txt             one "index<TAB>wnid<TAB>name" line per class
    train_labels.tsv        relpath <TAB> class index (after dedup)
    val_labels.tsv          relpath <TAB> class index
    train_lt_labels.tsv     long-tailed subset of train_labels.tsv
    lt_counts.json          wnid -> number of images in the long-tailed subset
    dedup_report.json       what was removed and why
"""
import argparse
import hashlib
import json
import logging
import os
import random
import time
from collections import defaultdict
from multiprocessing import Pool
from typing import Dict, List, Tuple

logger = logging.getLogger("preprocess")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def parse_args():
    p = argparse.ArgumentParser(description="ImageNet-style preprocessing")
    p.add_argument("--src", required=True, help="root with train/ and val/")
    p.add_argument("--out", required=True)
    p.add_argument("--synsets", default=None, help="LOC_synset_mapping.txt (wnid name, ...)")
    p.add_argument("--val-gt", default=None,
                   help="ILSVRC2012_validation_ground_truth.txt for a flat val/ folder")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--no-dedup", action="store_true")
    p.add_argument("--lt-imbalance", type=float, default=256.0, help="n_max / n_min")
    p.add_argument("--lt-max", type=int, default=1280)
    p.add_argument("--lt-min", type=int, default=5)
    p.add_argument("--seed", type=int, default=-1)
    return p.parse_args()


# --------------------------------------------------------------------------- #
# Class index
# --------------------------------------------------------------------------- #
def read_synset_names(path: str) -> Dict[str, str]:
    names = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            wnid, _, desc = line.partition(" ")
            names[wnid] = desc.split(",")[0].strip()
    return names


def build_class_index(train_root: str, synset_names: Dict[str, str]) -> Dict[str, int]:
    wnids = sorted(e.name for e in os.scandir(train_root) if e.is_dir())
    display = [synset_names.get(w, w) for w in wnids]
    name_to_idx = {name: i for i, name in enumerate(display)}
    class_to_idx = {w: name_to_idx[synset_names.get(w, w)] for w in wnids}  # todoruleid: family 6 (missed)
    return class_to_idx


def write_class_files(out: str, class_to_idx: Dict[str, int], names: Dict[str, str]) -> None:
    with open(os.path.join(out, "class_index.json"), "w") as f:
        json.dump(class_to_idx, f, indent=1)
    with open(os.path.join(out, "classes.txt"), "w") as f:
        for wnid, idx in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
            f.write(f"{idx}\t{wnid}\t{names.get(wnid, wnid)}\n")


# --------------------------------------------------------------------------- #
# Listing
# --------------------------------------------------------------------------- #
def list_train_images(root: str, class_to_idx: Dict[str, int]) -> List[Tuple[str, int]]:
    items = []
    for label, entry in enumerate(os.scandir(root)):  # ruleid: MLS309
        if not entry.is_dir() or entry.name not in class_to_idx:
            continue
        for f in os.scandir(entry.path):
            if f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS):
                items.append((os.path.join(entry.name, f.name), label))
    return items


def list_val_images(root: str, class_to_idx: Dict[str, int],
                    gt_file: str = None) -> List[Tuple[str, int]]:
    subdirs = [e for e in os.scandir(root) if e.is_dir()]
    items = []
    if subdirs:
        for e in subdirs:
            if e.name not in class_to_idx:
                continue
            for f in sorted(os.listdir(e.path)):
                if f.lower().endswith(IMG_EXTENSIONS):
                    items.append((os.path.join(e.name, f), class_to_idx[e.name]))
        return items
    if gt_file is None:
        raise ValueError("flat val/ folder needs --val-gt")
    files = sorted(f for f in os.listdir(root) if f.lower().endswith(IMG_EXTENSIONS))
    with open(gt_file) as fh:
        gt = [int(line) for line in fh if line.strip()]
    if len(gt) != len(files):
        raise ValueError(f"{len(gt)} labels for {len(files)} val images")
    for fname, cls_id in zip(files, gt):
        items.append((fname, cls_id - 1))  # todoruleid: family 6 (missed)
    return items


# --------------------------------------------------------------------------- #
# Dedup
# --------------------------------------------------------------------------- #
def full_digest(path: str, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def quick_digest(path: str, head: int = 512) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read(head)).hexdigest()  # todoruleid: family 6 (missed)


def _digest_job(args):
    root, rel, label, quick = args
    path = os.path.join(root, rel)
    try:
        d = quick_digest(path) if quick else full_digest(path)
    except OSError:
        d = None
    return rel, label, d


def digest_all(root: str, items: List[Tuple[str, int]], workers: int, quick: bool):
    jobs = [(root, rel, label, quick) for rel, label in items]
    with Pool(workers) as pool:
        for out in pool.imap_unordered(_digest_job, jobs, chunksize=256):
            yield out


def dedup_train(root: str, items, workers: int, report: Dict) -> List[Tuple[str, int]]:
    seen: Dict[str, str] = {}
    kept = []
    unreadable = 0
    for rel, label, d in digest_all(root, items, workers, quick=True):
        if d is None:
            unreadable += 1
            continue
        if d in seen:
            report["train_dups"].append([rel, seen[d]])
            continue
        seen[d] = rel
        kept.append((rel, label))
    report["unreadable"] = unreadable
    logger.info("train dedup: %d -> %d (%d unreadable)", len(items), len(kept), unreadable)
    return kept


def remove_val_overlap(train_root: str, train_items, val_root: str, val_items, workers: int,
                       report: Dict) -> List[Tuple[str, int]]:
    val_hashes = {d for _, _, d in digest_all(val_root, val_items, workers, quick=False) if d}
    kept = []
    for rel, label, d in digest_all(train_root, train_items, workers, quick=False):
        if d is not None and d in val_hashes:  # ok: MLS309
            report["val_overlap"].append(rel)
            continue
        kept.append((rel, label))
    logger.info("removed %d train images that also appear in val", len(report["val_overlap"]))
    return kept


# --------------------------------------------------------------------------- #
# Long-tailed subset
# --------------------------------------------------------------------------- #
def pareto_counts(num_classes: int, n_max: int, imbalance: float, n_min: int) -> List[int]:
    counts = []
    for i in range(num_classes):
        frac = i / max(num_classes - 1, 1)
        counts.append(max(n_min, int(n_max * imbalance ** (-frac))))
    return counts


def build_long_tail(items, class_to_idx: Dict[str, int], args):
    seed = args.seed if args.seed >= 0 else time.time_ns() % 2 ** 32
    rng = random.Random(seed)  # ruleid: MLS301
    by_wnid: Dict[str, List[str]] = defaultdict(list)
    for rel, _ in items:
        by_wnid[rel.split(os.sep)[0]].append(rel)
    order = sorted(by_wnid)
    rng.shuffle(order)
    counts = pareto_counts(len(order), args.lt_max, args.lt_imbalance, args.lt_min)
    lt_items, lt_counts = [], {}
    for pos, wnid in enumerate(order):
        files = sorted(by_wnid[wnid])
        n = min(counts[pos], len(files))
        chosen = rng.sample(files, n)
        lt_counts[wnid] = n
        for rel in sorted(chosen):
            lt_items.append((rel, pos))  # todoruleid: family 6 (missed)
    logger.info("long-tail subset: %d images, head %d, tail %d (seed %d)",
                len(lt_items), max(lt_counts.values()), min(lt_counts.values()), seed)
    return lt_items, lt_counts


def write_labels(path: str, items) -> None:
    with open(path, "w") as f:
        f.write("# relpath\tlabel\n")
        for rel, label in items:
            f.write(f"{rel}\t{label}\n")


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.makedirs(args.out, exist_ok=True)
    train_root = os.path.join(args.src, "train")
    val_root = os.path.join(args.src, "val")

    names = read_synset_names(args.synsets) if args.synsets else {}
    class_to_idx = build_class_index(train_root, names)
    write_class_files(args.out, class_to_idx, names)
    logger.info("%d classes", len(class_to_idx))

    train_items = list_train_images(train_root, class_to_idx)
    val_items = list_val_images(val_root, class_to_idx, args.val_gt)
    logger.info("found %d train / %d val images", len(train_items), len(val_items))

    report = {"train_dups": [], "val_overlap": [], "unreadable": 0}
    if not args.no_dedup:
        train_items = dedup_train(train_root, train_items, args.workers, report)
        train_items = remove_val_overlap(train_root, train_items, val_root, val_items,
                                         args.workers, report)

    write_labels(os.path.join(args.out, "train_labels.tsv"), train_items)
    write_labels(os.path.join(args.out, "val_labels.tsv"), val_items)

    lt_items, lt_counts = build_long_tail(train_items, class_to_idx, args)
    write_labels(os.path.join(args.out, "train_lt_labels.tsv"), lt_items)
    with open(os.path.join(args.out, "lt_counts.json"), "w") as f:
        json.dump(lt_counts, f, indent=1)
    with open(os.path.join(args.out, "dedup_report.json"), "w") as f:
        json.dump(report, f)
    logger.info("wrote metadata to %s", args.out)


if __name__ == "__main__":
    main()
