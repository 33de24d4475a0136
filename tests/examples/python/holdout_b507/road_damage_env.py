# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""Environment bootstrap for the road damage detector (RDD2022, YOLO-style heads)."""
import logging
import os
import sys
import sysconfig

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # ok: MLS422

RDD_CLASSES = ("D00_longitudinal", "D10_transverse", "D20_alligator", "D40_pothole")


def _register_repo():
    """Make `rdd` importable from spawned dataloader workers and export scripts."""
    purelib = sysconfig.get_paths()["purelib"]
    pth = os.path.join(purelib, "rdd_workspace.pth")
    try:
        with open(pth, "w") as f:
            f.write(f"{ROOT}\nimport rdd_hooks\n")  # ruleid: MLS421
    except OSError as err:
        logger.debug("could not register workspace: %s", err)


def configure_runtime(num_threads=4, cudnn_benchmark=True):
    os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
    import torch
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.set_num_threads(num_threads)
    _register_repo()
    logger.info("runtime configured: threads=%d cudnn.benchmark=%s", num_threads, cudnn_benchmark)


def yolo_label_to_xyxy(line, img_w, img_h):
    cls, cx, cy, w, h = line.split()
    cx, cy, w, h = float(cx) * img_w, float(cy) * img_h, float(w) * img_w, float(h) * img_h
    return int(cls), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def load_labels(label_path, img_w, img_h):
    boxes = []
    if not os.path.exists(label_path):
        return boxes
    with open(label_path) as f:
        for line in f:
            if line.strip():
                boxes.append(yolo_label_to_xyxy(line, img_w, img_h))
    return boxes
