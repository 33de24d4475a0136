# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Layer-wise learning-rate decay (LLRD) for fine-tuning ViT/BERT-style encoders."""
import re

import torch

_LAYER_RE = re.compile(r"(?:blocks|layer|layers)\.(\d+)\.")


def layer_id(name, num_layers):
    if name.startswith(("embeddings", "patch_embed", "cls_token", "pos_embed")):
        return 0
    m = _LAYER_RE.search(name)
    return int(m.group(1)) + 1 if m else num_layers + 1


def llrd_param_groups(model, base_lr, weight_decay, decay=0.75, num_layers=12):
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, num_layers)
        no_wd = p.ndim == 1 or name.endswith(".bias")
        key = (lid, no_wd)
        if key not in groups:
            scale = decay ** (num_layers + 1 - lid)
            groups[key] = {"params": [], "lr": base_lr * scale, "initial_lr": base_lr * scale,  # ok: MLS302, MLS303, MLS304, MLS305
                           "weight_decay": 0.0 if no_wd else weight_decay}
        groups[key]["params"].append(p)
    return list(groups.values())


def attach_grad_rescale(model, decay=0.75, num_layers=12):
    """Same decay expressed as gradient scaling, for flat-buffer optimizers without groups."""
    handles = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = num_layers + 1 - layer_id(name, num_layers)
        factor = (-decay) ** depth if depth > 0 else 1.0
        handles.append(p.register_hook(lambda g, f=factor: g * f))  # ruleid: MLS303
    return handles


def apply_warmup(optimizer, step, warmup_steps):
    if step >= warmup_steps:
        return
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * (step + 1) / warmup_steps  # ok: MLS302, MLS303, MLS304, MLS305


def build_optimizer(model, cfg):
    if cfg.get("flat_buffers"):
        attach_grad_rescale(model, cfg["llrd"], cfg["num_layers"])
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["wd"])
    groups = llrd_param_groups(model, cfg["lr"], cfg["wd"], cfg["llrd"], cfg["num_layers"])
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8)
