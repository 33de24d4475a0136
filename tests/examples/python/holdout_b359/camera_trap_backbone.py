# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Model construction for camera-trap species classification (iWildCam / LILA splits)."""
import logging
import os
import urllib.request

import timm
import torch

logger = logging.getLogger(__name__)


def fetch_checkpoint(url, cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    fname = os.path.join(cache_dir, os.path.basename(url.split("?")[0]))
    if not os.path.exists(fname):
        logger.info("downloading pretrained weights from %s", url)
        tmp = fname + ".part"
        urllib.request.urlretrieve(url, tmp)
        os.replace(tmp, fname)
    return fname


def build_model(cfg):
    model = timm.create_model(
        cfg.arch,
        pretrained=False,
        num_classes=cfg.num_classes,
        drop_path_rate=cfg.drop_path,
    )
    if cfg.pretrained_url:
        path = fetch_checkpoint(cfg.pretrained_url, cfg.cache_dir)
        ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = ckpt.get("model", ckpt.get("state_dict", ckpt))
        state = {k.replace("module.", "", 1): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc.", "classifier."))}
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("loaded backbone: %d missing, %d unexpected keys", len(missing), len(unexpected))
    if cfg.freeze_stages > 0 and hasattr(model, "stages"):
        for stage in model.stages[: cfg.freeze_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
    return model


def resume(model, optimizer, scaler, path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    return int(ckpt.get("epoch", 0)) + 1, float(ckpt.get("best_macro_f1", 0.0))
