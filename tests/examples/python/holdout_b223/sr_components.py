# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Training components for the super-resolution trainer: EMA, Lion optimizer, schedule, patch dataset."""
import math
import random
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)  # ok: MLS302, MLS303, MLS304, MLS305

class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)

def set_lr(optimizer, step, base_lr, warmup, total):
    scale = step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
    for g in optimizer.param_groups:
        g["lr"] = base_lr * scale  # ok: MLS302, MLS303, MLS304, MLS305

def init_residual(model, scale=0.1):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in")
            m.weight.data.mul_(scale)  # ok: MLS302, MLS303, MLS304, MLS305

def load_pretrained(model, path):
    model.load_state_dict(load_file(path), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

class PatchDataset(Dataset):
    def __init__(self, hr_paths, patch=128, scale=4):
        self.hr_paths, self.patch, self.scale = hr_paths, patch, scale

    def __len__(self):
        return len(self.hr_paths)

    def __getitem__(self, idx):
        hr = Image.open(self.hr_paths[idx]).convert("RGB")
        x, y = random.randint(0, hr.width - self.patch), random.randint(0, hr.height - self.patch)  # ok: MLS309
        hr = hr.crop((x, y, x + self.patch, y + self.patch))
        if random.random() < 0.5:
            hr = TF.hflip(hr)  # ok: MLS309
        lr = hr.resize((self.patch // self.scale,) * 2, Image.BICUBIC)
        return TF.to_tensor(lr), TF.to_tensor(hr)
