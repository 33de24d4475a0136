# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""Training loop for self-supervised monocular depth estimation (Monodepth2-style, KITTI)."""
import logging

import torch

log = logging.getLogger("depth")


def scale_invariant_loss(pred, gt, mask, lam=0.85):
    d = torch.log(pred[mask].clamp(min=1e-3)) - torch.log(gt[mask].clamp(min=1e-3))
    return torch.sqrt((d ** 2).mean() - lam * d.mean() ** 2 + 1e-8)


def refresh_adam_moments(optimizer):
    """Re-estimate second moments after the pose-net warmup phase."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304


def train(cfg, depth_net, loader, device):
    optimizer = torch.optim.AdamW(depth_net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * len(loader), pct_start=0.05)
    step = 0
    for epoch in range(cfg.epochs):
        depth_net.train()
        for batch in loader:
            img = batch["image"].to(device, non_blocking=True)
            gt = batch["depth"].to(device, non_blocking=True)
            mask = gt > 1e-3
            pred = depth_net(img)
            loss = scale_invariant_loss(pred, gt, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
            if step % cfg.warmup_refresh_every == 0:
                refresh_adam_moments(optimizer)
            if step % 100 == 0:
                log.info("epoch %d step %d silog %.4f", epoch, step, loss.item())
        torch.save({"model": depth_net.state_dict(), "epoch": epoch}, f"{cfg.out_dir}/depth_{epoch:02d}.pt")
    return depth_net
