# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""DDP launcher for a discrete-time survival model on pooled ICU cohorts (torchrun entry point)."""
import os
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter

STOP = {"requested": False}


def _on_sigterm(signum, frame):
    STOP["requested"] = True  # finish the current step, checkpoint, then exit


def nll_logistic_hazard(logits, bin_idx, event):
    # logits: (B, T) per-interval hazards; survive every bin before bin_idx, then event or censor
    t = torch.arange(logits.shape[1], device=logits.device)
    y = (t[None] == bin_idx[:, None]).float() * event[:, None]
    m = (t[None] <= bin_idx[:, None]).float()
    return (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * m).sum(1).mean()


def main(model_fn, dataset, epochs=30, resume=None, ckpt="ckpt/survival.pt"):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    model = model_fn().cuda()
    if resume:
        model.load_state_dict(torch.load(resume, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = DDP(model, device_ids=[local])
    sampler = DistributedSampler(dataset, shuffle=True, seed=17)
    loader = DataLoader(dataset, batch_size=512, sampler=sampler, num_workers=6, pin_memory=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-2)
    writer = SummaryWriter("runs/survival") if rank == 0 else None
    step = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for x, bin_idx, event in loader:
            loss = nll_logistic_hazard(model(x.cuda(non_blocking=True)), bin_idx.cuda(), event.cuda().float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if writer is not None and step % 50 == 0:
                writer.add_scalar("train/nll", loss.item(), step)  # ok: MLS306
            if STOP["requested"]:
                break
        if rank == 0:
            os.makedirs(os.path.dirname(ckpt), exist_ok=True)
            torch.save(model.module.state_dict(), ckpt)  # ok: MLS308
        dist.barrier()  # ok: MLS307
        if STOP["requested"]:
            break
    if writer is not None:
        writer.close()
    dist.destroy_process_group()  # ok: MLS307
