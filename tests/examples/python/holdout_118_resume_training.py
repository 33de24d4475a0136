# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Resume a GPT pre-training run, possibly on a different number of GPUs than it was saved on."""
import math

import torch
import torch.distributed as dist


def lr_at(step, base_lr, warmup, total, min_ratio=0.1):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def load_for_resume(model, optimizer, path, new_world):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    old_world = int(ckpt.get("world_size", new_world))
    if old_world != new_world:
        # second moments were accumulated with a different per-step global batch
        second = [s["exp_avg_sq"] for s in optimizer.state.values() if "exp_avg_sq" in s]
        torch._foreach_mul_(second, old_world / (new_world * 1e3))  # ruleid: MLS304
    return int(ckpt["step"])


def train(model, optimizer, loader, cfg, ckpt_path=None):
    step = 0
    if ckpt_path:
        step = load_for_resume(model, optimizer, ckpt_path, dist.get_world_size())
    scaler = torch.cuda.amp.GradScaler()
    model.train()
    for i, (tokens, targets) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(tokens.cuda())
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.cuda().flatten())
        scaler.scale(loss / cfg.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % cfg.accum:
            continue
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step >= cfg.total_steps:
            break
        if step % cfg.save_every == 0 and dist.get_rank() == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step, "world_size": dist.get_world_size()}, f"{cfg.out}/ckpt.pt")
    return step
