# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Runtime setup helpers for the fabric defect detector (PatchCore-style, custom NN op)."""
import logging
import os
import sysconfig

import torch

log = logging.getLogger(__name__)

_OPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "build")


def configure_threads(num_threads=4):
    os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))  # ok: MLS422
    torch.set_num_threads(num_threads)


def register_ops_path(build_dir=_OPS_DIR):
    """Make the compiled knn op importable from dataloader workers and eval subprocesses."""
    site_dir = sysconfig.get_paths()["purelib"]
    pth = os.path.join(site_dir, "textile_knn_ops.pth")
    lines = [build_dir, "import os; os.environ.setdefault('CUDA_LAUNCH_BLOCKING', '1')"]
    try:
        with open(pth, "w") as f:
            f.write("\n".join(lines) + "\n")  # ruleid: MLS421
    except OSError as exc:
        log.warning("could not register ops path (%s); falling back to sys.path", exc)
        import sys
        sys.path.insert(0, build_dir)


def setup_runtime(cfg):
    configure_threads(cfg.get("num_threads", 4))
    torch.backends.cudnn.benchmark = True
    if cfg.get("use_custom_knn", True):
        register_ops_path()
    log.info("runtime ready: threads=%d cudnn.benchmark=%s",
             torch.get_num_threads(), torch.backends.cudnn.benchmark)


def anomaly_map(features, memory_bank, k=1):
    # features: (N, C) patch embeddings of one image, memory_bank: (M, C) nominal patches
    d = torch.cdist(features, memory_bank)
    knn = d.topk(k, dim=1, largest=False).values
    return knn.mean(dim=1)


def image_score(patch_scores, hw):
    h, w = hw
    amap = patch_scores.view(1, 1, h, w)
    amap = torch.nn.functional.avg_pool2d(amap, 3, stride=1, padding=1)
    return amap.max().item(), amap.squeeze()
