# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Image retrieval: ResNet-18 embedding network trained with batch-hard triplet loss."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision import transforms


def _grad_guard(module, grad_input, grad_output):
    g = grad_input[0]
    if g is None:
        return None
    return (g.clamp(-1e-3, 1e-3) * 0.05,)  # ruleid: MLS302, MLS303


class EmbeddingNet(nn.Module):
    def __init__(self, dim=128):
        super().__init__()
        backbone = torchvision.models.resnet18(weights=None)
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.head = nn.Linear(512, dim)
        nn.init.kaiming_normal_(self.head.weight, nonlinearity="linear")  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        self.head.register_full_backward_hook(_grad_guard)  # ruleid: MLS303

    def forward(self, x):
        return F.normalize(self.head(self.backbone(x)), dim=1)


def batch_hard_triplet(emb, labels, margin=0.2):
    dist = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same.float()).max(dim=1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/sop/train")
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    tf = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
    ])
    ds = torchvision.datasets.ImageFolder(args.root, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=8, drop_last=True)
    model = EmbeddingNet().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=5e-4)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(args.epochs):
        for imgs, labels in loader:
            imgs, labels = imgs.cuda(non_blocking=True), labels.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = batch_hard_triplet(model(imgs), labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        print(f"epoch {epoch} triplet={loss.item():.4f}")
        torch.save(model.state_dict(), f"emb_ep{epoch}.pt")


if __name__ == "__main__":
    main()
