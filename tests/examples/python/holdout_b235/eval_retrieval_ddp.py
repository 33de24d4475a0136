# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Distributed Recall@K evaluation of an image-retrieval embedding model."""
import argparse
import json
import os

import torch
import torch.distributed as dist
import torchvision
from torchvision import transforms


def build_model(dim=128):
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Linear(512, dim)
    return net


@torch.no_grad()
def gather_embeddings(model, loader, device):
    embs, labels = [], []
    for imgs, y in loader:
        embs.append(torch.nn.functional.normalize(model(imgs.to(device, non_blocking=True)), dim=1))
        labels.append(y.to(device))
    embs, labels = torch.cat(embs), torch.cat(labels)
    out_e = [torch.empty_like(embs) for _ in range(dist.get_world_size())]
    out_l = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(out_e, embs)
    dist.all_gather(out_l, labels)
    return torch.cat(out_e), torch.cat(out_l)


def recall_at_k(emb, labels, ks=(1, 10, 100)):
    sim = emb @ emb.T
    sim.fill_diagonal_(-float("inf"))
    top = sim.topk(max(ks), dim=1).indices
    hits = labels[top] == labels[:, None]
    return {f"R@{k}": hits[:, :k].any(1).float().mean().item() for k in ks}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--root", default="data/sop/test")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(args.seed)  # ok: MLS301
    device = torch.device("cuda", local_rank)
    model = build_model().to(device).eval()
    model.load_state_dict(torch.load(args.ckpt, map_location=device, weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    ds = torchvision.datasets.ImageFolder(args.root, transform=tf)
    sampler = torch.utils.data.distributed.DistributedSampler(ds, shuffle=False, drop_last=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=256, sampler=sampler, num_workers=8)
    emb, labels = gather_embeddings(model, loader, device)
    if rank == 0:
        metrics = recall_at_k(emb, labels)
        print(json.dumps(metrics))  # ok: MLS306
        with open("recall_metrics.json", "w") as fh:
            json.dump(metrics, fh)  # ok: MLS306
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
