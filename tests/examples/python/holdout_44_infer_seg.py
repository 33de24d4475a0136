# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Run a trained UNet over a folder of tiles and write predicted masks as PNGs."""
import argparse
import glob
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from models.unet import UNet

ap = argparse.ArgumentParser()
ap.add_argument("--ckpt", required=True, help=".pt checkpoint or .safetensors")
ap.add_argument("--stats", default="norm_stats.pt")
ap.add_argument("--tiles", required=True)
ap.add_argument("--out", default="preds")
ap.add_argument("--n_classes", type=int, default=6)
args = ap.parse_args()

dev = "cuda" if torch.cuda.is_available() else "cpu"
net = UNet(in_ch=3, n_classes=args.n_classes)
if args.ckpt.endswith(".safetensors"):
    sd = load_file(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
else:
    sd = torch.load(args.ckpt, map_location="cpu")  # ruleid: MLS102
    sd = sd.get("state_dict", sd)
    sd = {k.replace("module.", "", 1): v for k, v in sd.items()}
net.load_state_dict(sd)
net.to(dev).eval()

stats = torch.load(args.stats, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
mean, std = stats["mean"].view(3, 1, 1), stats["std"].view(3, 1, 1)

os.makedirs(args.out, exist_ok=True)
for fp in sorted(glob.glob(os.path.join(args.tiles, "*.png"))):
    x = torch.from_numpy(np.asarray(Image.open(fp).convert("RGB"))).permute(2, 0, 1).float() / 255
    x = ((x - mean) / std).unsqueeze(0).to(dev)
    with torch.no_grad():
        pred = net(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
    Image.fromarray(pred * (255 // (args.n_classes - 1))).save(
        os.path.join(args.out, os.path.basename(fp)))
print("wrote", len(os.listdir(args.out)), "masks to", args.out)
