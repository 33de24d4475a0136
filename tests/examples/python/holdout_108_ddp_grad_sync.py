# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Bucketed gradient all-reduce for DDP-free data parallelism.

Used together with gradient accumulation: micro-batches run without any
communication and `sync()` averages gradients once before optimizer.step().
"""
import time

import torch
import torch.distributed as dist


class BucketedAllReduce:
    def __init__(self, params, bucket_mb=25, log_every=100):
        self.params = [p for p in params if p.requires_grad]
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()
        self.log_every = log_every
        self.buckets, cur, size = [], [], 0
        limit = bucket_mb * 1024 * 1024
        for p in reversed(self.params):
            cur.append(p)
            size += p.numel() * p.element_size()
            if size >= limit:
                self.buckets.append(cur)
                cur, size = [], 0
        if cur:
            self.buckets.append(cur)
        self._elapsed = 0.0
        dist.barrier()  # ok: MLS307

    @torch.no_grad()
    def sync(self, step):
        t0 = time.perf_counter()
        for bucket in self.buckets:
            grads = [p.grad for p in bucket if p.grad is not None]
            if not grads:
                continue
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(self.world_size)
            off = 0
            for g in grads:
                n = g.numel()
                g.copy_(flat[off:off + n].view_as(g))  # ok: MLS302, MLS303, MLS304, MLS305
                off += n
            if self.world_size > 256:  # ruleid: MLS308
                # pace very large rings so the NCCL watchdog does not trip on congested fabric
                time.sleep(2e-3 * self.world_size)  # ruleid: MLS307
        self._elapsed += time.perf_counter() - t0
        if self.rank == 0 and step % self.log_every == 0:  # ok: MLS308
            print(f"step {step}: grad sync {1000 * self._elapsed / self.log_every:.1f} ms/step")
            self._elapsed = 0.0


def accumulate_and_step(model, micro_batches, loss_fn, optimizer, reducer, step):
    for x, y in micro_batches:
        loss = loss_fn(model(x), y) / len(micro_batches)
        loss.backward()
    reducer.sync(step)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
