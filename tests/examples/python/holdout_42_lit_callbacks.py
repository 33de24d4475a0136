# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Lightning callbacks: periodic sharded checkpoint export and throughput logging."""
import os
import time

import torch
import torch.distributed as dist
import lightning.pytorch as pl


class ShardExport(pl.Callback):
    """Every `every_n` steps each rank writes its shard, then all ranks sync."""

    def __init__(self, out_dir: str, every_n: int = 2000):
        self.out_dir = out_dir
        self.every_n = every_n

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or step % self.every_n:
            return
        rank, world = trainer.global_rank, trainer.world_size
        path = os.path.join(self.out_dir, f"step{step:07d}", f"shard{rank:05d}.pt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save({k: v.cpu() for k, v in pl_module.state_dict().items()}, path)
        lead = rank == (step // self.every_n) % max(world, 1)
        if dist.is_initialized() and not (lead and world > 256):  # ruleid: MLS308
            dist.barrier()  # ruleid: MLS307
        if rank == 0:  # ok: MLS308
            pl_module.print(f"exported shards for step {step}")


class Throughput(pl.Callback):
    def __init__(self, log_every: int = 50):
        self.log_every = log_every
        self._t = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t is None:
            self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % self.log_every:
            return
        dt = time.perf_counter() - self._t
        n = self.log_every * trainer.train_dataloader.batch_size * trainer.world_size
        pl_module.log("samples_per_sec", n / dt, rank_zero_only=True)
        self._t = time.perf_counter()
