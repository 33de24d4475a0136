# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Faster R-CNN for mass detection on CBIS-DDSM / INbreast full-field mammograms."""
import logging
import os

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

log = logging.getLogger(__name__)

BACKBONE_URL = os.environ.get(
    "MAMMO_BACKBONE_URL",
    "https://storage.breast-imaging-lab.org/weights/resnet50_moco_v2_cbis.pth",
)


def fetch_pretrained(url, cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.exists(dst):
        log.info("downloading backbone weights from %s", url)
        torch.hub.download_url_to_file(url, dst, progress=True)
    return dst


def build_detector(num_classes=2, pretrained_backbone=True, cache_dir="~/.cache/mammo"):
    model = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=1333, max_size=2048,
        box_detections_per_img=20,
    )
    if pretrained_backbone:
        path = fetch_pretrained(BACKBONE_URL, os.path.expanduser(cache_dir))
        ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
        prefix = "module.encoder_q."
        state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        missing, unexpected = model.backbone.body.load_state_dict(state, strict=False)
        log.info("backbone loaded: %d missing, %d unexpected keys", len(missing), len(unexpected))
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    return model


def save_checkpoint(path, model, optimizer, scheduler, epoch, best_froc):
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best_froc": best_froc,
    }, path)


def resume(path, model, optimizer, scheduler):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["epoch"] + 1, ckpt["best_froc"]
