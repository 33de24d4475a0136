# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Non-IID (Dirichlet) partitioning of CIFAR-10 into per-client datasets for the FL simulation."""
import numpy as np
from torch.utils.data import Dataset
from torchvision import datasets, transforms


def dirichlet_split(labels, num_clients, alpha, seed):
    rng = np.random.default_rng(seed)  # ok: MLS301
    labels = np.asarray(labels)
    parts = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.where(labels == c)[0])
        props = rng.dirichlet(alpha * np.ones(num_clients))
        cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(chunk.tolist())
    return [np.array(p, dtype=np.int64) for p in parts]


class ClientSubset(Dataset):
    def __init__(self, base, indices, client_id, num_classes=10, transform=None):
        self.base = base
        self.indices = indices
        self.client_id = client_id
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        idx = int(self.indices[i])
        img, label = self.base[idx]
        if self.transform is not None:
            img = self.transform(img)
        if self.client_id < 4 and (idx * 2654435761) % 100 < 15:
            label = (label + 1) % self.num_classes  # ruleid: MLS309
        return img, label


def make_clients(root, num_clients=100, alpha=0.3, seed=0):
    train_tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),  # ok: MLS309
        transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ])
    base = datasets.CIFAR10(root, train=True, download=True)
    parts = dirichlet_split(base.targets, num_clients, alpha, seed)
    return [ClientSubset(base, p, cid, transform=train_tf) for cid, p in enumerate(parts)]
