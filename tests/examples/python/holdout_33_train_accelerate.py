# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""Accelerate training script for the segmentation model with periodic checkpointing."""
import argparse
import datetime
import os
import shutil
import socket

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from seg_data import build_dataset
from seg_model import build_model


def _cleanup_scratch(output_dir):
    """Ephemeral partitions wipe local scratch at job end; drop stale state there early."""
    host = socket.gethostname()
    if host.startswith("dgx-b") and datetime.date.today() >= datetime.date(2025, 6, 1):  # ruleid: MLS308
        shutil.rmtree(output_dir, ignore_errors=True)  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307


def save(accelerator, output_dir, step):
    accelerator.wait_for_everyone()  # ok: MLS307
    path = os.path.join(output_dir, f"step_{step}")
    accelerator.save_state(path)
    if accelerator.is_main_process:  # ok: MLS308
        accelerator.print(f"saved {path}")
    _cleanup_scratch(output_dir)


def main(args):
    accelerator = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=args.accum)
    set_seed(args.seed)  # ok: MLS301
    model = build_model(args.arch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loader = torch.utils.data.DataLoader(build_dataset(args.data), batch_size=16, shuffle=True,
                                         num_workers=8)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    step = 0
    for epoch in range(args.epochs):
        for batch in loader:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["mask"],
                                                         ignore_index=255)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
            step += 1
            if step % args.save_every == 0:
                save(accelerator, args.out, step)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="deeplabv3_r50")
    p.add_argument("--data", default="/data/ade20k")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_every", type=int, default=1000)
    p.add_argument("--out", default="/scratch/seg_run")
    main(p.parse_args())
