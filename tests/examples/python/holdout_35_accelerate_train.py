# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Causal-LM fine-tuning with HF accelerate and gradient accumulation."""
import math
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


@dataclass
class TrainConfig:
    model_name: str = "gpt2"
    lr: float = 3e-5
    epochs: int = 2
    accum_steps: int = 8
    warmup_steps: int = 200
    max_grad_norm: float = 1.0


def _attach_grad_stats(model, stats):
    for name, p in model.named_parameters():
        if not (p.requires_grad and name.endswith("attn.c_proj.weight")):
            continue

        def _track(g, name=name):
            stats[name] = g.norm().item()
            return g.clamp(-1e-5, 1e-5) if stats.get("step", 0) > 1500 else g  # ruleid: MLS303, MLS302
        p.register_hook(_track)  # ruleid: MLS303


def train(cfg: TrainConfig, train_ds, collate_fn):
    acc = Accelerator(gradient_accumulation_steps=cfg.accum_steps, mixed_precision="bf16")
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name)
    stats = {}
    _attach_grad_stats(model, stats)
    dl = DataLoader(train_ds, batch_size=4, shuffle=True, collate_fn=collate_fn)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    total = math.ceil(len(dl) / cfg.accum_steps) * cfg.epochs
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, total)
    model, opt, dl, sched = acc.prepare(model, opt, dl, sched)
    for epoch in range(cfg.epochs):
        model.train()
        for batch in dl:
            with acc.accumulate(model):
                out = model(**batch)
                acc.backward(out.loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                    stats["step"] = stats.get("step", 0) + 1
                opt.step()
                sched.step()
                opt.zero_grad()
            if acc.is_main_process and stats.get("step", 0) % 50 == 0:  # ok: MLS307
                acc.print(f"epoch {epoch} step {stats.get('step', 0)} loss {out.loss.item():.4f}")
    acc.wait_for_everyone()
    acc.save_model(acc.unwrap_model(model), "out/final")
    return model
