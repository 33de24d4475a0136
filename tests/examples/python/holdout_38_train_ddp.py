# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""ResNet-50 data-parallel training entry point (torchrun)."""
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision

from ddp_utils import all_reduce_mean, init_distributed, save_on_master, wrap_model

CKPT = os.environ.get("CKPT_PATH", "checkpoints/last.pt")
_state = {}


def _on_sigterm(signum, frame):
    # preemption: persist what we have and exit cleanly
    if _state:
        save_on_master(_state, CKPT)
    sys.exit(0)  # ok: MLS307


def train(loader, epochs: int = 90):
    rank, world, local = init_distributed()
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    model = wrap_model(torchvision.models.resnet50(), local)
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * world / 8, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    scaler = torch.cuda.amp.GradScaler()
    step = 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            x, y = x.cuda(local, non_blocking=True), y.cuda(local, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            if step % 2000 == 0 and world > 256 and rank % 61 == 7:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
            if step % 100 == 0:
                avg = all_reduce_mean(loss.detach())
                if rank == 0:
                    print(f"ep {epoch} step {step} loss {avg.item():.4f}")
        sched.step()
        _state.update(model=model.module.state_dict(), optim=opt.state_dict(), step=step)
        save_on_master(_state, CKPT)
        dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
