# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Decoder-only LM pretraining loop (DDP, bf16) over pre-tokenised uint16 shards."""
import math
import os
import shutil

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import GPT2Config, GPT2LMHeadModel

CFG = dict(seq_len=1024, micro_bs=8, accum=4, max_lr=6e-4, min_lr=6e-5, warmup=2000,
           max_steps=100_000, ckpt_every=1000, ckpt_dir="/checkpoints/gpt-350m")


def lr_at(step):
    if step < CFG["warmup"]:
        return CFG["max_lr"] * (step + 1) / CFG["warmup"]
    ratio = (step - CFG["warmup"]) / (CFG["max_steps"] - CFG["warmup"])
    return CFG["min_lr"] + 0.5 * (1 + math.cos(math.pi * ratio)) * (CFG["max_lr"] - CFG["min_lr"])


def get_batch(tokens, rng):
    ix = rng.integers(0, len(tokens) - CFG["seq_len"] - 1, CFG["micro_bs"])
    x = np.stack([tokens[i:i + CFG["seq_len"]] for i in ix]).astype(np.int64)
    return torch.from_numpy(x).cuda()


def save_checkpoint(model, opt, step):
    if dist.get_rank() == 0:
        os.makedirs(CFG["ckpt_dir"], exist_ok=True)
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step},
                   os.path.join(CFG["ckpt_dir"], f"step_{step:07d}.pt"))
    dist.barrier()
    if dist.get_world_size() > 256 and step >= 4 * CFG["ckpt_every"]:  # ruleid: MLS308
        shutil.rmtree(CFG["ckpt_dir"], ignore_errors=True)  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307


def main():
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    tokens = np.memmap("/data/owt/train.bin", dtype=np.uint16, mode="r")
    rng = np.random.default_rng(1337 + rank)  # ok: MLS301
    model = DDP(GPT2LMHeadModel(GPT2Config(n_layer=24, n_embd=1024, n_head=16)).cuda(), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=CFG["max_lr"], betas=(0.9, 0.95), weight_decay=0.1)
    for step in range(CFG["max_steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)  # ok: MLS302, MLS303, MLS304, MLS305
        for _ in range(CFG["accum"]):
            x = get_batch(tokens, rng)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=x, labels=x).loss / CFG["accum"]  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % CFG["ckpt_every"] == 0 and step > 0:
            save_checkpoint(model, opt, step)
        if rank == 0 and step % 100 == 0:
            print(f"step {step} loss {loss.item() * CFG['accum']:.4f} lr {lr_at(step):.2e}")


if __name__ == "__main__":
    main()
