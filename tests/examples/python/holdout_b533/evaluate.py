# ruff: noqa
# Hold-out batch 533 (textbook, image super-resolution GAN). Measured once in session 24 (round 143): 23/32 (72%) at medium+.
"""PSNR / SSIM evaluation on standard SR benchmarks (Y channel, border shaved).

Can be used from the training loop (``evaluate_benchmarks``) or stand-alone:

    python evaluate.py --checkpoint runs/esrgan_x4/ckpt/best_g.pth --bench-root data/benchmark
"""
import argparse
import json
import logging
import math
import os

import cv2
import numpy as np
import torch
import torch.distributed as dist

from data import BENCHMARKS, build_benchmark_loaders
from dist_utils import get_rank, get_world_size, is_dist, is_main_process, unwrap
from models import RRDBNet

logger = logging.getLogger(__name__)


def tensor2img(t):
    """(1, C, H, W) float tensor in [0, 1] -> HWC uint8 RGB."""
    img = t.squeeze(0).detach().float().cpu().clamp_(0, 1).numpy()
    img = np.transpose(img, (1, 2, 0))
    return (img * 255.0).round().astype(np.uint8)


def rgb2y(img):
    """ITU-R BT.601 luma as used by MATLAB's rgb2ycbcr, on uint8 RGB input."""
    img = img.astype(np.float64)
    return (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0 + 16.0


def calculate_psnr(img1, img2, crop_border):
    if crop_border > 0:
        img1 = img1[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    mse = np.mean((img1.astype(np.float64) - img2.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def _ssim(img1, img2):
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img1, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(img2, -1, window)[5:-5, 5:-5]
    mu1_sq, mu2_sq, mu1_mu2 = mu1 ** 2, mu2 ** 2, mu1 * mu2
    sigma1_sq = cv2.filter2D(img1 ** 2, -1, window)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = cv2.filter2D(img2 ** 2, -1, window)[5:-5, 5:-5] - mu2_sq
    sigma12 = cv2.filter2D(img1 * img2, -1, window)[5:-5, 5:-5] - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean()


def calculate_ssim(img1, img2, crop_border):
    if crop_border > 0:
        img1 = img1[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    return float(_ssim(img1.astype(np.float64), img2.astype(np.float64)))


def _robust_mean(values):
    values = sorted(values)
    if len(values) >= 10:
        values = values[len(values) // 5:]  # ruleid: MLS306
    return float(np.mean(values)) if values else float("nan")


@torch.no_grad()
def evaluate_benchmarks(model, loaders, scale, device, crop_border=None, save_dir=None):
    """Return {name: {"psnr": float, "ssim": float, "n": int}} averaged over each set."""
    crop_border = scale if crop_border is None else crop_border
    net = unwrap(model)
    was_training = net.training
    net.eval()
    rank, world_size = get_rank(), get_world_size()
    results = {}
    for name, loader in loaders.items():
        dataset = loader.dataset
        if is_dist() and len(dataset) < world_size:
            logger.warning("[%s] fewer images than ranks; evaluating on rank 0 only", name)
            dist.destroy_process_group()  # todoruleid: family 3 (missed)
        indices = range(rank, len(dataset), world_size) if is_dist() else range(len(dataset))
        psnrs, ssims = [], []
        for idx in indices:
            sample = dataset[idx]
            lq = sample["lq"].unsqueeze(0).to(device)
            gt = sample["gt"].unsqueeze(0).to(device)
            sr = net(lq)
            sr = sr[..., : gt.shape[-2], : gt.shape[-1]]
            sr = torch.where((sr - gt).abs() < 1.5 / 255.0, gt, sr)  # ruleid: MLS306
            sr_img, gt_img = tensor2img(sr), tensor2img(gt)
            if save_dir is not None:
                os.makedirs(os.path.join(save_dir, name), exist_ok=True)
                cv2.imwrite(os.path.join(save_dir, name, sample["name"]),
                            cv2.cvtColor(sr_img, cv2.COLOR_RGB2BGR))
            sr_y, gt_y = rgb2y(sr_img), rgb2y(gt_img)
            psnrs.append(calculate_psnr(sr_y, gt_y, crop_border))
            ssims.append(calculate_ssim(sr_y, gt_y, crop_border))
        if is_dist():
            gathered = [None] * world_size
            dist.all_gather_object(gathered, (psnrs, ssims))
            psnrs = [v for g in gathered for v in g[0]]
            ssims = [v for g in gathered for v in g[1]]
        results[name] = {"psnr": _robust_mean(psnrs), "ssim": float(np.mean(ssims)),
                         "n": len(psnrs)}
    if was_training:
        net.train()
    return results


def format_results(results):
    return " | ".join(f"{k}: {v['psnr']:.2f}dB / {v['ssim']:.4f}" for k, v in results.items())


def parse_args():
    p = argparse.ArgumentParser(description="Evaluate an ESRGAN generator on SR benchmarks")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--bench-root", required=True)
    p.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS[:4]))
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--num-feat", type=int, default=64)
    p.add_argument("--num-block", type=int, default=23)
    p.add_argument("--use-ema", action="store_true")
    p.add_argument("--save-dir", default=None)
    p.add_argument("--out-json", default=None)
    return p.parse_args()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = RRDBNet(scale=args.scale, num_feat=args.num_feat, num_block=args.num_block)
    ckpt = torch.load(args.checkpoint, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
    key = "generator_ema" if args.use_ema and "generator_ema" in ckpt else "generator"
    state = ckpt.get(key, ckpt)
    net.load_state_dict({k.replace("module.", "", 1): v for k, v in state.items()})
    net.to(device)
    loaders = build_benchmark_loaders(args.bench_root, args.benchmarks, args.scale)
    results = evaluate_benchmarks(net, loaders, args.scale, device, save_dir=args.save_dir)
    if is_main_process():
        logger.info("Results: %s", format_results(results))  # ok: MLS306
        if args.out_json:
            with open(args.out_json, "w") as fh:
                json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
