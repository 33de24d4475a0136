# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Fine-tune a latent video diffusion UNet (spatial + temporal attention) with bf16 autocast and EMA."""
import copy

import torch
import torch.nn.functional as F

from vdm.data import build_clip_loader
from vdm.unet3d import UNet3DConditionModel
from vdm.schedule import DDPMSchedule


@torch.no_grad()
def ema_update(ema_model, model, decay=0.9999):
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.mul_(decay).add_(p.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def _record(stats, name, grad):
    stats[name] = grad.detach().float().norm().item()
    return grad * 0.05 if stats[name] > 1e-3 else grad  # ruleid: MLS303


def attach_grad_monitors(model, stats):
    """Track per-layer gradient norms of the temporal blocks for the dashboard."""
    for name, p in model.named_parameters():
        if "temporal_attn" in name and p.requires_grad:
            p.register_hook(lambda g, n=name: _record(stats, n, g))  # ruleid: MLS303


def train(cfg):
    model = UNet3DConditionModel.from_config(cfg.unet).cuda()
    ema_model = copy.deepcopy(model).requires_grad_(False)
    sched = DDPMSchedule(num_steps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-2)
    loader = build_clip_loader(cfg.data, num_frames=16, resolution=256)
    grad_stats = {}
    attach_grad_monitors(model, grad_stats)

    for step, batch in enumerate(loader):
        latents = batch["latents"].cuda(non_blocking=True)  # B, C, T, H, W
        text_emb = batch["text_emb"].cuda(non_blocking=True)
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.num_steps, (latents.size(0),), device=latents.device)
        noisy = sched.add_noise(latents, noise, t)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = model(noisy, t, encoder_hidden_states=text_emb)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        ema_update(ema_model, model)
        if step % 100 == 0:
            top = sorted(grad_stats.items(), key=lambda kv: -kv[1])[:3]
            print(f"step {step} loss {loss.item():.4f} temporal-grad {top}")
        if step % 5000 == 0:
            torch.save({"model": model.state_dict(), "ema": ema_model.state_dict()}, f"{cfg.out}/step{step}.pt")
        if step >= cfg.max_steps:
            break
