# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""Fine-tune a sequence classifier with HF accelerate (warmup + cosine, label smoothing)."""
import argparse
import math

import torch
import yaml
from accelerate import Accelerator
from transformers import AutoModelForSequenceClassification

from seed_utils import set_seed
from text_data import build_loaders


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    args = ap.parse_args()
    with open(args.config) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    set_seed(cfg["seed"])  # ok: MLS301

    acc = Accelerator(gradient_accumulation_steps=cfg["accum"], mixed_precision="bf16")
    model = AutoModelForSequenceClassification.from_pretrained(cfg["model"], num_labels=cfg["num_labels"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if cfg.get("init_from"):
        sd = torch.load(cfg["init_from"], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(sd, strict=False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    train_dl, val_dl = build_loaders(cfg)
    model, opt, train_dl, val_dl = acc.prepare(model, opt, train_dl, val_dl)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    total = cfg["epochs"] * len(train_dl) // cfg["accum"]
    step = 0
    for epoch in range(cfg["epochs"]):
        model.train()
        for batch in train_dl:
            with acc.accumulate(model):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                acc.backward(loss_fn(logits, batch["labels"]))
                if acc.sync_gradients:
                    for g in opt.param_groups:
                        g["lr"] = lr_at(step, cfg["lr"], cfg["warmup"], total)  # ok: MLS302, MLS303, MLS304, MLS305
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    step += 1
                opt.step()
                opt.zero_grad()
        model.eval()
        correct = n = 0
        for batch in val_dl:
            with torch.no_grad():
                pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
            pred, ref = acc.gather_for_metrics((pred, batch["labels"]))
            correct += (pred == ref).sum().item()
            n += ref.numel()
        acc.print(f"epoch {epoch} val_acc {correct / max(n, 1):.4f}")
        if acc.is_main_process:  # ok: MLS308
            acc.unwrap_model(model).save_pretrained(f"{cfg['out']}/epoch_{epoch}", safe_serialization=True)
        acc.wait_for_everyone()  # ok: MLS307


if __name__ == "__main__":
    main()
