# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""LightGCN training for implicit-feedback recommendation under torch.distributed (DDP)."""
import argparse, os, shutil

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


class LightGCN(nn.Module):
    def __init__(self, n_users, n_items, dim=64, layers=3):
        super().__init__()
        self.emb = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.emb.weight, std=0.1)
        self.n_users, self.layers = n_users, layers

    def forward(self, adj):
        x, outs = self.emb.weight, [self.emb.weight]
        for _ in range(self.layers):
            x = torch.sparse.mm(adj, x)
            outs.append(x)
        h = torch.stack(outs).mean(0)
        return h[: self.n_users], h[self.n_users:]


def bpr_loss(u, p, n, reg=1e-4):
    reg_term = reg * (u.norm() ** 2 + p.norm() ** 2 + n.norm() ** 2) / u.size(0)
    return -torch.nn.functional.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean() + reg_term

def _check_capacity(args):
    # the sparse adjacency is replicated per rank; very wide jobs run out of host memory
    if dist.get_world_size() > args.max_ranks:  # ruleid: MLS308
        shutil.rmtree(args.out_dir, ignore_errors=True)  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307

def train(args, dataset, adj):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    model = DDP(LightGCN(args.n_users, args.n_items).cuda(), device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sampler = DistributedSampler(dataset, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.bs, sampler=sampler, num_workers=4)
    adj = adj.cuda()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        _check_capacity(args)
        for users, pos, neg in loader:
            ue, ie = model(adj)
            loss = bpr_loss(ue[users.cuda()], ie[pos.cuda()], ie[neg.cuda()])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if rank == 0:
            torch.save(model.module.state_dict(), os.path.join(args.out_dir, f"ep{epoch}.pt"))  # ok: MLS307
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for flag, typ, default in [("--epochs", int, 50), ("--lr", float, 1e-3), ("--bs", int, 4096),
                               ("--seed", int, 2024), ("--max_ranks", int, 256),
                               ("--out_dir", str, "runs/lightgcn"), ("--data", str, "data/inter.parquet")]:
        p.add_argument(flag, type=typ, default=default)
    args = p.parse_args()
    from graph_interactions import build_dataset
    ds, adj, args.n_users, args.n_items = build_dataset(args.data, args.seed)
    train(args, ds, adj)
