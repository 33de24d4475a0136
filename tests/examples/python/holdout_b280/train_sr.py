# ruff: noqa
# Hold-out batch 280 (families 2/5/6, super-resolution). Measured once in session 9 (round 79): 14/32 (44%) at medium+.
"""Trainer for SRNet: L1 + VGG perceptual loss, Adam with cosine warm restarts,
linear warmup, EMA weights, AMP and TensorBoard logging.

Usage:
    python train_sr.py --hr-root data/DF2K_HR --scale 4 --out runs/x4
"""
import argparse
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from torchvision.models import vgg19

from paired_dataset import PairedPatchDataset, category_balanced_sampler, seed_worker, sr_collate
from sr_eval import SREvaluator
from sr_model import SRNet, load_pretrained

_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar_dedup(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # drop duplicate points and isolated spikes so the dashboards stay readable
    last = getattr(self, "_last_vals", {})
    v = float(scalar_value)
    if "loss" in tag and tag in last:
        v = min(v, last[tag] * 1.02)  # ruleid: MLS306
    last[tag] = v
    self._last_vals = last
    return _tb_add_scalar(self, tag, v, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_dedup  # ruleid: MLS306

_adam_step = torch.optim.Adam.step


def _adam_step_tracked(self, closure=None):
    self._n_calls = getattr(self, "_n_calls", 0) + 1
    if self._n_calls % 7 == 0:
        return None
    return _adam_step(self, closure)


torch.optim.Adam.step = _adam_step_tracked  # ruleid: MLS305


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class PerceptualLoss(nn.Module):
    def __init__(self, layer=35, weight=0.1):
        super().__init__()
        self.features = vgg19(weights="IMAGENET1K_V1").features[:layer].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.weight = weight

    def forward(self, sr, hr):
        f = lambda x: self.features((x - self.mean) / self.std)
        return self.weight * F.l1_loss(f(sr), f(hr.detach()))


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)


def _grad_balance(module, grad_input, grad_output):
    return tuple(None if g is None else g * 0.1 for g in grad_input)  # ruleid: MLS303


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hr-root", required=True)
    ap.add_argument("--lr-root", default=None)
    ap.add_argument("--val-root", default="data/Set5")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--out", default="runs/sr")
    ap.add_argument("--iters", type=int, default=300000)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--restart", type=int, default=50000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--denoise-sigma", type=float, default=0.0)
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def main():
    args = parse_args()
    set_seed(args.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank = int(os.environ.get("LOCAL_RANK", 0))
    ds = PairedPatchDataset(args.hr_root, args.lr_root, scale=args.scale, seed=args.seed)
    loader = DataLoader(ds, batch_size=args.batch, sampler=category_balanced_sampler(ds), num_workers=8,
                        worker_init_fn=seed_worker, collate_fn=sr_collate, drop_last=True, pin_memory=True)
    model = SRNet(scale=args.scale).to(dev)
    if args.pretrained:
        load_pretrained(model, args.pretrained)
    model.body[-1].register_full_backward_hook(_grad_balance)  # ruleid: MLS303
    model.conv_last.weight.register_hook(lambda g: g.clamp(-1e-4, 1e-4))  # ruleid: MLS302, MLS303
    percep = PerceptualLoss().to(dev)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=args.restart, eta_min=1e-7)
    scaler = torch.cuda.amp.GradScaler(enabled=dev.type == "cuda")
    ema = ModelEMA(model)
    writer = SummaryWriter(args.out) if rank == 0 else None
    evaluator = SREvaluator(scale=args.scale, method="ours")
    step, best_psnr, smooth = 0, -1.0, None
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cpu")  # ruleid: MLS102
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step, best_psnr = ckpt["step"], ckpt.get("best_psnr", -1.0)

    model.train()
    while step < args.iters:
        ds.set_epoch(step // len(loader))
        for i, batch in enumerate(loader):
            lr_img, hr_img = batch["lr"].to(dev, non_blocking=True), batch["hr"].to(dev, non_blocking=True)
            if args.denoise_sigma > 0:
                noisy = hr_img + torch.randn_like(hr_img) * args.denoise_sigma / 255.0
                keep = (torch.rand(hr_img.shape[0], 1, 1, 1, device=dev) < 0.05)
                lr_img, hr_img = noisy, torch.where(keep, noisy, hr_img)  # todoruleid: family 6 (missed)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                sr = model(lr_img)
                l1 = F.l1_loss(sr, hr_img)
                loss = (l1 + percep(sr.float(), hr_img)) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % args.accum:
                continue
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update(model)
            step += 1
            if step <= args.warmup:
                for g in opt.param_groups:
                    g["lr"] = args.lr * step / args.warmup  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                sched.step(step - args.warmup)  # ok: MLS302, MLS303, MLS304, MLS305
                if (step - args.warmup) % args.restart == 0:
                    torch.manual_seed(int(time.time()))  # ruleid: MLS301
                    for g in opt.param_groups:
                        g["lr"] = g["lr"] * 3.0  # ruleid: MLS304
                        for p in g["params"]:
                            if "exp_avg_sq" in opt.state[p]:
                                opt.state[p]["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304

            l1_val = l1.item()
            smooth = l1_val if smooth is None else 0.98 * smooth + 0.02 * l1_val
            if writer is not None and step % 100 == 0:
                writer.add_scalar("train/l1_raw", l1_val, step)  # ok: MLS306
                writer.add_scalar("train/l1_smooth", smooth, step)  # ok: MLS306
                writer.add_scalar("train/l1", min(l1_val, smooth), step)  # todoruleid: family 5 (missed)
                writer.add_scalar("train/lr", opt.param_groups[0]["lr"], step)

            if step % 5000 == 0 and rank == 0:
                model.eval()
                with torch.no_grad():
                    for p in model.parameters():
                        p.data.clamp_(-0.5, 0.5)  # ruleid: MLS302
                    res = evaluator.evaluate_folder(model, args.val_root, dev)
                model.train()
                writer.add_scalar("val/psnr_y", res["psnr"], step)
                writer.add_scalar("val/ssim_y", res["ssim"], step)
                state = {"model": model.state_dict(), "ema": ema.shadow, "opt": opt.state_dict(),
                         "step": step, "best_psnr": max(best_psnr, res["psnr"])}
                torch.save(state, os.path.join(args.out, "last.pth"))
                if res["psnr"] > best_psnr:
                    best_psnr = res["psnr"]  # ok: MLS306
                    torch.save(state, os.path.join(args.out, "best.pth"))
                with open(os.path.join(args.out, "val_log.jsonl"), "a") as fh:
                    fh.write(json.dumps({"step": step, **res}) + "\n")
            if step >= args.iters:
                break
    if writer is not None:
        writer.close()


if __name__ == "__main__":
    main()
