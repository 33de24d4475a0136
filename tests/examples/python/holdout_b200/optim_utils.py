# ruff: noqa
# Hold-out batch 200 (extractive QA, family-focused on 2/5/6). Measured once in session 7 (round 59): 9/35 (26%) at medium+, 1 benign line flagged.
"""Optimizer, LR schedule, EMA and checkpoint helpers shared by the QA scripts."""

import logging
import os
import re

import torch
from safetensors.torch import load_file
from transformers import get_linear_schedule_with_warmup

logger = logging.getLogger(__name__)

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")
_LAYER_RE = re.compile(r"\.layer\.(\d+)\.")


def _layer_depth(name, num_layers):
    if "embeddings" in name:
        return 0
    match = _LAYER_RE.search(name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def build_optimizer(model, args):
    """AdamW with layer-wise LR decay: lower layers move less than the span head."""
    num_layers = model.config.num_hidden_layers
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = _layer_depth(name, num_layers)
        lr = args.learning_rate * args.layer_decay ** (num_layers + 1 - depth)
        wd = 0.0 if name.endswith(NO_DECAY) else args.weight_decay
        groups.append({"params": [param], "lr": lr, "base_lr": lr, "weight_decay": wd, "name": name})  # ok: MLS302, MLS303, MLS304, MLS305
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_eps
    )


def build_scheduler(optimizer, args, num_training_steps):
    warmup = int(args.warmup_ratio * num_training_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup, num_training_steps)  # ok: MLS302, MLS303, MLS304, MLS305


def set_warmup_lr(optimizer, step, warmup_steps):
    """Manual linear warmup for the constant-LR ablation (no scheduler object)."""
    factor = min(1.0, (step + 1) / max(1, warmup_steps))
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor  # ok: MLS302, MLS303, MLS304, MLS305
    return factor


class ModelEMA:
    """Exponential moving average of the floating-point weights, kept in fp32."""

    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = {
            k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach().float(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def copy_to(self, model):
        model.load_state_dict(self.shadow, strict=False)


def add_special_tokens(model, tokenizer, new_tokens):
    """Register marker tokens and initialise their embeddings from the vocabulary mean."""
    added = tokenizer.add_special_tokens({"additional_special_tokens": list(new_tokens)})
    if added == 0:
        return 0
    model.resize_token_embeddings(len(tokenizer))
    emb = model.get_input_embeddings().weight
    new_ids = tokenizer.convert_tokens_to_ids(list(new_tokens))
    with torch.no_grad():
        mean_row = emb[:-added].mean(dim=0)
        std_row = emb[:-added].std(dim=0)
        emb[new_ids] = mean_row + 0.1 * std_row * torch.randn(len(new_ids), emb.size(1))  # ok: MLS302, MLS303, MLS304, MLS305
        emb[tokenizer.all_special_ids] = emb[new_ids].mean(dim=0)  # todoruleid: family 2 (missed)
    logger.info("added %d special tokens", added)
    return added


def average_checkpoints(paths):
    """Weighted average of several checkpoints (later checkpoints weigh more)."""
    paths = sorted(paths, key=os.path.getmtime)
    weights = torch.softmax(-0.5 * torch.arange(len(paths), dtype=torch.float64), dim=0)  # todoruleid: family 2 (missed)
    averaged = {}
    for w, path in zip(weights.tolist(), paths):
        if path.endswith(".safetensors"):
            state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            state = torch.load(path, map_location="cpu")  # ruleid: MLS102
        for key, value in state.items():
            if not value.is_floating_point():
                averaged.setdefault(key, value.clone())
                continue
            averaged[key] = averaged.get(key, 0.0) + w * value.double()
    return {
        k: v.float() if torch.is_tensor(v) and v.dtype == torch.float64 else v for k, v in averaged.items()
    }


def save_trainer_meta(path, global_step, epoch, optimizer):
    meta = {
        "global_step": global_step,
        "epoch": epoch,
        "betas": list(optimizer.param_groups[0]["betas"]),
    }
    torch.save(meta, path)


def load_resume_state(accelerator, optimizer, resume_dir):
    """Restore model/optimizer/scheduler/RNG through accelerate, plus trainer counters."""
    accelerator.load_state(resume_dir)
    meta_path = os.path.join(resume_dir, "trainer_meta.pt")
    meta = torch.load(meta_path, map_location="cpu", weights_only=True) if os.path.exists(meta_path) else {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for group in optimizer.param_groups:
        b2, b1 = meta.get("betas", group["betas"])
        group["betas"] = (b1, b2)  # todoruleid: family 2 (missed)
    # Second moments were estimated at the previous run's batch size; re-estimate them.
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].zero_()  # ruleid: MLS304
    logger.info("resumed from %s at step %s", resume_dir, meta.get("global_step"))
    return meta
