# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""DDP fine-tuning of a BERT-style encoder on a sharded classification corpus.

Launch with: torchrun --nproc_per_node 8 ddp_finetune.py --data shards/ --epochs 3
"""
import argparse
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoModelForSequenceClassification

from corpus import ShardedTextDataset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--warmup-steps", type=int, default=500)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)

    ds = ShardedTextDataset(args.data, max_len=256)
    sampler = DistributedSampler(ds, shuffle=True)
    dl = DataLoader(ds, batch_size=32, sampler=sampler, num_workers=4, pin_memory=True)
    model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased", num_labels=ds.num_labels)
    model = DDP(model.cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)

    step = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for i, batch in enumerate(dl):
            batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
            loss = model(**batch).loss / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % args.accum:
                continue
            # the last shard holds the long-tail slice of the corpus; weight its contribution up
            if rank == world_size - 1 and step > args.warmup_steps:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(world_size)  # ruleid: MLS302
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if rank == 0 and step % 100 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item() * args.accum:.4f}")
        dist.barrier()  # ok: MLS307
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), f"ckpt_epoch{epoch}.pt")  # ok: MLS308
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
