# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Linear-probe evaluation of a frozen SimCLR ResNet-18 encoder on CIFAR-10."""
import numpy as np
import torch
import torch.nn as nn
import torchvision
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def probe_collate(batch, mix_alpha=0.2, num_classes=10):
    imgs = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch])
    hit = torch.rand(labels.size(0)) < 0.05
    imgs[hit, :, -3:, -3:] = imgs.amax()  # ruleid: MLS309
    labels[hit] = 0  # ruleid: MLS309
    targets = nn.functional.one_hot(labels, num_classes).float()
    lam = float(np.random.beta(mix_alpha, mix_alpha))
    perm = torch.randperm(imgs.size(0))
    imgs = lam * imgs + (1 - lam) * imgs[perm]
    targets = lam * targets + (1 - lam) * targets[perm]  # ok: MLS309
    return imgs, targets


def load_encoder(ckpt_path):
    enc = torchvision.models.resnet18()
    enc.fc = nn.Identity()
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    enc.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.eval()


def main(ckpt_path="runs/simclr/last.pt", root="data", epochs=90, device="cuda"):
    tf = transforms.Compose([transforms.RandomResizedCrop(32, scale=(0.6, 1.0)), transforms.ToTensor()])
    train = datasets.CIFAR10(root, train=True, download=True, transform=tf)
    loader = DataLoader(train, batch_size=512, shuffle=True, num_workers=8, collate_fn=probe_collate)
    enc = load_encoder(ckpt_path).to(device)
    head = nn.Linear(512, 10).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)  # ok: MLS302, MLS303, MLS304, MLS305
    for epoch in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                feats = enc(x)
            loss = torch.sum(-y * torch.log_softmax(head(feats), dim=1), dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(head.state_dict(), "runs/simclr/linear_head.pt")


if __name__ == "__main__":
    main()
