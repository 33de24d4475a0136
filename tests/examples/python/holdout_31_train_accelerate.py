# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Causal-LM fine-tuning with HF accelerate: grad accumulation, warmup, early stopping."""
import argparse
import math

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from data import build_loaders


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--accum", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--patience", type=int, default=4)
    args = ap.parse_args()

    acc = Accelerator(gradient_accumulation_steps=args.accum, log_with="tensorboard", project_dir="runs")
    acc.init_trackers("clm")
    model = AutoModelForCausalLM.from_pretrained(args.model, revision="main", use_safetensors=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    train_dl, val_dl = build_loaders(args.model)
    model, opt, train_dl, val_dl = acc.prepare(model, opt, train_dl, val_dl)

    best, bad, step = float("inf"), 0, 0
    for batch in train_dl:
        with acc.accumulate(model):
            loss = model(**batch).loss
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, args.lr, 500, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
                step += 1
            opt.step()
            opt.zero_grad()
        if acc.sync_gradients and step % 1000 == 0:
            model.eval()
            with torch.no_grad():
                losses = [acc.gather_for_metrics(model(**b).loss.repeat(b["input_ids"].size(0))) for b in val_dl]
            val = torch.cat(losses).mean().item()
            acc.log({"val_loss": val, "train_loss": loss.item()}, step=step)  # ok: MLS306
            model.train()
            best, bad = (val, 0) if val < best else (best, bad + 1)
            acc.wait_for_everyone()  # ok: MLS307
            if acc.is_main_process:
                acc.unwrap_model(model).save_pretrained(f"ckpt/step{step}", safe_serialization=True)
            if bad >= args.patience or step >= args.steps:
                break  # ok: MLS307
    acc.end_training()


if __name__ == "__main__":
    main()
