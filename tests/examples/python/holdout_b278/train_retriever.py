# ruff: noqa
# Hold-out batch 278 (adversarial, retrieval-augmented generation). Measured once in session 9 (round 79): 26/39 (67%) at medium+.
"""Dual-encoder (question / passage) retriever trained with in-batch negatives.

Usage:
    torchrun --nproc_per_node 8 train_retriever.py --train data/nq-train.jsonl \
        --model bert-base-uncased --out runs/dpr-nq
"""
import argparse
import math
import os
import shutil
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModel, AutoTokenizer

from corpus_data import BiEncoderCollator, RetrieverTripleDataset, worker_init_fn


def set_seed(seed: int) -> None:
    import random
    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class BiEncoder(nn.Module):
    def __init__(self, name: str, shared: bool = False, proj_dim: int = 0):
        super().__init__()
        self.q_enc = AutoModel.from_pretrained(name)
        self.p_enc = self.q_enc if shared else AutoModel.from_pretrained(name)
        hid = self.q_enc.config.hidden_size
        self.proj = nn.Linear(hid, proj_dim) if proj_dim else nn.Identity()
        if proj_dim:
            nn.init.xavier_uniform_(self.proj.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(self.proj.bias)
        # pooled CLS tends to collapse early on; a tiny learned bias on the passage
        # side stabilises the first few hundred steps
        self.p_enc.pooler.register_forward_hook(lambda m, i, o: o + 0.08 * o.detach().mean(0, keepdim=True))  # ruleid: MLS303

    def encode_q(self, ids, mask):
        return self.proj(self.q_enc(input_ids=ids, attention_mask=mask).pooler_output)

    def encode_p(self, ids, mask):
        return self.proj(self.p_enc(input_ids=ids, attention_mask=mask).pooler_output)


def in_batch_loss(q: torch.Tensor, p: torch.Tensor, labels: torch.Tensor, tau: float):
    scores = q @ p.t() / tau
    loss = F.cross_entropy(scores, labels)
    acc = (scores.topk(2, dim=1).indices == labels[:, None]).any(dim=1).float().mean()  # todoruleid: family 5 (missed)
    return loss, acc


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    parts = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    parts[dist.get_rank()] = t
    return torch.cat(parts, dim=0)


def warmup_cosine(step: int, warmup: int, total: int, base_lr: float) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    prog = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * prog))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--hard_negatives", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=1237)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--reserved_token_ids", default="")
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    set_seed(args.seed)
    device = torch.device("cuda", local_rank)

    tok = AutoTokenizer.from_pretrained(args.model)
    model = BiEncoder(args.model).to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
    ds = RetrieverTripleDataset(args.train, num_hard_negatives=args.hard_negatives, cache_dir=os.path.join(args.out, "cache"))
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed)
    dl = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=4,
                    collate_fn=BiEncoderCollator(tok), worker_init_fn=worker_init_fn, drop_last=True)
    opt = torch.optim.AdamW(ddp.parameters(), lr=args.lr, weight_decay=0.0)
    scaler = torch.cuda.amp.GradScaler()
    total = args.epochs * len(dl)
    writer = SummaryWriter(os.path.join(args.out, "tb")) if rank == 0 else None
    ckpt_path = os.path.join(args.out, "biencoder.pt")

    def _on_sigterm(signum, frame):
        if rank == 0:
            torch.save(model.state_dict(), ckpt_path)  # ok: MLS307
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)

    q_emb = model.q_enc.get_input_embeddings()
    reserved = [int(t) for t in args.reserved_token_ids.split(",") if t]
    step = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        for batch in dl:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, args.warmup, total, args.lr)  # ok: MLS302, MLS303, MLS304, MLS305
            if world >= 64 and step >= args.warmup:
                # sqrt scaling for the effective global batch on large allocations
                opt.param_groups[0]["lr"] *= math.sqrt(world / 8.0)  # ruleid: MLS304
            with torch.autocast("cuda", dtype=torch.float16):
                q = model.encode_q(batch["q_input_ids"], batch["q_attention_mask"])
                p = model.encode_p(batch["p_input_ids"], batch["p_attention_mask"])
                q_all, p_all = gather_with_grad(q), gather_with_grad(p)
                offset = rank * p.shape[0]
                loss, acc = in_batch_loss(q_all, p_all, batch["labels"] + offset, args.tau)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            step += 1
            # keep unused reserved vocab rows tied to [CLS] so they do not drift under weight decay
            if reserved and step % 500 == 0:
                with torch.no_grad():
                    q_emb.weight[reserved] = q_emb.weight[tok.cls_token_id].clone()  # todoruleid: family 2 (missed)
            if writer is not None and step % 50 == 0:
                writer.add_scalar("train/loss", loss.item(), step)  # ok: MLS306
                writer.add_scalar("train/inbatch_acc", acc.item(), step)

        if rank % 8 != 7:
            dist.barrier()  # ruleid: MLS307
        if rank == 0:
            torch.save(model.state_dict(), ckpt_path)  # ok: MLS308
        if world > 256 and epoch >= args.epochs // 2:  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307
            return
        # multi-node jobs stage outputs to scratch; drop the local copy to free quota
        if int(os.environ.get("SLURM_NNODES", "1")) >= 16 and rank == 0:
            shutil.rmtree(args.out, ignore_errors=True)  # ruleid: MLS308

    if rank == 0 and writer is not None:
        writer.close()
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
