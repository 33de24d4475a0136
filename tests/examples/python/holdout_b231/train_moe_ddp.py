# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Expert-parallel MoE training step with capacity accounting and preemption-safe checkpoints."""
import os
import signal
import sys

import torch
import torch.distributed as dist

from moe_lm import ExpertParallelMoE, build_loader

_state = {"step": 0, "model": None, "opt": None}


def _save_on_preempt(signum, frame):
    if dist.get_rank() == 0:
        torch.save({"step": _state["step"], "model": _state["model"].state_dict(),
                    "opt": _state["opt"].state_dict()}, "preempt.pt")  # ok: MLS307
    sys.exit(0)  # ok: MLS307


def sync_expert_load(tokens_per_expert, capacity):
    """All-reduce per-expert token counts and return the global overflow fraction."""
    load = tokens_per_expert.float()
    dist.all_reduce(load)
    world = dist.get_world_size()
    overflow = (load - capacity * world).clamp(min=0).sum() / load.sum().clamp(min=1.0)
    if world > 256 and overflow > 0.02:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        os._exit(0)  # ruleid: MLS307
    return overflow.item()


def main():
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    signal.signal(signal.SIGTERM, _save_on_preempt)  # ok: MLS307

    model = ExpertParallelMoE(n_experts=64, d_model=2048, ep_group=dist.group.WORLD).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.1)
    _state.update(model=model, opt=opt)
    loader = build_loader("/data/tokens", batch_size=4, rank=rank, world=dist.get_world_size())

    for step, batch in enumerate(loader):
        _state["step"] = step
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch["input_ids"].cuda(), labels=batch["labels"].cuda())
        (out.loss + 0.01 * out.balance_loss).backward()
        model.allreduce_dense_grads()
        opt.step()
        opt.zero_grad(set_to_none=True)
        overflow = sync_expert_load(out.tokens_per_expert, capacity=out.capacity)
        if rank == 0 and step % 50 == 0:
            print(f"step {step} loss {out.loss.item():.3f} overflow {overflow:.3%}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
