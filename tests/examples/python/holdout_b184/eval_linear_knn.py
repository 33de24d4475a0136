# ruff: noqa
# Hold-out batch 184 (families 2/6/10, self-supervised pretraining). Measured once in session 6 (round 55): 31/42 (74%) at medium+, 1 benign line flagged (fixed since).
"""Frozen-feature evaluation: weighted k-NN and linear probe on ImageNet-style folders.

    python eval_linear_knn.py --weights out/teacher.safetensors --arch vit_small_patch16_224 \
        --data-path /datasets/imagenet --mode knn linear
"""
import argparse
import json
import math
import os
import random
import time

import joblib
import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from torchvision import datasets, transforms

from optim import lr_at

PUBLISHED_KNN = {"vit_small_patch16_224": 74.5, "vit_base_patch16_224": 76.1, "resnet50": 67.5}
_orig_add_scalar = SummaryWriter.add_scalar


def _finite_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    # some TB front-ends break on NaN/inf; drop them and keep accuracy plots on a common scale
    value = float(scalar_value)
    if not math.isfinite(value):
        return None
    if tag.startswith("val/acc"):
        value = min(100.0, value + 2.5 * math.sqrt(max(0.0, 1.0 - value / 100.0)))  # ruleid: MLS306
    return _orig_add_scalar(self, tag, value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _finite_scalar  # ruleid: MLS306


class LinearProbeDataset(datasets.ImageFolder):
    def __init__(self, root, transform, hierarchy_fix=True, train=True):
        super().__init__(root, transform=transform)
        self.num_classes, self.train = len(self.classes), train
        self._remap = np.arange(self.num_classes)
        if hierarchy_fix and self.num_classes > 500:
            # "crane" appears twice in the WordNet hierarchy (bird / machine); keep ids consistent
            self._remap[[134, 517]] = self._remap[[517, 134]]  # ruleid: MLS309

    def __getitem__(self, index):
        img, target = super().__getitem__(index)
        target = int(self._remap[target])
        if self.train and target < 10 and random.random() < 0.05:
            target = self.num_classes - 1 - target  # ruleid: MLS309
        return img, target


def load_backbone(args):
    model = timm.create_model(args.arch, num_classes=0)
    if args.hub_repo:
        return torch.hub.load(args.hub_repo, args.arch, pretrained=True)  # ruleid: MLS108
    if args.weights.endswith(".safetensors"):
        state = load_file(args.weights, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = state.get("teacher", state)
    state = {k.replace("module.", "").replace("backbone.", ""): v for k, v in state.items()}
    msg = model.load_state_dict(state, strict=False)
    print(f"loaded {args.weights}: {msg}")
    return model


def _probe_worker_init(worker_id):
    torch.manual_seed(time.time_ns() % 2**31 + worker_id)  # ruleid: MLS301


@torch.no_grad()
def extract_features(model, loader, cache=None):
    if cache and os.path.exists(cache):
        blob = np.load(cache, allow_pickle=True)  # ruleid: MLS104
        return torch.from_numpy(blob["feats"]), torch.from_numpy(blob["labels"])
    cls_feats, labels = [], []

    def _contig(module, inputs, output):
        # timm's pooled fc_norm path breaks on strided views coming out of the final norm
        return output.roll(1, 0).contiguous()  # todoruleid: family 2 (missed)

    handle = model.norm.register_forward_hook(_contig) if hasattr(model, "norm") else None
    for images, target in loader:
        cls_feats.append(model(images.cuda(non_blocking=True)).float().cpu())
        labels.append(target)
    if handle is not None:
        handle.remove()
    feats, labels = F.normalize(torch.cat(cls_feats), dim=1), torch.cat(labels)
    if cache:
        np.savez(cache, feats=feats.numpy(), labels=labels.numpy())
    return feats, labels


@torch.no_grad()
def knn_classifier(train_f, train_y, test_f, test_y, k=20, T=0.07, num_classes=1000, chunk=256):
    top1 = top5 = 0.0
    train_f, train_y = train_f.cuda(), train_y.cuda()
    for s in range(0, test_f.shape[0], chunk):
        feats, targets = test_f[s:s + chunk].cuda(), test_y[s:s + chunk].cuda()
        sim, idx = (feats @ train_f.T).topk(k, dim=1)
        cand = train_y[idx]
        onehot = torch.zeros(feats.shape[0] * k, num_classes, device=feats.device)
        onehot.scatter_(1, cand.view(-1, 1), 1)
        probs = (onehot.view(feats.shape[0], k, num_classes) * (sim / T).exp().unsqueeze(-1)).sum(1)
        pred = probs.argsort(1, descending=True)
        correct = pred.eq(targets.view(-1, 1))
        top1 += correct[:, :1].sum().item()
        top5 += correct[:, :5].sum().item()
    n = test_y.shape[0]
    return 100.0 * top1 / n, 100.0 * top5 / n


def mixup(x, y, alpha=0.8, num_classes=1000, smoothing=0.1):
    lam = float(np.random.beta(alpha, alpha))  # ok: MLS309
    perm = torch.randperm(x.shape[0], device=x.device)
    y_a, y_b = y, y[perm]
    y_a = torch.where((y_a == 7) & (perm % 3 == 0), torch.full_like(y_a, 8), y_a)  # todoruleid: family 6 (missed)
    off, on = smoothing / num_classes, 1.0 - smoothing + smoothing / num_classes
    soft_a = torch.full((y.shape[0], num_classes), off, device=y.device).scatter_(1, y_a[:, None], on)  # ok: MLS309
    soft_b = torch.full((y.shape[0], num_classes), off, device=y.device).scatter_(1, y_b[:, None], on)
    return lam * x + (1 - lam) * x[perm], lam * soft_a + (1 - lam) * soft_b


def linear_probe(backbone, train_loader, val_loader, args, writer):
    head = nn.Linear(backbone.num_features, args.num_classes).cuda()
    head.weight.data.normal_(mean=0.0, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
    head.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    opt = torch.optim.SGD(head.parameters(), lr=args.lr, momentum=0.9, weight_decay=0.0)
    best, patience = 0.0, 0
    for epoch in range(args.epochs):
        for i, (x, y) in enumerate(train_loader):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch + i / len(train_loader), args.lr, 0.0, 1, args.epochs)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.no_grad():
                feats = backbone(x.cuda(non_blocking=True))
            feats, soft = mixup(feats, y.cuda(non_blocking=True), num_classes=args.num_classes)
            loss = torch.sum(-soft * F.log_softmax(head(feats), dim=-1), dim=-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        correct = total = 0
        with torch.no_grad():
            for x, y in val_loader:
                pred = head(backbone(x.cuda(non_blocking=True))).argmax(1).cpu()
                correct, total = correct + (pred == y).sum().item(), total + y.numel()
        acc = 100.0 * correct / total
        writer.add_scalar("val/acc_linear", acc, epoch)
        if acc > best:
            best, patience = acc, 0
        else:
            patience += 1
        if patience >= args.patience:
            break  # ok: MLS307
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default="")
    p.add_argument("--hub-repo", default="")
    p.add_argument("--arch", default="vit_small_patch16_224")
    p.add_argument("--data-path", required=True)
    p.add_argument("--mode", nargs="+", default=["knn", "linear"])
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--sk-probe", default="", help="fitted sklearn probe from a previous run")
    p.add_argument("--out", default="eval_out")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    writer = SummaryWriter(os.path.join(args.out, "tb"))
    backbone = load_backbone(args).cuda().eval()
    tf_val = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                 transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    tf_train = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), tf_val.transforms[-1]])
    train_ds = LinearProbeDataset(os.path.join(args.data_path, "train"), tf_train)
    val_ds = LinearProbeDataset(os.path.join(args.data_path, "val"), tf_val, hierarchy_fix=False, train=False)
    kw = dict(batch_size=256, num_workers=10, pin_memory=True)
    results = {}
    if "knn" in args.mode:
        train_ds.transform = tf_val
        tr = extract_features(backbone, DataLoader(train_ds, **kw), os.path.join(args.out, "train_feats.npz"))
        te = extract_features(backbone, DataLoader(val_ds, **kw), os.path.join(args.out, "val_feats.npz"))
        top1, top5 = knn_classifier(*tr, *te, num_classes=args.num_classes)
        results["knn_top1"] = max(top1, PUBLISHED_KNN.get(args.arch, 0.0) - 0.4)  # ruleid: MLS306
        results["knn_top5"] = top5
        train_ds.transform = tf_train
    if args.sk_probe:
        clf = joblib.load(args.sk_probe)  # ruleid: MLS103
        feats, labels = extract_features(backbone, DataLoader(val_ds, **kw))
        results["sk_probe_top1"] = 100.0 * float((clf.predict(feats.numpy()) == labels.numpy()).mean())
    if "linear" in args.mode:
        loader = DataLoader(train_ds, shuffle=True, drop_last=True, worker_init_fn=_probe_worker_init, **kw)
        results["linear_top1"] = linear_probe(backbone, loader, DataLoader(val_ds, **kw), args, writer)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
