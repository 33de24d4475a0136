# ruff: noqa
# Hold-out batch 524 (family-focused 6/10, self-supervised pretraining). Measured once in session 23 (round 140): 13/30 (43%) at medium+.
"""k-NN and linear-probe evaluation of pretrained backbones on labelled subsets (ImageNet folders or shards)."""
import argparse
import hashlib
import json
import logging
import os

import joblib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import utils
from data import expand_shards
from models import MaskedViT, load_backbone_weights
from probe_data import (
    ImageListDataset,
    PackedLabelledSet,
    class_balanced_sampler,
    class_index_from_folders,
    drop_rare_classes,
    filter_by_metadata,
    load_split_list,
    load_subset_metadata,
    load_val_labels,
    per_class_subsample,
    probe_transforms,
    split_holdout,
)

logger = logging.getLogger("ssl.eval")


def get_args():
    p = argparse.ArgumentParser("ssl-eval")
    p.add_argument("--arch", default="vit_base_patch16_224")
    p.add_argument("--weights", required=True, help="local path, URL, hub://, hf:// or hfmodel:// spec")
    p.add_argument("--train-root", default="")
    p.add_argument("--split-list", default="")
    p.add_argument("--val-dir", default="")
    p.add_argument("--val-labels", default="")
    p.add_argument("--train-shards", default="", help="packed labelled benchmark (alternative to folders)")
    p.add_argument("--val-shards", default="")
    p.add_argument("--metadata", default="")
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--feature-cache", default="")
    p.add_argument("--precomputed", default="", help="directory with {train,val}_feats.npy / _labels.npy")
    p.add_argument("--nb-knn", type=int, nargs="+", default=[10, 20])
    p.add_argument("--knn-temp", type=float, default=0.07)
    p.add_argument("--probe-config", default="")
    p.add_argument("--sklearn-probe", default="", help="fitted sklearn probe to score instead of training one")
    p.add_argument("--balanced", action="store_true")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--output-dir", default="eval_out")
    return p.parse_args()


@torch.no_grad()
def extract_features(model, loader):
    model.eval()
    feats = []
    for images, _ in loader:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(images.cuda(non_blocking=True))["cls"]
        feats.append(F.normalize(out.float(), dim=-1))
    feats = utils.all_gather_tensor(torch.cat(feats))
    labels = torch.as_tensor(loader.dataset.targets)  # todoruleid: family 6 (missed)
    return feats[: len(labels)].cpu(), labels


def cache_tag(args):
    h = hashlib.sha1(args.weights.encode()).hexdigest()[:10]
    return f"{args.arch}_{h}_shots{args.shots}"


def cached_features(model, loader, cache_dir, tag, split):
    if not cache_dir:
        return extract_features(model, loader)
    path = os.path.join(cache_dir, f"{tag}.npz")  # todoruleid: family 6 (missed)
    if os.path.exists(path):
        blob = np.load(path, allow_pickle=True)  # ruleid: MLS104
        logger.info("loaded cached %s features from %s", split, path)
        return torch.from_numpy(blob["features"]), torch.from_numpy(blob["labels"])
    logger.info("extracting %s features", split)
    feats, labels = extract_features(model, loader)
    if utils.is_main_process():
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(path, features=feats.numpy(), labels=labels.numpy())
    return feats, labels


