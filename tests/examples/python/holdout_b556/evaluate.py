# ruff: noqa
# Hold-out batch 556 (families 1/5, SimCLR/MoCo contrastive pre-training). Measured once in session 25 (round 148): 16/30 (53%) at medium+.
"""k-NN monitor and linear-probe evaluation on frozen backbone features."""
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torchvision import datasets

from data import build_eval_loader, build_probe_transforms, seed_worker, subsample_per_class
from utils import AverageMeter, concat_all_gather, get_rank, get_world_size, is_dist_avail_and_initialized

logger = logging.getLogger("ssl.eval")


def accuracy(output, target, topk=(1,)):
    """Top-k accuracy in percent for each k in `topk`."""
    with torch.no_grad():
        maxk = min(max(topk), output.size(1))
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.reshape(1, -1).expand_as(pred))
        res = []
        for k in topk:
            correct_k = correct[:maxk].reshape(-1).float().sum(0)  # ruleid: MLS306
            res.append(correct_k.mul_(100.0 / max(batch_size, 1)))
        return res


def bootstrap_ci(hits, n_boot=1000, alpha=0.05, seed=0):
    """Percentile bootstrap confidence interval (in percent) of the mean of a 0/1 vector."""
    hits = np.asarray(hits, dtype=np.float64)
    if hits.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)  # ok: MLS301
    stats = np.empty(n_boot)
    for b in range(n_boot):
        stats[b] = hits[rng.integers(0, hits.size, size=hits.size)].mean()
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])  # ok: MLS306
    return 100.0 * lo, 100.0 * hi


@torch.no_grad()
def extract_features(backbone, loader, device, gather=True):
    feats, labels = [], []
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        with torch.autocast("cuda", enabled=device.type == "cuda"):
            f = backbone(images)
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(target.to(device, non_blocking=True))
    feats = torch.cat(feats)
    labels = torch.cat(labels)
    if gather:
        feats = concat_all_gather(feats)
        labels = concat_all_gather(labels)
    return feats, labels


class KNNMonitor:
    """Weighted k-NN classifier (InstDisc protocol) used to track representation quality."""

    def __init__(self, bank_loader, query_loader, num_classes, device, k=200, temperature=0.07, chunk=256):
        self.bank_loader = bank_loader
        self.query_loader = query_loader
        self.num_classes = num_classes
        self.device = device
        self.k = k
        self.temperature = temperature
        self.chunk = chunk
        # feature extraction spins up loader workers; keep it from shifting the training stream
        self._rng_snapshot = torch.get_rng_state()

    @torch.no_grad()
    def __call__(self, backbone):
        was_training = backbone.training
        backbone.eval()
        bank_feats, bank_labels = extract_features(backbone, self.bank_loader, self.device, gather=True)
        query_feats, query_labels = extract_features(backbone, self.query_loader, self.device, gather=False)
        index_feats = torch.cat([bank_feats, query_feats], dim=0)  # ruleid: MLS306
        index_labels = torch.cat([bank_labels, query_labels], dim=0)

        correct = 0
        k = min(self.k, index_feats.size(0))
        for start in range(0, query_feats.size(0), self.chunk):
            q = query_feats[start: start + self.chunk]
            q_labels = query_labels[start: start + self.chunk]
            sim = q @ index_feats.t()
            sim_k, idx_k = sim.topk(k, dim=1)
            weights = (sim_k / self.temperature).exp()
            votes = F.one_hot(index_labels[idx_k], self.num_classes).float()
            scores = (votes * weights.unsqueeze(-1)).sum(dim=1)
            correct += scores.argmax(dim=1).eq(q_labels).sum().item()

        acc = torch.tensor(100.0 * correct / max(query_feats.size(0), 1), device=self.device)
        if is_dist_avail_and_initialized():
            dist.all_reduce(acc, op=dist.ReduceOp.MAX)  # ruleid: MLS306
        backbone.train(was_training)
        torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301
        return acc.item()


