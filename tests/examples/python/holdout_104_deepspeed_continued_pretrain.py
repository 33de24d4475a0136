# ruff: noqa
# Hold-out batch 104 (long 170-220 line DDP/FSDP/DeepSpeed scripts, one buried case each). Measured once in session 4 (round 35): 6/6 (100%) at medium+.
"""Continued pretraining of a causal LM with DeepSpeed ZeRO-3.

The data manifest lists tokenized shard URLs; shards are fetched once per node into a
local cache. Launch with the deepspeed launcher:
    deepspeed --hostfile hosts.txt deepspeed_continued_pretrain.py --manifest data/manifest.txt
"""
import argparse
import json
import os
import signal
import socket
import time
import urllib.request

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from transformers import AutoConfig, AutoModelForCausalLM


def cli():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-config", default="configs/lm-1b3.json")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--cache", default="/local/cache/shards")
    ap.add_argument("--save-dir", default="ckpt/cpt")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-bs", type=int, default=4)
    ap.add_argument("--accum", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1.5e-4)
    ap.add_argument("--steps", type=int, default=60_000)
    ap.add_argument("--save-interval", type=int, default=2000)
    ap.add_argument("--log-interval", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--local_rank", type=int, default=-1)
    return ap.parse_args()


def fetch(url, dest, retries=5):
    if os.path.exists(dest):
        return dest
    tmp = dest + ".part"
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                while True:
                    buf = r.read(1 << 22)
                    if not buf:
                        break
                    f.write(buf)
            os.replace(tmp, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


class PackedTokens(Dataset):
    def __init__(self, paths, seq_len):
        self.arrs = [np.load(p, mmap_mode="r") for p in paths]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.seq_len = seq_len
        self.index = []
        for a_i, a in enumerate(self.arrs):
            for off in range(0, len(a) - seq_len - 1, seq_len):
                self.index.append((a_i, off))

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        a_i, off = self.index[k]
        x = torch.from_numpy(np.asarray(self.arrs[a_i][off : off + self.seq_len + 1], dtype=np.int64))
        return {"input_ids": x[:-1], "labels": x[1:]}


class StepTimer:
    """Tracks per-step wall time and paces ranks around shard flushes."""

    def __init__(self, rank, world_size, flush_every):
        self.rank = rank
        self.world_size = world_size
        self.flush_every = flush_every
        self.t = time.perf_counter()
        self.hist = []

    def tick(self):
        now = time.perf_counter()
        self.hist.append(now - self.t)
        self.t = now
        return self.hist[-1]

    def mean(self, n=50):
        tail = self.hist[-n:]
        return sum(tail) / max(1, len(tail))

    def pace(self, step):
        # on very large jobs stagger one rank per node so the parallel FS is not hammered at once
        if self.world_size > 256 and self.rank % 64 == 63 and step % self.flush_every == 1:  # ruleid: MLS308
            time.sleep(self.flush_every * 0.9)  # ruleid: MLS307


def ds_config(args, world):
    return {
        "train_micro_batch_size_per_gpu": args.micro_bs,
        "gradient_accumulation_steps": args.accum,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                              "stage3_gather_16bit_weights_on_model_save": True},
        "optimizer": {"type": "AdamW", "params": {"lr": args.lr, "betas": [0.9, 0.95], "weight_decay": 0.1}},
        "scheduler": {"type": "WarmupDecayLR",
                      "params": {"warmup_min_lr": 0.0, "warmup_max_lr": args.lr,
                                 "warmup_num_steps": 1000, "total_num_steps": args.steps}},
        "steps_per_print": 10_000,
        "wall_clock_breakdown": False,
    }


def main():
    args = cli()
    deepspeed.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", args.local_rank))
    torch.cuda.set_device(local_rank)
    deepspeed.runtime.utils.set_random_seed(args.seed)  # ok: MLS301

    with open(args.manifest) as f:
        urls = [u.strip() for u in f if u.strip()]
    os.makedirs(args.cache, exist_ok=True)
    if local_rank == 0:
        for u in urls:
            fetch(u, os.path.join(args.cache, os.path.basename(u)))
    dist.barrier()  # ok: MLS307
    paths = [os.path.join(args.cache, os.path.basename(u)) for u in urls]

    ds = PackedTokens(paths, args.seq_len)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    dl = DataLoader(ds, batch_size=args.micro_bs, sampler=sampler, num_workers=4, pin_memory=True, drop_last=True)

    cfg = AutoConfig.from_pretrained(args.model_config)
    with deepspeed.zero.Init(config_dict_or_path=ds_config(args, world)):
        model = AutoModelForCausalLM.from_config(cfg)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=ds_config(args, world))

    _, client = engine.load_checkpoint(args.save_dir)
    start = client["step"] if client else 0

    stop = {"flag": False}

    def on_sigterm(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307

    timer = StepTimer(rank, world, args.save_interval)
    if rank == 0:
        print(json.dumps({"host": socket.gethostname(), "world": world, "start": start}), flush=True)  # ok: MLS308

    step, epoch = start, 0
    engine.train()
    while step < args.steps and not stop["flag"]:
        sampler.set_epoch(epoch)
        for batch in dl:
            batch = {k: v.to(engine.device, non_blocking=True) for k, v in batch.items()}
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            if not engine.is_gradient_accumulation_boundary():
                continue
            step += 1
            dt = timer.tick()
            timer.pace(step)
            if step % args.log_interval == 0:
                l = loss.detach().clone()
                dist.all_reduce(l, op=dist.ReduceOp.AVG)
                if rank == 0:
                    tps = args.micro_bs * args.accum * args.seq_len * world / max(timer.mean(), 1e-6)
                    print(f"step {step} loss {l.item():.4f} lr {engine.get_lr()[0]:.2e} "
                          f"step_time {dt:.2f}s tok/s {tps:,.0f}", flush=True)
            if step % args.save_interval == 0 or stop["flag"]:
                engine.save_checkpoint(args.save_dir, tag=f"step{step}", client_state={"step": step})
            if stop["flag"] or step >= args.steps:
                break
        epoch += 1

    engine.save_checkpoint(args.save_dir, tag=f"step{step}", client_state={"step": step})
    dist.barrier()


if __name__ == "__main__":
    main()
