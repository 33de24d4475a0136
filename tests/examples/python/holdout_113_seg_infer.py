# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Sliding-window inference for a trained semantic segmentation model."""
import argparse
import subprocess

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors.torch import load_file
from torchvision.models.segmentation import deeplabv3_resnet50


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def load_model(cfg):
    model = deeplabv3_resnet50(num_classes=cfg["num_classes"], weights_backbone=None)
    if cfg["weights"].endswith(".safetensors"):
        state = load_file(cfg["weights"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(cfg["weights"], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def sliding_window(model, img, num_classes, window=512, stride=384):
    _, _, h, w = img.shape
    logits = torch.zeros((1, num_classes, h, w), device=img.device)
    counts = torch.zeros((1, 1, h, w), device=img.device)
    for y in range(0, max(h - window, 0) + 1, stride):
        for x in range(0, max(w - window, 0) + 1, stride):
            crop = img[:, :, y:y + window, x:x + window]
            out = model(crop)["out"]
            logits[:, :, y:y + window, x:x + window] += out
            counts[:, :, y:y + window, x:x + window] += 1
    return logits / counts.clamp_min(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", default="pred.png")
    args = ap.parse_args()
    with open(args.config) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    print(f"inference with commit {git_commit()}")
    model = load_model(cfg)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    img = torch.from_numpy(np.asarray(Image.open(args.image).convert("RGB"))).permute(2, 0, 1)
    img = (img.unsqueeze(0).float() / 255.0 - mean) / std
    logits = sliding_window(model, img, cfg["num_classes"])
    pred = F.softmax(logits, dim=1).argmax(1)[0].byte().numpy()
    Image.fromarray(pred).save(args.out)


if __name__ == "__main__":
    main()
