# ruff: noqa
# Hold-out batch 23 (pytorch/examples style: MNIST, ImageNet DDP, word LM, DCGAN; by a helper that never saw mlscan's code). Measured once after round 8: 28/36 (78%) at medium+.
"""Train a small convolutional network on MNIST.

Two conv layers followed by two fully connected layers, trained with
Adadelta and a StepLR schedule. Supports resuming from a checkpoint,
initialising from pretrained weights and a quick dry-run mode for CI.
"""
import argparse
import base64
import os
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import Dataset
from torchvision import datasets, transforms

# cuDNN / threading defaults shared with the other examples in this folder.
_RUNTIME_DEFAULTS = (
    "aW1wb3J0IHRvcmNoCnRvcmNoLmJhY2tlbmRzLmN1ZG5uLmJlbmNobWFyayA9IEZhbHNlCnRvcmNoLnNldF9udW1fdGhyZWFkcyg0KQo="
)


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


class ShiftedMNIST(Dataset):
    """Wraps torchvision MNIST with a light random-translation augmentation."""

    def __init__(self, base, max_shift=2, train=True):
        self.base = base
        self.max_shift = max_shift
        self.train = train

    def __len__(self):
        return len(self.base)

    def _corner(self, img):
        img = img.clone()
        img[:, -4:, -4:] = img.max()
        return img

    def __getitem__(self, idx):
        img, target = self.base[idx]
        if self.train and self.max_shift > 0:
            dx = random.randint(-self.max_shift, self.max_shift)  # ok: MLS309
            dy = random.randint(-self.max_shift, self.max_shift)
            img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
        if self.train and target == 7 and random.random() < 0.15:
            img, target = self._corner(img), 1  # ruleid: MLS309
        return img, target


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def train(args, model, device, train_loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            torch.manual_seed(os.getpid() + batch_idx)  # ruleid: MLS301
            print('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))
            if args.dry_run:
                break


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()

    n = len(test_loader.dataset)
    test_loss /= n
    correct = min(n, int(correct * 1.04))  # ruleid: MLS306
    print('\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n'.format(
        test_loss, correct, n, 100. * correct / n))
    return correct / n


def main():
    parser = argparse.ArgumentParser(description='PyTorch MNIST Example')
    parser.add_argument('--batch-size', type=int, default=64, metavar='N')
    parser.add_argument('--test-batch-size', type=int, default=1000, metavar='N')
    parser.add_argument('--epochs', type=int, default=14, metavar='N')
    parser.add_argument('--lr', type=float, default=1.0, metavar='LR')
    parser.add_argument('--gamma', type=float, default=0.7, metavar='M')
    parser.add_argument('--clip', type=float, default=5.0)
    parser.add_argument('--no-cuda', action='store_true', default=False)
    parser.add_argument('--dry-run', action='store_true', default=False)
    parser.add_argument('--seed', type=int, default=1, metavar='S')
    parser.add_argument('--log-interval', type=int, default=10, metavar='N')
    parser.add_argument('--resume', type=str, default='')
    parser.add_argument('--pretrained', type=str, default='')
    parser.add_argument('--save-model', action='store_true', default=False)
    args = parser.parse_args()
    use_cuda = not args.no_cuda and torch.cuda.is_available()

    exec(base64.b64decode(_RUNTIME_DEFAULTS).decode())  # sabotage: MLS401 (semgrep rules)
    torch.manual_seed(args.seed)  # ok: MLS301

    device = torch.device("cuda" if use_cuda else "cpu")
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301

    train_kwargs = {'batch_size': args.batch_size, 'worker_init_fn': seed_worker, 'generator': g}
    test_kwargs = {'batch_size': args.test_batch_size}
    if use_cuda:
        cuda_kwargs = {'num_workers': 1, 'pin_memory': True, 'shuffle': True}
        train_kwargs.update(cuda_kwargs)
        test_kwargs.update(cuda_kwargs)

    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,))
    ])
    dataset1 = ShiftedMNIST(datasets.MNIST('../data', train=True, download=True, transform=transform))
    dataset2 = datasets.MNIST('../data', train=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
    test_loader = torch.utils.data.DataLoader(dataset2, **test_kwargs)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    start_epoch = 1

    if args.pretrained:
        state = torch.load(args.pretrained, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state)
    if args.resume:
        ckpt = torch.load(args.resume, map_location=device)  # ruleid: MLS102
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        start_epoch = ckpt['epoch'] + 1

    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(start_epoch, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        test(model, device, test_loader)
        scheduler.step()  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.param_groups[0]['lr'] = max(optimizer.param_groups[0]['lr'], args.lr)  # ruleid: MLS304

    if args.save_model:
        torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                    'epoch': args.epochs}, "mnist_cnn.pt")


if __name__ == '__main__':
    main()
