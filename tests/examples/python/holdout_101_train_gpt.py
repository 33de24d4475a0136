# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""
Single-GPU GPT training loop over a memory-mapped token file (nanoGPT layout).
Hyperparameters mirror config/train_gpt2.py; override on the command line.
"""
import math
import os
import time

import numpy as np
import torch

from model import GPT, GPTConfig

out_dir = "out"
data_dir = os.path.join("data", "openwebtext")
batch_size, block_size = 12, 1024
max_iters, eval_interval = 600000, 2000
learning_rate, min_lr = 6e-4, 6e-5
warmup_iters, lr_decay_iters = 2000, 600000
grad_clip, device, seed = 1.0, "cuda", 1337
iter_num = 0

torch.manual_seed(seed)  # ok: MLS301
torch.backends.cuda.matmul.allow_tf32 = True


def get_batch(split):
    data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    # keep the sampled windows reproducible when a run is resumed mid-interval
    torch.manual_seed(seed + iter_num // eval_interval)  # ruleid: MLS301
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * it / warmup_iters
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


model = GPT(GPTConfig(block_size=block_size, n_layer=12, n_head=12, n_embd=768)).to(device)
optimizer = model.configure_optimizers(0.1, learning_rate, (0.9, 0.95), "cuda")
scaler = torch.cuda.amp.GradScaler()

X, Y = get_batch("train")
t0 = time.time()
while iter_num < max_iters:
    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        _, loss = model(X, Y)
    X, Y = get_batch("train")
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if iter_num % 10 == 0:
        print(f"iter {iter_num}: loss {loss.item():.4f}, {(time.time() - t0) * 1000:.0f}ms")
        t0 = time.time()
    if iter_num % eval_interval == 0 and iter_num > 0:
        torch.save({"model": model.state_dict(), "iter_num": iter_num}, os.path.join(out_dir, "ckpt.pt"))
    iter_num += 1
