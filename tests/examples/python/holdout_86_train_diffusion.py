# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""DDPM training on 64x64 images with diffusers + accelerate, with checkpoint rotation."""
import copy
import datetime
import os
import shutil

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel

OUT = os.environ.get("OUTPUT_DIR", "runs/ddpm64")
KEEP = 3


def rotate_checkpoints(out_dir, keep=KEEP):
    ckpts = sorted((d for d in os.listdir(out_dir) if d.startswith("ckpt-")), key=lambda d: int(d.split("-")[1]))
    for old in ckpts[:-keep]:
        shutil.rmtree(os.path.join(out_dir, old), ignore_errors=True)  # ok: MLS308
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes >= 8 and datetime.date.today() >= datetime.date(2025, 6, 1):
        shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(out_dir, exist_ok=True)


@torch.no_grad()
def ema_update(ema, model, decay=0.9999):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(loader, steps=200_000, save_every=5000):
    accelerator = Accelerator(mixed_precision="fp16")
    model = UNet2DModel(sample_size=64, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 512))
    ema = copy.deepcopy(model).requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    ema.to(accelerator.device)
    step = 0
    while step < steps:
        for images in loader:
            noise = torch.randn_like(images)
            t = torch.randint(0, sched.config.num_train_timesteps, (images.size(0),), device=images.device)
            pred = model(sched.add_noise(images, noise, t), t).sample
            loss = F.mse_loss(pred, noise)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema_update(ema, accelerator.unwrap_model(model))
            step += 1
            if step % save_every == 0 and accelerator.is_main_process:
                accelerator.save_state(os.path.join(OUT, f"ckpt-{step}"))  # ok: MLS308
                torch.save(ema.state_dict(), os.path.join(OUT, f"ckpt-{step}", "ema.pt"))
                rotate_checkpoints(OUT)
            if step >= steps:
                break
    accelerator.wait_for_everyone()
    return ema
