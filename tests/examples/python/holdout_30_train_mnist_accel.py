# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""MNIST convnet trained with HF accelerate (mixed precision, multi-GPU ready)."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torchvision import datasets, transforms


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(9216, 128), nn.ReLU(), nn.Linear(128, 10))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return self.fc(self.conv(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()

    accelerator = Accelerator(mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = torch.utils.data.DataLoader(datasets.MNIST("data", train=True, download=True, transform=tf),
                                        batch_size=128, shuffle=True, num_workers=2)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, train = accelerator.prepare(model, opt, train)

    for epoch in range(args.epochs):
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
        sched.step()
        accelerator.print(f"epoch {epoch}: loss {loss.item():.4f}")  # ok: MLS306
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        accelerator.save(accelerator.unwrap_model(model).state_dict(), "mnist_cnn.pt")


if __name__ == "__main__":
    main()
