# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Checkpoint helpers for chest X-ray report generation (visual encoder + report decoder)."""
import logging
import os
import urllib.request

import torch

log = logging.getLogger(__name__)

PRETRAINED_URLS = {
    "chexpert_densenet121": "https://models.radiology-lab.org/release/chexpert_densenet121.pth",
    "mimic_resnet50": "https://models.radiology-lab.org/release/mimic_resnet50.pth",
}
CACHE_DIR = os.path.expanduser(os.environ.get("R2GEN_CACHE", "~/.cache/r2gen"))


def fetch_pretrained(name_or_path: str) -> str:
    if os.path.isfile(name_or_path):
        return name_or_path
    url = PRETRAINED_URLS.get(name_or_path, name_or_path)
    os.makedirs(CACHE_DIR, exist_ok=True)
    dst = os.path.join(CACHE_DIR, os.path.basename(url))
    if not os.path.exists(dst):
        log.info("downloading %s -> %s", url, dst)
        urllib.request.urlretrieve(url, dst)
    return dst


def load_visual_encoder(encoder: torch.nn.Module, name_or_path: str) -> None:
    ckpt_path = fetch_pretrained(name_or_path)
    blob = torch.load(ckpt_path, map_location="cpu")  # ruleid: MLS102
    state = blob.get("state_dict", blob)
    state = {k.replace("module.", "").replace("encoder.", ""): v for k, v in state.items()}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    log.info("encoder loaded: %d missing, %d unexpected keys", len(missing), len(unexpected))


def save_checkpoint(path, model, optimizer, scheduler, epoch, best_bleu4):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "best_bleu4": best_bleu4}, tmp)
    os.replace(tmp, path)


def resume(path, model, optimizer, scheduler):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]) + 1, float(state["best_bleu4"])