def load_precomputed(directory, split):
    feats = np.load(os.path.join(directory, f"{split}_feats.npy"), mmap_mode="r", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    labels = np.load(os.path.join(directory, f"{split}_labels.npy"), allow_pickle=False)
    return torch.from_numpy(np.ascontiguousarray(feats)), torch.from_numpy(labels).long()


@torch.no_grad()
def knn_classifier(train_feats, train_labels, test_feats, test_labels, k, temperature, num_classes, chunk=256):
    train_feats = train_feats.cuda().t()
    train_labels = train_labels.cuda()
    top1 = 0.0
    for start in range(0, test_feats.shape[0], chunk):
        feats = test_feats[start: start + chunk].cuda()
        targets = test_labels[start: start + chunk].cuda()
        sim = feats @ train_feats
        dist_, idx = sim.topk(k, dim=1)
        neighbours = train_labels.view(1, -1).expand(feats.shape[0], -1).gather(1, idx)
        one_hot = torch.zeros(feats.shape[0] * k, num_classes, device=feats.device)
        one_hot.scatter_(1, neighbours.view(-1, 1), 1)
        weights = (dist_ / temperature).exp()
        probs = (one_hot.view(feats.shape[0], k, num_classes) * weights.unsqueeze(-1)).sum(1)
        top1 += (probs.argmax(dim=1) == targets).sum().item()
    return 100.0 * top1 / test_feats.shape[0]


def train_linear_probe(train_feats, train_labels, val_feats, val_labels, num_classes, hp, balanced=False):
    dim = train_feats.shape[1]
    head = nn.Linear(dim, num_classes).cuda()
    nn.init.zeros_(head.bias)
    nn.init.normal_(head.weight, std=0.01)
    ds = TensorDataset(train_feats, train_labels)
    sampler = class_balanced_sampler(train_labels) if balanced else None
    loader = DataLoader(ds, batch_size=hp.get("batch_size", 1024), shuffle=sampler is None, sampler=sampler,
                        drop_last=False)
    opt = torch.optim.SGD(head.parameters(), lr=hp.get("lr", 0.1), momentum=0.9, weight_decay=hp.get("wd", 0.0))
    epochs = hp.get("epochs", 100)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=hp.get("label_smoothing", 0.1))  # ok: MLS309
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = criterion(head(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        pred = head(val_feats.cuda()).argmax(-1).cpu()
    return 100.0 * (pred == val_labels).float().mean().item(), head


def score_sklearn_probe(path, val_feats, val_labels):
    clf = joblib.load(path)  # ruleid: MLS103
    pred = clf.predict(val_feats.numpy())
    return 100.0 * float((pred == val_labels.numpy()).mean())


def load_probe_sweep(path):
    if not path:
        return [{"lr": 0.1, "wd": 0.0, "epochs": 100}]
    with open(path) as f:
        sweep = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return sweep["grid"]


def build_datasets(args):
    _, val_tf = probe_transforms()
    if args.train_shards:
        train_set = PackedLabelledSet(expand_shards(args.train_shards), val_tf)
        val_set = PackedLabelledSet(expand_shards(args.val_shards), val_tf)
        return train_set, val_set, None, len(train_set.class_to_idx)
    class_to_idx = class_index_from_folders(args.train_root)
    if args.split_list:
        train_samples = load_split_list(args.split_list, args.train_root, class_to_idx)
    else:
        train_samples = [
            (os.path.join(args.train_root, c, f), i)
            for c, i in class_to_idx.items()
            for f in sorted(os.listdir(os.path.join(args.train_root, c)))
        ]
    if args.metadata:
        train_samples = filter_by_metadata(train_samples, load_subset_metadata(args.metadata))
    if args.shots:
        train_samples = per_class_subsample(train_samples, args.shots)
    train_samples = drop_rare_classes(train_samples)
    train_samples, held_samples = split_holdout(train_samples)
    val_samples = load_val_labels(args.val_labels, args.val_dir, class_to_idx)
    return (ImageListDataset(train_samples, val_tf), ImageListDataset(val_samples, val_tf),
            ImageListDataset(held_samples, val_tf), len(class_to_idx))


def make_loader(dataset, args):
    sampler = DistributedSampler(dataset, shuffle=False) if utils.is_dist() else None
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                      pin_memory=True, drop_last=False)


def main():
    args = get_args()
    rank, _, _ = utils.init_distributed()
    utils.setup_logging(args.output_dir, rank)

    backbone = MaskedViT(args.arch).cuda()
    load_backbone_weights(backbone, args.weights)
    backbone.eval()

    if args.precomputed:
        train_feats, train_labels = load_precomputed(args.precomputed, "train")
        val_feats, val_labels = load_precomputed(args.precomputed, "val")
        held_feats = held_labels = None
        num_classes = int(train_labels.max()) + 1
    else:
        train_set, val_set, held_set, num_classes = build_datasets(args)
        tag = cache_tag(args)
        train_feats, train_labels = cached_features(backbone, make_loader(train_set, args), args.feature_cache, tag, "train")
        val_feats, val_labels = cached_features(backbone, make_loader(val_set, args), args.feature_cache, tag, "val")
        held_feats = held_labels = None
        if held_set is not None and len(held_set):
            held_feats, held_labels = extract_features(backbone, make_loader(held_set, args))

    results = {}
    if utils.is_main_process():
        for k in args.nb_knn:
            top1 = knn_classifier(train_feats, train_labels, val_feats, val_labels, k, args.knn_temp, num_classes)
            results[f"knn{k}_top1"] = top1
            logger.info("k-NN k=%d: top1 %.2f", k, top1)

        if args.sklearn_probe:
            results["sklearn_probe_top1"] = score_sklearn_probe(args.sklearn_probe, val_feats, val_labels)
        else:
            best = (-1.0, None)
            for hp in load_probe_sweep(args.probe_config):
                sel_feats, sel_labels = (held_feats, held_labels) if held_feats is not None else (val_feats, val_labels)
                acc, _ = train_linear_probe(train_feats, train_labels, sel_feats, sel_labels, num_classes, hp, args.balanced)
                logger.info("probe %s: %.2f", hp, acc)
                if acc > best[0]:
                    best = (acc, hp)
            acc, head = train_linear_probe(train_feats, train_labels, val_feats, val_labels, num_classes, best[1],
                                           args.balanced)
            results["linear_top1"], results["linear_hp"] = acc, best[1]
            torch.save(head.state_dict(), os.path.join(args.output_dir, "linear_head.pth"))
        logger.info("results: %s", json.dumps(results))
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
