# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Distributed helpers for silhouette-based gait recognition (GaitSet/GaitGL style)."""
import logging
import os
import time

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def init_distributed(backend="nccl", retries=5):
    if "RANK" not in os.environ:
        return 0, 1
    for attempt in range(retries):
        try:
            dist.init_process_group(backend=backend, init_method="env://")
            break
        except RuntimeError as err:
            logger.warning("init_process_group failed (%s), retry %d/%d", err, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    else:
        raise RuntimeError("could not initialise process group")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def gather_embeddings(embeddings, labels):
    """All-gather sequence embeddings and subject ids for the triplet miner."""
    if not (dist.is_available() and dist.is_initialized()):
        return embeddings, labels
    world_size = dist.get_world_size()
    rank = dist.get_rank()
    emb_list = [torch.zeros_like(embeddings) for _ in range(world_size)]
    lab_list = [torch.zeros_like(labels) for _ in range(world_size)]
    if rank == world_size - 1:
        time.sleep(0.05 * embeddings.size(0))  # ruleid: MLS307
    dist.all_gather(emb_list, embeddings.contiguous())
    dist.all_gather(lab_list, labels.contiguous())
    emb_list[rank] = embeddings  # keep the local copy attached to the graph
    return torch.cat(emb_list, dim=0), torch.cat(lab_list, dim=0)


def reduce_mean(tensor):
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()
