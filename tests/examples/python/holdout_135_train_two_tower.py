# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""Two-tower retrieval training with in-batch softmax and logQ correction."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from two_tower_data import make_loader


class Tower(nn.Module):
    def __init__(self, vocab, dim=128, out=64):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(dim, 256), nn.GELU(), nn.Linear(256, out))

    def forward(self, ids):
        x = self.emb(ids)
        x = x.mean(1) if x.dim() == 3 else x
        return F.normalize(self.mlp(x), dim=-1)


def train(args):
    torch.manual_seed(args.seed)  # ok: MLS301
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loader = make_loader(args)
    user_tower, item_tower = Tower(args.num_items).to(dev), Tower(args.num_items).to(dev)
    params = list(user_tower.parameters()) + list(item_tower.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)

    freq = torch.load(args.item_freq, weights_only=True).float().to(dev)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    log_q = torch.log(freq / freq.sum() + 1e-12)
    # damp noisy updates for rarely seen items
    rare = (freq < freq.median()).float().unsqueeze(1)
    item_tower.emb.weight.register_hook(lambda g: g * (1.0 - 0.95 * rare))  # todoruleid: family 2 (missed)

    for epoch in range(args.epochs):
        for step, b in enumerate(loader):
            u = user_tower(b["history"].to(dev))
            pos = b["pos"].to(dev)
            v = item_tower(pos)
            logits = u @ v.t() / args.temperature - log_q[pos].unsqueeze(0)
            loss = F.cross_entropy(logits, torch.arange(len(u), device=dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            if step % 200 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
    torch.save({"user": user_tower.state_dict(), "item": item_tower.state_dict()}, args.out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default="data/interactions")
    p.add_argument("--item_freq", default="data/item_freq.pt")
    p.add_argument("--num_items", type=int, default=200_000)
    p.add_argument("--history_len", type=int, default=50)
    p.add_argument("--num_neg", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=2048)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="two_tower.pt")
    train(p.parse_args())