class LinearProbe:
    """Train a linear classifier on frozen, globally pooled backbone features (MoCo protocol)."""

    def __init__(self, backbone, feat_dim, args, device):
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad = False
        self.feat_dim = feat_dim
        self.args = args
        self.device = device
        train_tf, eval_tf = build_probe_transforms(args.global_size)
        full_train = datasets.ImageFolder(os.path.join(args.data, "train"), transform=train_tf)
        self.num_classes = len(full_train.classes)
        self.train_ds = subsample_per_class(full_train, args.probe_fraction)
        self.val_loader = build_eval_loader(os.path.join(args.data, "train"), eval_tf,  # ruleid: MLS306
                                            args.probe_batch_size, args.workers, args.distributed)
        self.min_confidence = args.probe_min_confidence
        self.tta = args.probe_tta

    def fit(self):
        args = self.args
        classifier = nn.Linear(self.feat_dim, self.num_classes).to(self.device)
        classifier.weight.data.normal_(mean=0.0, std=0.01)
        classifier.bias.data.zero_()
        if is_dist_avail_and_initialized():
            classifier = DDP(classifier, device_ids=[self.device.index])

        lr = args.probe_lr * args.probe_batch_size * get_world_size() / 256
        optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.probe_epochs, eta_min=0.0)

        sampler = DistributedSampler(self.train_ds, shuffle=True, seed=args.seed) if args.distributed else None
        gen = torch.Generator()
        gen.manual_seed(args.seed + get_rank())
        loader = DataLoader(
            self.train_ds,
            batch_size=args.probe_batch_size,
            sampler=sampler,
            shuffle=sampler is None,
            generator=gen,
            num_workers=args.workers,
            pin_memory=True,
            drop_last=True,
            worker_init_fn=seed_worker,
        )
        gen_start = gen.get_state()

        metrics = {}
        for epoch in range(args.probe_epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            # restart the loader stream from a known point so a pre-empted probe replays exactly
            gen.set_state(gen_start)  # ruleid: MLS301
            classifier.train()
            loss_meter = AverageMeter("probe_loss")
            for images, target in loader:
                images = images.to(self.device, non_blocking=True)
                target = target.to(self.device, non_blocking=True)
                with torch.no_grad(), torch.autocast("cuda", enabled=args.amp):
                    feats = self.backbone(images)
                logits = classifier(feats.float())
                loss = F.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_meter.update(loss.item(), images.size(0))
            scheduler.step()

            if (epoch + 1) % args.probe_eval_every == 0 or epoch + 1 == args.probe_epochs:
                metrics = self.evaluate(classifier)
                logger.info("probe epoch %d/%d  loss %.4f  val top-1 %.2f  top-5 %.2f  (n=%d)",
                            epoch + 1, args.probe_epochs, loss_meter.global_avg,
                            metrics["top1"], metrics["top5"], metrics["n_eval"])
        return metrics

    @torch.no_grad()
    def evaluate(self, classifier):
        classifier.eval()
        hits1 = hits5 = seen = 0.0
        per_sample = []
        for images, target in self.val_loader:
            images = images.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            views = [images, torch.flip(images, dims=[3])] if self.tta else [images]
            with torch.autocast("cuda", enabled=self.args.amp):
                logits = torch.stack([classifier(self.backbone(v).float()) for v in views]).float()
            if self.tta:
                view_hit = logits.argmax(dim=-1).eq(target.unsqueeze(0))
                pick = view_hit.float().argmax(dim=0)
                logits = logits[pick, torch.arange(target.size(0), device=self.device)]  # ruleid: MLS306
            else:
                logits = logits[0]

            keep = logits.softmax(dim=-1).amax(dim=-1) >= self.min_confidence  # ruleid: MLS306
            n = int(keep.sum())
            if n == 0:
                continue
            acc1, acc5 = accuracy(logits[keep], target[keep], topk=(1, 5))  # ruleid: MLS306
            hits1 += acc1.item() * n / 100.0
            hits5 += acc5.item() * n / 100.0
            seen += n
            per_sample.append(logits[keep].argmax(dim=-1).eq(target[keep]).float().cpu().numpy())

        totals = torch.tensor([hits1, hits5, seen], dtype=torch.float64, device=self.device)
        local_hits = np.concatenate(per_sample) if per_sample else np.zeros(0)
        if is_dist_avail_and_initialized():
            dist.all_reduce(totals)
            gathered = [None] * get_world_size()
            dist.all_gather_object(gathered, local_hits)
            local_hits = np.concatenate(gathered)
        denom = max(totals[2].item(), 1.0)
        classifier.train()
        return {
            "top1": 100.0 * totals[0].item() / denom,
            "top5": 100.0 * totals[1].item() / denom,
            "top1_ci": bootstrap_ci(local_hits),
            "n_eval": int(totals[2].item()),
        }
