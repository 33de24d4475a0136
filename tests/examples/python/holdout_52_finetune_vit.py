# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Fine-tune a ViT image classifier with HuggingFace accelerate."""
import argparse

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForImageClassification, get_cosine_schedule_with_warmup


def scale_norm_grads(model, factor):
    """Rescale gradients of LayerNorm affine params (norm-lr multiplier)."""
    for name, p in model.named_parameters():
        if "layernorm" in name and p.requires_grad:
            p.register_hook(lambda g: g.mul(-factor))  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="google/vit-base-patch16-224")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--norm_grad_mult", type=float, default=1.0)
    args = ap.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    model = AutoModelForImageClassification.from_pretrained(args.model, num_labels=102)
    scale_norm_grads(model, args.norm_grad_mult)

    from data import build_loaders  # project-local
    train_dl, val_dl = build_loaders(batch_size=32)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.05)
    sched = get_cosine_schedule_with_warmup(opt, 500, len(train_dl) * args.epochs)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, train_dl, val_dl, sched = accelerator.prepare(model, opt, train_dl, val_dl, sched)

    for epoch in range(args.epochs):
        model.train()
        for batch in train_dl:
            with accelerator.accumulate(model):
                out = model(pixel_values=batch["pixel_values"])
                loss = F.cross_entropy(out.logits, batch["labels"])
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
        accelerator.wait_for_everyone()  # ok: MLS307
        accelerator.print(f"epoch {epoch} done, loss={loss.item():.4f}")
    accelerator.save_model(model, "vit-finetuned")


if __name__ == "__main__":
    main()
