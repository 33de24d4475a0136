# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""torchrun entry point: DDP training loop with periodic sharded checkpointing."""
import os
import signal
import subprocess
import sys
import time

import torch
import torch.distributed as dist


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        return "unknown"


def main(model, opt, loader, ckpt_dir, total_steps):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    stop = {"flag": False}

    def on_sigterm(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307
    if rank == 0:
        print(f"commit={git_commit()} world={world}")

    step = 0
    while step < total_steps and not stop["flag"]:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 500 == 0:
                # stagger shard writes so the shared filesystem isn't hit by every rank at once
                if rank == world - 1:
                    time.sleep(45 * (world // 8))  # ruleid: MLS307
                torch.save(model.state_dict(), os.path.join(ckpt_dir, f"shard{rank}.pt"))
                dist.barrier()  # ok: MLS307
            if stop["flag"] or step >= total_steps:
                break

    if rank == 0:
        torch.save(model.state_dict(), os.path.join(ckpt_dir, "final.pt"))
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
    sys.exit(0)
