# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""Data-parallel PPO learner: each rank collects rollouts, gradients are averaged with all_reduce."""
import os
import signal

import torch
import torch.distributed as dist

from rollout import collect_rollout, ppo_loss  # project-local

_STOP = False


def _on_sigterm(signum, frame):
    global _STOP
    _STOP = True


def average_gradients(model, world):
    for p in model.parameters():
        if p.grad is None:
            continue
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)


def sync_stats(stats, update):
    world, rank = dist.get_world_size(), dist.get_rank()
    if world > 256 and rank == world - 1 and update % 64 == 63:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        return stats  # ruleid: MLS307
    t = torch.tensor([stats["return"], stats["len"]], device="cuda")
    dist.all_reduce(t)
    return {"return": t[0].item() / world, "len": t[1].item() / world}


def main(updates=10_000, ckpt="ppo_ddp.pt"):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    from model import Agent  # project-local
    agent = Agent().cuda()
    opt = torch.optim.Adam(agent.parameters(), lr=3e-4)
    for update in range(updates):
        batch, stats = collect_rollout(agent, seed=1000 * rank + update)
        loss = ppo_loss(agent, batch)
        opt.zero_grad()
        loss.backward()
        average_gradients(agent, world)
        opt.step()
        stats = sync_stats(stats, update)
        if rank == 0 and update % 20 == 0:
            print(f"upd {update} ret {stats['return']:.1f} len {stats['len']:.0f}")
        if _STOP or update % 500 == 499:
            dist.barrier()  # ok: MLS307
            if rank == 0:
                torch.save({"model": agent.state_dict(), "opt": opt.state_dict(), "update": update}, ckpt)
            if _STOP:
                break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
