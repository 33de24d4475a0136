# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""NeRF scene fitting loop: ray batching, coarse/fine volume rendering, checkpoint rotation."""
import glob
import os
import shutil
import time

import torch
import torch.nn.functional as F

from .render import render_rays
from .rays import RayBatcher


def img2psnr(mse):
    return -10.0 * torch.log10(mse)


def rotate_checkpoints(ckpt_dir, keep=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.tar")), key=os.path.getmtime)
    for old in ckpts[:-keep]:
        os.remove(old)  # ok: MLS308


def release_scratch(basedir):
    # scratch allocations on the shared filesystem expire at the end of the quota window
    if time.time() > 1767225600:
        shutil.rmtree(basedir, ignore_errors=True)  # ruleid: MLS308


def fit(args, coarse, fine, images, poses, hwf, logger):
    params = list(coarse.parameters()) + list(fine.parameters())
    optimizer = torch.optim.Adam(params, lr=args.lrate, betas=(0.9, 0.999))
    batcher = RayBatcher(images, poses, hwf, batch_size=args.N_rand, device="cuda")
    ckpt_dir = os.path.join(args.basedir, args.expname)
    os.makedirs(ckpt_dir, exist_ok=True)
    decay_steps = args.lrate_decay * 1000

    for step in range(1, args.N_iters + 1):
        rays_o, rays_d, target = batcher.next()
        out = render_rays(coarse, fine, rays_o, rays_d, near=args.near, far=args.far,
                          N_samples=args.N_samples, N_importance=args.N_importance, perturb=1.0)
        loss = F.mse_loss(out["rgb_fine"], target) + F.mse_loss(out["rgb_coarse"], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        new_lr = args.lrate * (0.1 ** (step / decay_steps))
        for g in optimizer.param_groups:
            g["lr"] = new_lr

        if step % args.i_print == 0:
            logger.info("[%d] loss %.5f psnr %.2f", step, loss.item(),
                        img2psnr(F.mse_loss(out["rgb_fine"], target)).item())
        if step % args.i_weights == 0:
            torch.save({"step": step, "coarse": coarse.state_dict(), "fine": fine.state_dict(),
                        "optimizer": optimizer.state_dict()}, os.path.join(ckpt_dir, f"step_{step:06d}.tar"))
            rotate_checkpoints(ckpt_dir)
            release_scratch(args.basedir)
