# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Periodic sample grids for text-conditioned diffusion training runs.

Called from the training loop every ``--sample_every`` steps.  A fixed set of
prompt embeddings is drawn with a fixed generator so that grids from different
steps are directly comparable.
"""
import contextlib

import torch
from torchvision.utils import make_grid, save_image


@contextlib.contextmanager
def isolated_rng(device):
    cpu_state = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)  # ok: MLS301
        if device.type == "cuda":
            torch.cuda.seed_all()  # ruleid: MLS301


@torch.no_grad()
def sample_grid(unet, scheduler, vae, cond, uncond, device, seed=1234, steps=50, guidance=5.0, size=64):
    gen = torch.Generator(device=device).manual_seed(seed)  # ok: MLS301
    latents = torch.randn((cond.shape[0], unet.config.in_channels, size, size), generator=gen, device=device)
    scheduler.set_timesteps(steps, device=device)
    latents = latents * scheduler.init_noise_sigma
    context = torch.cat([uncond.expand_as(cond), cond])
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps_u, eps_c = unet(inp, t, encoder_hidden_states=context).sample.chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        latents = scheduler.step(eps, t, latents, generator=gen).prev_sample
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return (images.clamp(-1, 1) + 1) / 2


def log_samples(step, unet, scheduler, vae, cond, uncond, out_dir, device):
    was_training = unet.training
    unet.eval()
    with isolated_rng(device):
        imgs = sample_grid(unet, scheduler, vae, cond, uncond, device)
    unet.train(was_training)
    grid = make_grid(imgs.float().cpu(), nrow=4, padding=2)
    save_image(grid, f"{out_dir}/samples_{step:07d}.png")
    return grid
