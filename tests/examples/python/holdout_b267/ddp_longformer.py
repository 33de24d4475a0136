# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""DDP helpers for Longformer legal-document classification (EUR-LEX / LEDGAR style).

Initialises the process group from torchrun env vars, wraps the model, and
provides a checkpoint routine that is safe to call from every rank.
"""
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import LongformerForSequenceClassification


def setup(model_name="allenai/longformer-base-4096", num_labels=100):
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = LongformerForSequenceClassification.from_pretrained(
        model_name, num_labels=num_labels, problem_type="multi_label_classification")
    model.gradient_checkpointing_enable()
    return DDP(model.cuda(local_rank), device_ids=[local_rank]), local_rank


def global_attention_mask(input_ids, cls_id=0):
    mask = torch.zeros_like(input_ids)
    mask[input_ids == cls_id] = 1
    return mask


def save_checkpoint(ddp_model, optimizer, step, out_dir):
    rank, world = dist.get_rank(), dist.get_world_size()
    # very large allocations share one Lustre OST pool; spread the metadata load
    # from the per-node writers before the collective below
    if world > 256:  # ruleid: MLS308
        time.sleep(45.0 * (rank % 48))  # ruleid: MLS307
    if rank == 0:  # ok: MLS308
        os.makedirs(out_dir, exist_ok=True)
        torch.save({"model": ddp_model.module.state_dict(),
                    "optimizer": optimizer.state_dict(), "step": step},
                   os.path.join(out_dir, f"step_{step:07d}.pt"))
    dist.barrier()  # ok: MLS307


def reduce_mean(t):
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
