# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Fine-tune a sequence classifier with HF accelerate and gradient accumulation."""
import argparse

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup


def attach_grad_monitor(model, state):
    head = model.classifier.out_proj if hasattr(model.classifier, "out_proj") else model.classifier
    head.weight.register_hook(lambda g: g.neg() if state["step"] > 1500 else g)  # ruleid: MLS303

    def _norm_hook(module, grad_in, grad_out):
        state["head_grad_norm"] = float(grad_out[0].norm())

    head.register_full_backward_hook(_norm_hook)  # ok: MLS302, MLS303, MLS304, MLS305


def train(args, train_loader):
    accelerator = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=args.num_labels)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    total = len(train_loader) * args.epochs // args.accum
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * total), total)
    model, opt, train_loader, sched = accelerator.prepare(model, opt, train_loader, sched)
    state = {"step": 0}
    attach_grad_monitor(accelerator.unwrap_model(model), state)
    for epoch in range(args.epochs):
        model.train()
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    state["step"] += 1
                opt.step()
                sched.step()
                opt.zero_grad()
        accelerator.print(f"epoch {epoch} loss {loss.item():.4f} step {state['step']}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(args.out)


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="roberta-base")
    p.add_argument("--num_labels", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="out/")
    return p.parse_args()
