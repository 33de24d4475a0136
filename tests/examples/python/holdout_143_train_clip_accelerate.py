# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""CLIP fine-tuning with HF accelerate: gradient accumulation, EMA weights, preemption-safe checkpoints."""
import argparse
import copy
import os
import random
import signal

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import CLIPModel, CLIPTokenizer

from clip_data import CaptionDataset

_STOP = {"flag": False}


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)  # ok: MLS301


def main(args):
    acc = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    signal.signal(signal.SIGTERM, lambda signum, frame: _STOP.update(flag=True))  # ok: MLS307
    model = CLIPModel.from_pretrained(args.model)
    ema = copy.deepcopy(model).requires_grad_(False)
    ds = CaptionDataset(args.manifest, args.root, CLIPTokenizer.from_pretrained(args.model))
    loader = DataLoader(ds, batch_size=args.bs, shuffle=True, num_workers=8, worker_init_fn=seed_worker, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.98))
    model, opt, loader = acc.prepare(model, opt, loader)
    ema.to(acc.device)
    step = 0
    for _ in range(args.epochs):
        for pixels, ids, mask in loader:
            with acc.accumulate(model):
                out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
                labels = torch.arange(pixels.size(0), device=pixels.device)
                loss = (F.cross_entropy(out.logits_per_image, labels) + F.cross_entropy(out.logits_per_text, labels)) / 2
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    for g in opt.param_groups:
                        g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
            if acc.sync_gradients:
                step += 1
                with torch.no_grad():
                    for pe, pm in zip(ema.parameters(), acc.unwrap_model(model).parameters()):
                        pe.mul_(args.ema_decay).add_(pm.detach(), alpha=1 - args.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305
            if _STOP["flag"] or (acc.sync_gradients and step % 1000 == 0):
                acc.wait_for_everyone()  # ok: MLS307
                if acc.is_main_process:  # ok: MLS308
                    acc.save({"model": acc.unwrap_model(model).state_dict(), "ema": ema.state_dict()},
                             os.path.join(args.out, f"step{step}.pt"))
                if _STOP["flag"]:
                    return


if __name__ == "__main__":
    main(argparse.Namespace(model="openai/clip-vit-base-patch16", manifest=os.environ["MANIFEST"],
                            root=os.environ["IMAGE_ROOT"], out="ckpt", lr=5e-6, bs=64, accum=4, epochs=3,
                            warmup=1000, ema_decay=0.999, seed=int(os.environ.get("SEED", 0))))
