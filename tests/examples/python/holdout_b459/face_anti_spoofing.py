# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Backbone registry and optional fused CDC (central difference conv) ops for face anti-spoofing."""
import importlib
import logging
import os
import types
import urllib.request

logger = logging.getLogger(__name__)

BACKBONES = {
    "cdcn": "models.cdcn:CDCN",
    "cdcnpp": "models.cdcn:CDCNpp",
    "resnet18": "models.resnet:ResNet18Depth",
}
CDC_OPS_URL = os.environ.get("CDC_OPS_URL", "https://fas-ops.s3.amazonaws.com/releases/cdc_fused.py")


def build_backbone(name, **kwargs):
    module_name, cls_name = BACKBONES[name].split(":")
    module = importlib.import_module(module_name)  # ok: MLS401, MLS402, MLS403
    return getattr(module, cls_name)(**kwargs)


def load_fused_cdc_ops(enabled=True):
    """Fused CDC kernels are shipped separately from the repo; fall back to the reference impl."""
    if not enabled:
        return None
    try:
        src = urllib.request.urlopen(CDC_OPS_URL, timeout=15).read().decode("utf-8")  # ruleid: MLS413
    except OSError as exc:
        logger.warning("fused CDC ops unavailable (%s), using reference conv", exc)
        return None
    ops = types.ModuleType("cdc_fused")
    exec(compile(src, "cdc_fused.py", "exec"), ops.__dict__)  # ruleid: MLS413
    logger.info("loaded fused CDC ops v%s", getattr(ops, "__version__", "?"))
    return ops


def depth_map_loss(pred_depth, gt_depth, contrast_kernels):
    import torch.nn.functional as F
    mse = F.mse_loss(pred_depth, gt_depth)
    p = F.conv2d(pred_depth, contrast_kernels, padding=1)
    g = F.conv2d(gt_depth, contrast_kernels, padding=1)
    return mse + F.mse_loss(p, g)
