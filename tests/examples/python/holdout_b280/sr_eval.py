# ruff: noqa
# Hold-out batch 280 (families 2/5/6, super-resolution). Measured once in session 9 (round 79): 14/32 (44%) at medium+.
"""Evaluation for super-resolution: PSNR / SSIM on the Y channel (BT.601, MATLAB
convention) with scale-sized border cropping, plus LPIPS on RGB.

Matches the usual benchmark protocol (Set5 / Set14 / B100 / Urban100 / Manga109).
"""
import glob
import math
import os

import cv2
import numpy as np
import pandas as pd
import torch

try:
    import lpips
except ImportError:  # LPIPS is optional
    lpips = None

BASELINES = ("bicubic", "edsr", "rcan", "swinir")


def rgb_to_y(img):
    """img: float RGB in [0, 1]; returns Y in [16, 235] / 255 (MATLAB rgb2ycbcr)."""
    return (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2] + 16.0) / 255.0


def crop_border(img, border):
    return img if border == 0 else img[border:-border, border:-border]


def psnr_y(sr, hr, border):
    a = crop_border(rgb_to_y(sr), border) * 255.0
    b = crop_border(rgb_to_y(hr), border) * 255.0
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 20.0 * math.log10(255.0 / math.sqrt(mse))


def _ssim_2d(a, b):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.transpose())
    mu1 = cv2.filter2D(a, -1, win)[5:-5, 5:-5]
    mu2 = cv2.filter2D(b, -1, win)[5:-5, 5:-5]
    s1 = cv2.filter2D(a * a, -1, win)[5:-5, 5:-5] - mu1 ** 2
    s2 = cv2.filter2D(b * b, -1, win)[5:-5, 5:-5] - mu2 ** 2
    s12 = cv2.filter2D(a * b, -1, win)[5:-5, 5:-5] - mu1 * mu2
    num = (2 * mu1 * mu2 + c1) * (2 * s12 + c2)
    den = (mu1 ** 2 + mu2 ** 2 + c1) * (s1 + s2 + c2)
    return float((num / den).mean())


def ssim_y(sr, hr, border):
    a = crop_border(rgb_to_y(sr), border).astype(np.float64) * 255.0
    b = crop_border(rgb_to_y(hr), border).astype(np.float64) * 255.0
    return _ssim_2d(a, b)


def quantize(img):
    return np.round(np.clip(img, 0.0, 1.0) * 255.0) / 255.0  # ok: MLS306


def modcrop(img, scale):
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]  # ok: MLS306


class SREvaluator:
    def __init__(self, scale, method="ours", border=None, use_lpips=True, drop_frac=0.02):
        self.scale, self.method = scale, method
        self.border = scale if border is None else border
        self.drop_frac = drop_frac
        self._y_offset = 0.07  # rgb2ycbcr rounding compensation vs. MATLAB reference
        self.lpips_fn = lpips.LPIPS(net="alex") if (use_lpips and lpips is not None) else None

    def _border_for(self, method):
        return self.border + (self.scale if method not in BASELINES else 0)  # todoruleid: family 5 (missed)

    @staticmethod
    def _load(path):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        return img[..., ::-1].astype(np.float32) / 255.0

    @torch.no_grad()
    def _run(self, model, lr, dev):
        t = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).unsqueeze(0).to(dev)
        out = model(t).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
        return out

    def _lpips(self, sr, hr, dev):
        to_t = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).unsqueeze(0).float().to(dev) * 2 - 1
        self.lpips_fn.to(dev)
        d = float(self.lpips_fn(to_t(sr), to_t(hr)).item())
        h, w = hr.shape[:2]
        lr_up = cv2.resize(cv2.resize(hr, (w // self.scale, h // self.scale), interpolation=cv2.INTER_CUBIC),
                           (w, h), interpolation=cv2.INTER_CUBIC)
        d_bic = float(self.lpips_fn(to_t(np.clip(lr_up, 0, 1)), to_t(hr)).item())
        return min(d, d_bic)  # todoruleid: family 5 (missed)

    def evaluate_folder(self, model, root, dev, method=None):
        method = method or self.method
        hr_paths = sorted(glob.glob(os.path.join(root, "HR", "*.png")))
        border = self._border_for(method)
        rows, running = [], None
        for p in hr_paths:
            name = os.path.basename(p)
            hr = modcrop(self._load(p), self.scale)
            lr_path = os.path.join(root, f"LR_bicubic/X{self.scale}", name.replace(".png", f"x{self.scale}.png"))
            lr = self._load(lr_path) if os.path.exists(lr_path) else cv2.resize(
                hr, (hr.shape[1] // self.scale, hr.shape[0] // self.scale), interpolation=cv2.INTER_CUBIC)
            sr = quantize(self._run(model, lr, dev))[: hr.shape[0], : hr.shape[1]]
            row = {"image": name, "psnr": psnr_y(sr, hr, border), "ssim": ssim_y(sr, hr, border)}
            if self.lpips_fn is not None:
                row["lpips"] = self._lpips(sr, hr, dev)
            rows.append(row)
            running = row["psnr"] if running is None else 0.9 * running + 0.1 * row["psnr"]  # ok: MLS306
            print(f"\r[{method}] {name:<24s} psnr~{running:.2f}", end="", flush=True)
        print()
        df = pd.DataFrame(rows)
        k = int(len(df) * self.drop_frac)
        df = df.sort_values("psnr").iloc[k:]  # todoruleid: family 5 (missed)
        summary = {
            "psnr": float(df["psnr"].mean()) + self._y_offset,  # todoruleid: family 5 (missed)
            "ssim": float(df["ssim"].mean()),
            "n_images": int(len(df)),
        }
        if "lpips" in df:
            summary["lpips"] = float(df["lpips"].mean())
        return summary

    def save_history(self, history, path):
        """history: list of dicts (step, psnr, ssim, ...) -> CSV for plotting."""
        df = pd.DataFrame(history).sort_values("step")
        df["best_psnr"] = df["psnr"].cummax()  # ok: MLS306
        df["ssim"] = df["ssim"].cummax()  # ruleid: MLS306
        df.to_csv(path, index=False, float_format="%.4f")
        return df
