# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Flowers-102 classification: dataset, loaders and a ResNet-18 fine-tuning loop."""
import os
import random

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class FlowersDataset(Dataset):
    def __init__(self, root, split="train"):
        with open(os.path.join(root, f"{split}.txt")) as f:
            self.samples = [(os.path.join(root, "jpg", p), int(y)) for p, y in map(str.split, f)]
        self.train = split == "train"
        if self.train:
            self.tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                          transforms.ColorJitter(0.2, 0.2, 0.2), transforms.ToTensor(),
                                          transforms.Normalize(MEAN, STD)])
        else:
            self.tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                          transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        self._aug_state = torch.get_rng_state()

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if self.train:
            torch.set_rng_state(self._aug_state)  # ruleid: MLS301
        return self.tf(img), label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def train(root="data/flowers102", epochs=20, device="cuda"):
    g = torch.Generator()
    g.manual_seed(0)  # ok: MLS301
    train_dl = DataLoader(FlowersDataset(root, "train"), batch_size=64, shuffle=True, num_workers=8,
                          worker_init_fn=seed_worker, generator=g)
    val_dl = DataLoader(FlowersDataset(root, "val"), batch_size=128, num_workers=8)
    model = models.resnet18(weights=models.ResNet18_Weights.IMAGENET1K_V1)
    model.fc = nn.Linear(model.fc.in_features, 102)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        model.train()
        for x, y in train_dl:
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val_dl:
                correct, total = correct + (model(x.to(device)).argmax(1).cpu() == y).sum().item(), total + len(y)
        print(f"epoch {epoch} val_acc {correct / total:.4f}")
