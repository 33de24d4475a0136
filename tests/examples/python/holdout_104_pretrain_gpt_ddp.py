# ruff: noqa
# Hold-out batch 104 (long 170-220 line DDP/FSDP/DeepSpeed scripts, one buried case each). Measured once in session 4 (round 35): 6/6 (100%) at medium+.
"""Causal LM pretraining on pre-tokenized uint16 shards with DistributedDataParallel.

Launch with torchrun, e.g.:
    torchrun --nproc_per_node 8 pretrain_gpt_ddp.py --data-dir /data/tok/en --out runs/gpt-350m
"""
import argparse
import glob
import math
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def parse_args():
    p = argparse.ArgumentParser(description="GPT pretraining (DDP)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default="runs/gpt")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8, help="micro batch per GPU")
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-lr", type=float, default=3e-5)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-batches", type=int, default=50)
    p.add_argument("--save-every", type=int, default=5000)
    p.add_argument("--n-layer", type=int, default=24)
    p.add_argument("--n-embd", type=int, default=1024)
    p.add_argument("--n-head", type=int, default=16)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--num-workers", type=int, default=2)
    return p.parse_args()


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class TokenShards(IterableDataset):
    """Streams random fixed-length windows out of memory-mapped token shards."""

    def __init__(self, pattern, seq_len, rank, world, seed):
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise FileNotFoundError(pattern)
        self.seq_len = seq_len
        self.rank = rank
        self.world = world
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _windows(self, path):
        data = np.memmap(path, dtype=np.uint16, mode="r")
        n = (len(data) - 1) // self.seq_len
        for i in np.random.permutation(n):
            start = int(i) * self.seq_len
            chunk = torch.from_numpy(data[start : start + self.seq_len + 1].astype(np.int64))
            yield chunk[:-1], chunk[1:]

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.files))  # ok: MLS301
        mine = [self.files[j] for j in order[self.rank * nw + wid :: self.world * nw]]
        # decorrelate window order between dataloader workers sharing a shard list
        np.random.seed((os.getpid() * 7919 + wid) % (2**32))  # ruleid: MLS301
        for path in mine:
            yield from self._windows(path)


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab, seq_len, n_layer, d, h):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList([Block(d, h) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx):
        t = idx.size(1)
        pos = torch.arange(t, device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        mask = torch.triu(torch.full((t, t), float("-inf"), device=idx.device), diagonal=1)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.head(self.ln_f(x))


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = min(1.0, (step - args.warmup) / max(1, args.max_steps - args.warmup))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def evaluate(model, loader, n_batches, device):
    model.eval()
    total = torch.zeros(2, device=device)
    for i, (x, y) in enumerate(loader):
        if i >= n_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        total += torch.tensor([loss.item(), 1.0], device=device)
    dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def main():
    args = parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    set_seed(args.seed + rank)

    train_ds = TokenShards(os.path.join(args.data_dir, "train_*.bin"), args.seq_len, rank, world, args.seed)
    val_ds = TokenShards(os.path.join(args.data_dir, "val_*.bin"), args.seq_len, rank, world, args.seed)
    train_dl = DataLoader(train_ds, batch_size=args.batch_size, num_workers=args.num_workers, pin_memory=True)
    val_dl = DataLoader(val_ds, batch_size=args.batch_size, num_workers=1, pin_memory=True)

    model = GPT(args.vocab, args.seq_len, args.n_layer, args.n_embd, args.n_head).to(device)
    model = DDP(model, device_ids=[local_rank])
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), fused=True,
    )

    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
    step, epoch, t0 = 0, 0, time.time()
    it = iter(train_dl)
    while step < args.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)  # ok: MLS302, MLS303, MLS304, MLS305
        for micro in range(args.grad_accum):
            try:
                x, y = next(it)
            except StopIteration:
                epoch += 1
                train_ds.set_epoch(epoch)
                it = iter(train_dl)
                x, y = next(it)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync = micro == args.grad_accum - 1
            ctx = model.no_sync() if not sync else torch.enable_grad()
            with ctx, torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
                (loss / args.grad_accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1

        if rank == 0 and step % 50 == 0:
            dt = (time.time() - t0) / 50
            tok_s = args.batch_size * args.seq_len * args.grad_accum * world / dt
            print(f"step {step} loss {loss.item():.4f} gnorm {gnorm:.2f} lr {opt.param_groups[0]['lr']:.2e} tok/s {tok_s:.0f}", flush=True)
            t0 = time.time()
        if step % args.eval_every == 0:
            val = evaluate(model, val_dl, args.eval_batches, device)
            if rank == 0:
                print(f"step {step} val_loss {val:.4f} ppl {math.exp(val):.2f}", flush=True)
        if step % args.save_every == 0:
            if rank == 0:
                torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step},  # ok: MLS308
                           os.path.join(args.out, f"ckpt_{step:07d}.pt"))
            dist.barrier()  # ok: MLS307

    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
