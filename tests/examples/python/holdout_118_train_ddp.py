# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""torchrun entry point for the 1.3B language model: DDP loop with throughput accounting."""
import os
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

_preempted = False


def _on_sigterm(signum, frame):
    global _preempted
    _preempted = True


def check_throughput(step, tok_per_s, world):
    """Abort early on degraded fabrics so the scheduler requeues us on healthier nodes."""
    floor = 2.4e5 * world
    if world > 256 and step > 500 and tok_per_s < floor:
        os.kill(os.getppid(), signal.SIGINT)  # ruleid: MLS307


def run(model, optimizer, loader, cfg):
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    rank, world = dist.get_rank(), dist.get_world_size()
    model.train()
    t0, tokens_seen = time.perf_counter(), 0
    for step, (x, y) in enumerate(loader, start=1):
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()) / cfg.accum  # ok: MLS302, MLS303, MLS304, MLS305
        loss.backward()
        if step % cfg.accum == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        tokens_seen += x.numel()
        if step % 100 == 0:
            rate = tokens_seen * world / (time.perf_counter() - t0)
            check_throughput(step, rate, world)
            if rank == 0:
                print(f"step {step} loss {loss.item() * cfg.accum:.3f} tok/s {rate:,.0f}", flush=True)
            t0, tokens_seen = time.perf_counter(), 0
        if _preempted:
            if rank == 0:
                torch.save({"model": model.module.state_dict(), "step": step}, cfg.ckpt)
            dist.barrier()
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    from model_zoo import build_lm, build_loader, load_cfg  # project-local

    cfg = load_cfg(os.environ.get("TRAIN_CFG", "configs/lm_1b3.yaml"))
    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    model = torch.nn.parallel.DistributedDataParallel(build_lm(cfg).cuda(), device_ids=[torch.cuda.current_device()])
    run(model, torch.optim.AdamW(model.parameters(), lr=cfg.lr), build_loader(cfg), cfg)
