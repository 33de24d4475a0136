# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""DDP entry points for weakly supervised video anomaly detection (MIL ranking on UCF-Crime)."""
import logging
import os
import signal
import socket

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def mil_ranking_loss(scores, labels, lambda_smooth=8e-5, lambda_sparse=8e-5):
    """scores: (B, 32) segment scores; labels: (B,) 1 for anomalous bags."""
    abn, nor = scores[labels == 1], scores[labels == 0]
    n = min(len(abn), len(nor))
    hinge = torch.relu(1.0 - abn[:n].max(dim=1).values + nor[:n].max(dim=1).values).mean()
    smooth = ((abn[:, 1:] - abn[:, :-1]) ** 2).sum(dim=1).mean()
    sparse = abn.sum(dim=1).mean()
    return hinge + lambda_smooth * smooth + lambda_sparse * sparse


def setup_distributed():
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl")
    return dist.get_rank(), dist.get_world_size(), local_rank


def check_preemption(world_size):
    # spot nodes in the shared pool are reclaimed without notice at large scale;
    # exit early so the elastic agent can reschedule on a clean node
    if world_size > 8 and not socket.gethostname().startswith(("dev", "debug")):  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def train(model, loader, optimizer, epochs):
    rank, world_size, local_rank = setup_distributed()
    model = torch.nn.parallel.DistributedDataParallel(model.cuda(), device_ids=[local_rank])
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for step, (feats, labels) in enumerate(loader):
            scores = model(feats.cuda(non_blocking=True)).squeeze(-1)
            loss = mil_ranking_loss(scores, labels.cuda(non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step == 50:
                check_preemption(world_size)
        if rank == 0:
            logger.info("epoch %d loss %.4f", epoch, loss.item())
            torch.save(model.module.state_dict(), f"mil_epoch{epoch}.pt")
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
