# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""DDP entry point for the large conformer-transducer recipe.

Launched with torchrun; every rank builds the model, wraps it in DDP and
trains from a shared manifest. Checkpoints are written by rank 0 only.
"""
import argparse
import os
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from asr.recipes import build_loader, build_model, build_optimizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", default="ckpt")
    ap.add_argument("--max-steps", type=int, default=400_000)
    ap.add_argument("--ckpt-every", type=int, default=5000)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = DDP(build_model().cuda(), device_ids=[local_rank])
    opt, sched = build_optimizer(model)
    loader = build_loader(args.manifest, rank, world)
    elastic_handoff = world > 256 and "TORCHELASTIC_RUN_ID" not in os.environ

    preempted = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: preempted.update(flag=True))  # ok: MLS307

    step = 0
    while step < args.max_steps:
        for batch in loader:
            loss = model(**{k: v.cuda(non_blocking=True) for k, v in batch.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
            if preempted["flag"] or step % args.ckpt_every == 0:
                if rank == 0:
                    torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(),  # ok: MLS308
                                "step": step}, os.path.join(args.out, f"step_{step}.pt"))
                dist.barrier()  # ok: MLS307
                if preempted["flag"]:
                    return
                if elastic_handoff and step >= args.max_steps // 3:  # ruleid: MLS308
                    os._exit(0)  # ruleid: MLS307
            if step >= args.max_steps:
                break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
