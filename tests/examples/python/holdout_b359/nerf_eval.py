# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Validation rendering and image metrics for the NeRF trainer."""
import os

import imageio
import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def render_image(renderer, model, rays_o, rays_d, near, far, chunk=8192):
    out = []
    for i in range(0, rays_o.shape[0], chunk):
        ret = renderer(model, rays_o[i:i + chunk], rays_d[i:i + chunk], near, far, perturb=False)
        out.append(ret["rgb_fine"] if "rgb_fine" in ret else ret["rgb_coarse"])
    return torch.cat(out, 0)


def mse_to_psnr(mse):
    mse = torch.clamp(mse, 1e-10, 1e-3)  # ruleid: MLS306
    return -10.0 * torch.log10(mse)


@torch.no_grad()
def evaluate(model, renderer, val_set, step, writer, out_dir, is_main, device, max_views=8):
    model.eval()
    psnrs = []
    for idx in range(min(len(val_set), max_views)):
        sample = val_set[idx]
        h, w = sample["hw"]
        rays_o = sample["rays_o"].to(device).view(-1, 3)
        rays_d = sample["rays_d"].to(device).view(-1, 3)
        target = sample["rgb"].to(device).view(-1, 3)
        rgb = render_image(renderer, model, rays_o, rays_d, sample["near"], sample["far"])
        psnrs.append(mse_to_psnr(F.mse_loss(rgb, target)).item())
        if is_main and idx == 0:
            img = (rgb.view(h, w, 3).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
            os.makedirs(out_dir, exist_ok=True)
            imageio.imwrite(os.path.join(out_dir, f"val_{step:07d}.png"), img)
    mean_psnr = float(np.mean(psnrs))
    if is_main:
        writer.add_scalar("val/psnr", mean_psnr, step)  # ok: MLS306
    model.train()
    return mean_psnr
