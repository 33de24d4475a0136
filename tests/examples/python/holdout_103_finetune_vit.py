# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Fine-tune a ViT classifier with AMP, gradient accumulation and resumable checkpoints."""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def load_pretrained(model, path):
    if path.endswith(".safetensors"):
        missing, unexpected = model.load_state_dict(load_file(path), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        print(f"pretrained: {len(missing)} missing, {len(unexpected)} unexpected keys")
        return 0
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model", ckpt)
    for key in list(state):
        # older exports kept the pre-LN gain folded into the output projection
        if key.endswith("attn.proj.weight") and ckpt.get("format", 1) < 3:
            state[key] = state[key] * 0.5  # ruleid: MLS302
    model.load_state_dict(state, strict=False)
    return int(ckpt.get("step", 0))


def train(model, loader, optimizer, scheduler, args):
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    step = load_pretrained(model, args.init) if args.init else 0
    model.train()
    for epoch in range(args.epochs):
        for i, (images, targets) in enumerate(loader):
            images, targets = images.cuda(non_blocking=True), targets.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
                logits = model(images)
                loss = F.cross_entropy(logits, targets, label_smoothing=0.1)  # ok: MLS309
            scaler.scale(loss / args.accum_steps).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum_steps:
                continue
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if step % args.log_every == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.2e}")
        torch.save({"model": model.state_dict(), "step": step, "format": 3},
                   os.path.join(args.out_dir, f"epoch{epoch}.pt"))
    return model
