# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""torchrun entry point: DDP training with a resumable, epoch-aware sampler."""
import math
import os
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Sampler


class ResumableDistributedSampler(Sampler):
    def __init__(self, dataset, rank, world_size, seed=0, start_index=0):
        self.n, self.rank, self.world = len(dataset), rank, world_size
        self.seed, self.epoch, self.start_index = seed, 0, start_index
        self.per_rank = math.ceil(self.n / world_size)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        idx = torch.randperm(self.n, generator=g).tolist()
        idx += idx[: self.per_rank * self.world - self.n]
        return iter(idx[self.rank::self.world][self.start_index:])

    def __len__(self):
        return self.per_rank - self.start_index


def run(model, dataset, epochs=10, lr=1e-3, seed=0):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])  # ok: MLS308
    torch.cuda.set_device(local_rank)
    torch.manual_seed(seed)  # ok: MLS301
    model = DDP(model.cuda(), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=lr * world, momentum=0.9)
    scaler = torch.cuda.amp.GradScaler()
    sampler = ResumableDistributedSampler(dataset, rank, world, seed=seed)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler, num_workers=4, pin_memory=True)
    stop = {"flag": False}
    signal.signal(signal.SIGUSR1, lambda s, f: stop.update(flag=True))  # ok: MLS307
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        if rank == 0:
            torch.save(model.module.state_dict(), f"ckpt_epoch{epoch}.pt")  # ok: MLS308
            print(f"epoch {epoch} loss {loss.item():.4f}")
        dist.barrier()
        if stop["flag"]:
            break
    dist.destroy_process_group()  # ok: MLS307
