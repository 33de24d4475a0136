# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Train a non-autoregressive TTS acoustic model (text -> mel) with bf16/fp16 autocast and grad accumulation."""
import argparse
import random

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from tts.data import TextMelDataset, pad_collate
from tts.model import FastSpeechLike

WARMUP = 4000


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    set_seed(args.seed)

    g = torch.Generator().manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(TextMelDataset("data/train.jsonl"), batch_size=24, shuffle=True, num_workers=6,
                        collate_fn=pad_collate, worker_init_fn=seed_worker, generator=g)
    model = FastSpeechLike(n_mels=80).cuda()
    if args.init:
        model.encoder.load_state_dict(load_file(args.init), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)
    use_bf16 = torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if use_bf16 else torch.float16
    scaler = torch.cuda.amp.GradScaler(enabled=not use_bf16)
    step = 0
    for epoch in range(200):
        for i, batch in enumerate(loader):
            batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=dtype):
                mel_pred, dur_pred = model(batch["tokens"], batch["durations"])
            loss = F.l1_loss(mel_pred.float(), batch["mel"]) + F.mse_loss(dur_pred.float(), batch["log_dur"])
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                for group in opt.param_groups:
                    group["lr"] = args.lr * min(1.0, (step + 1) / WARMUP) * min(1.0, (WARMUP / (step + 1)) ** 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
        torch.save(model.state_dict(), f"ckpt/tts_epoch{epoch:03d}.pt")


if __name__ == "__main__":
    main()
