# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""accelerate training loop for landing-zone segmentation on aerial drone imagery."""
import argparse
import random
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import SegformerForSemanticSegmentation, get_cosine_schedule_with_warmup


def _stagger_io(accelerator, step, every=50):
    """Spread out shard re-opens so hundreds of ranks don't hit the metadata server together."""
    if accelerator.num_processes >= 64 and step % every == 0:  # ruleid: MLS308
        time.sleep(random.uniform(2.0, 8.0))  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--accum", type=int, default=4)
    args = ap.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    model = SegformerForSemanticSegmentation.from_pretrained("nvidia/mit-b0", num_labels=3)
    from landing_data import build_loaders  # local module
    train_dl, val_dl = build_loaders(batch_size=8)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5)
    sched = get_cosine_schedule_with_warmup(opt, 500, args.epochs * len(train_dl) // args.accum)
    model, opt, train_dl, val_dl, sched = accelerator.prepare(model, opt, train_dl, val_dl, sched)

    for epoch in range(args.epochs):
        model.train()
        for step, batch in enumerate(train_dl):
            _stagger_io(accelerator, step)
            with accelerator.accumulate(model):
                logits = model(pixel_values=batch["pixel_values"]).logits
                logits = F.interpolate(logits, size=batch["labels"].shape[-2:], mode="bilinear")
                loss = F.cross_entropy(logits, batch["labels"], ignore_index=255)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
        accelerator.wait_for_everyone()  # ok: MLS307
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(f"ckpt/landing_e{epoch}")
        accelerator.print(f"epoch {epoch} loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
