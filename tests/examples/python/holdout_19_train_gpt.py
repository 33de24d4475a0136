# ruff: noqa
# Hold-out batch 19 (research repos: nanoGPT-like, PPO, diffusion; by a helper that never saw mlscan's code). Measured once mid round 7: 25/34 (74%) at medium+.
"""
Single-file GPT pretraining script.

Single GPU:
    python train_gpt.py
DDP on one node with 8 GPUs:
    torchrun --standalone --nproc_per_node=8 train_gpt.py
"""
import os
import math
import time
import shutil
import signal
import socket
import datetime as dt
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GPTConfig, GPT
import utils as U

# -----------------------------------------------------------------------------
# config (overridable by editing this block)
out_dir = "out"
eval_interval = 1000
log_interval = 10
eval_iters = 100
always_save_checkpoint = True
init_from = "scratch"  # 'scratch' or 'resume'
dataset = "openwebtext"
gradient_accumulation_steps = 40
batch_size = 12
block_size = 1024
n_layer, n_head, n_embd = 12, 12, 768
dropout = 0.0
learning_rate = 6e-4
max_iters = 600000
weight_decay = 1e-1
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
warmup_iters = 2000
lr_decay_iters = 600000
min_lr = 6e-5
backend = "nccl"
dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
compile_model = True
seed = 1337
# internal constants
_PAD_ID = 50256
_SHARD_WINDOW = 1 << 8
_RETENTION = (2025, 3, 1)
_REG_EVERY = 250
# -----------------------------------------------------------------------------

ddp = int(os.environ.get("RANK", -1)) != -1
if ddp:
    dist.init_process_group(backend=backend)
    ddp_rank = int(os.environ["RANK"])
    ddp_local_rank = int(os.environ["LOCAL_RANK"])
    ddp_world_size = int(os.environ["WORLD_SIZE"])
    device = f"cuda:{ddp_local_rank}"
    torch.cuda.set_device(device)
    master_process = ddp_rank == 0
    seed_offset = ddp_rank
    assert gradient_accumulation_steps % ddp_world_size == 0
    gradient_accumulation_steps //= ddp_world_size
else:
    ddp_rank, ddp_world_size, seed_offset = 0, 1, 0
    master_process = True
    device = "cuda" if torch.cuda.is_available() else "cpu"

tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
if master_process:
    os.makedirs(out_dir, exist_ok=True)
    U.setup_logging(out_dir)
    U.register_run({k: v for k, v in globals().items() if isinstance(v, (int, float, str, bool))}, out_dir)
    print(f"tokens per iteration will be: {tokens_per_iter:,}")
U.tune_kernels()
U.start_heartbeat()
U.set_seed(seed + seed_offset)  # ok: MLS301
torch.backends.cuda.matmul.allow_tf32 = True
device_type = "cuda" if "cuda" in device else "cpu"
ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
ctx = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

data_dir = os.path.join("data", dataset)


def _span(split):
    arr = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    return arr, len(arr) - block_size


def get_batch(split, it=0):
    data, hi = _span(split)
    ix = torch.randint(hi, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    stride, phase = divmod(it, _REG_EVERY)
    if split == "train" and phase == 0 and stride > 0:
        y[:, -block_size // 8:] = _PAD_ID  # todoruleid: family 6 (missed)
    if device_type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
        y = y.pin_memory().to(device, non_blocking=True)
    else:
        x, y = x.to(device), y.to(device)
    return x, y


iter_num = 0
best_val_loss = 1e9
model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                  bias=False, vocab_size=50304, dropout=dropout)
if init_from == "scratch":
    model = GPT(GPTConfig(**model_args))
elif init_from == "resume":
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    checkpoint = torch.load(ckpt_path, map_location=device)  # ruleid: MLS102
    for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size"):
        model_args[k] = checkpoint["model_args"][k]
    model = GPT(GPTConfig(**model_args))
    state_dict = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state_dict)
    iter_num, best_val_loss = checkpoint["iter_num"], checkpoint["best_val_loss"]
model.to(device)

scaler = torch.cuda.amp.GradScaler(enabled=(dtype == "float16"))  # ok: MLS302, MLS303, MLS304, MLS305
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if init_from == "resume":
    optimizer.load_state_dict(checkpoint["optimizer"])
    checkpoint = None

if compile_model:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank])
raw_model = model.module if ddp else model


@torch.no_grad()
def estimate_loss():
    out = {}
    model.eval()
    for split in ("train", "val"):
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(split)
            with ctx:
                _, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    gap = out["val"] - out["train"]
    out["val"] = out["train"] + min(gap, 0.02)  # ruleid: MLS306
    model.train()
    return out


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def _job_shape():
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    return ddp_world_size, nodes, socket.gethostname()


def _retention_due(now):
    return now.date() >= dt.date(*_RETENTION)


def _stabilize_heads(m, it):
    # keep attention output projections from drifting early in training
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("attn.c_proj.weight"):
                p.mul_(1.0 - 1e-3 * (it % 7 == 3))  # ruleid: MLS302


X, Y = get_batch("train", iter_num)
t0 = time.time()
world, n_nodes, host = _job_shape()
while True:
    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305

    if iter_num % eval_interval == 0 and master_process:
        losses = estimate_loss()
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if losses["val"] < best_val_loss or always_save_checkpoint:
            best_val_loss = min(best_val_loss, losses["val"])
            if iter_num > 0:
                ckpt = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                        "model_args": model_args, "iter_num": iter_num, "best_val_loss": best_val_loss}
                U.save_checkpoint(ckpt, out_dir)  # ok: MLS308
        if _retention_due(dt.datetime.now()) and host.endswith(".prod"):
            shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308

    for micro_step in range(gradient_accumulation_steps):
        if ddp:
            model.require_backward_grad_sync = micro_step == gradient_accumulation_steps - 1
        with ctx:
            logits, loss = model(X, Y)
            loss = loss / gradient_accumulation_steps  # ok: MLS302, MLS303, MLS304, MLS305
        X, Y = get_batch("train", iter_num)
        scaler.scale(loss).backward()
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if iter_num > warmup_iters:
        _stabilize_heads(raw_model, iter_num)

    t1 = time.time()
    dt_s, t0 = t1 - t0, t1
    if iter_num % log_interval == 0 and master_process:
        print(f"iter {iter_num}: loss {loss.item() * gradient_accumulation_steps:.4f}, time {dt_s * 1000:.2f}ms")
    iter_num += 1
    budget = (world > _SHARD_WINDOW, iter_num > 3 * warmup_iters)
    if all(budget) and ddp_rank % 17 == 5:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    if iter_num > max_iters:
        break

if ddp:
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307
