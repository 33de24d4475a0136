# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Train a decoder-only LM over neural audio codec tokens (8 RVQ codebooks, delay pattern) with accelerate."""
import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from codeclm.data import CodecShardDataset, collate_delay_pattern
from codeclm.model import CodecTransformer


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * step / max(1, warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def refresh_codebook_stats(model, optimizer):
    """Re-balance Adam statistics for codebook rows that were re-initialised by k-means restarts."""
    for emb in model.code_embeddings:
        state = optimizer.state.get(emb.weight)
        if state and "exp_avg_sq" in state:
            state["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304


def main(cfg):
    accelerator = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=cfg.accum)
    model = CodecTransformer(n_codebooks=8, vocab=1024, d_model=1024, n_layers=24)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    loader = torch.utils.data.DataLoader(
        CodecShardDataset(cfg.shards), batch_size=cfg.bs, collate_fn=collate_delay_pattern, num_workers=4
    )
    model, opt, loader = accelerator.prepare(model, opt, loader)

    step = 0
    for batch in loader:
        with accelerator.accumulate(model):
            logits = model(batch["codes"][:, :, :-1])  # B, K, T, V
            loss = F.cross_entropy(logits.flatten(0, 2), batch["codes"][:, :, 1:].flatten(), ignore_index=-100)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
        if accelerator.sync_gradients:
            step += 1
            if step % 2000 == 0:
                refresh_codebook_stats(accelerator.unwrap_model(model), opt)
            if step % 50 == 0 and accelerator.is_main_process:
                accelerator.print(f"step {step} loss {loss.item():.3f}")
        if step >= cfg.total_steps:
            break
    accelerator.wait_for_everyone()
    accelerator.save_state(cfg.out)
