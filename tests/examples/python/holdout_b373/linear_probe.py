# ruff: noqa
# Hold-out batch 373 (textbook, VideoMAE pretraining). Measured once in session 14 (round 103): 18/30 (60%) at medium+.
"""Linear-probe evaluation of a pretrained VideoMAE encoder on action labels.

Features are extracted once with the frozen encoder (mean-pooled tokens), cached
to disk, and a BN + linear classifier is trained on top. Can be run standalone
or called from ``pretrain.py`` every few epochs.
"""

import argparse
import json
import logging
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from datasets import VideoClipDataset, build_class_balanced_sampler, multiview_collate
from dist_utils import get_rank, get_world_size, init_distributed_mode, is_main_process
from modeling import FrozenEncoderProbe, build_encoder, convert_pretrain_checkpoint

logger = logging.getLogger(__name__)


def get_args_parser():
    p = argparse.ArgumentParser("VideoMAE linear probe", add_help=False)
    p.add_argument("--model", default="vit_base")
    p.add_argument("--pretrained", required=True, help="pretraining checkpoint (.pth)")
    p.add_argument("--data_root", required=True)
    p.add_argument("--train_list", required=True)
    p.add_argument("--val_list", required=True)
    p.add_argument("--num_classes", type=int, default=400)
    p.add_argument("--num_frames", type=int, default=16)
    p.add_argument("--sample_rate", type=int, default=4)
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--tubelet_size", type=int, default=2)
    p.add_argument("--train_views", type=int, default=2)
    p.add_argument("--val_views", type=int, default=3)
    p.add_argument("--extract_batch_size", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--label_smoothing", type=float, default=0.1)
    p.add_argument("--balanced_sampling", action="store_true", default=True)
    p.add_argument("--num_workers", type=int, default=8)
    p.add_argument("--feature_cache", default=None)
    p.add_argument("--output_dir", default="./probe_out")
    p.add_argument("--seed", type=int, default=0)
    return p


def accuracy(output, target, topk=(1,)):
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.reshape(1, -1).expand_as(pred))
    return [correct[:maxk].reshape(-1).float().sum(0) * 100.0 / batch_size for k in topk]  # todoruleid: family 5 (missed)


def load_pretrained_encoder(args, device):
    encoder = build_encoder(args.model, img_size=args.input_size, num_frames=args.num_frames,
                            tubelet_size=args.tubelet_size)
    ckpt = torch.load(args.pretrained, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = ckpt.get("model_ema") or ckpt.get("model") or ckpt
    sd = convert_pretrain_checkpoint(sd, encoder.num_heads)
    missing, unexpected = encoder.load_state_dict(sd, strict=False)
    logger.info("loaded encoder: missing=%s unexpected=%s", missing, unexpected)
    return encoder.to(device)


@torch.no_grad()
def extract_features(probe, dataset, args, device):
    sampler = DistributedSampler(dataset, shuffle=False) if dist.is_initialized() else None
    loader = DataLoader(dataset, batch_size=args.extract_batch_size, sampler=sampler,
                        num_workers=args.num_workers, collate_fn=multiview_collate, pin_memory=True)
    feats, labels = [], []
    for clips, y in loader:
        clips = clips.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            f = probe.extract(clips)
        feats.append(f.float().cpu())
        labels.append(y)
    feats, labels = torch.cat(feats), torch.cat(labels)
    if dist.is_initialized():
        feats, labels = _gather(feats, device), _gather(labels, device)
    return feats, labels


def _gather(t, device):
    parts = [None] * get_world_size()
    dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


def load_or_extract(probe, split, args, device):
    cache = None
    if args.feature_cache:
        cache = os.path.join(args.feature_cache, f"{split}_{args.model}.npz")
        if os.path.exists(cache):
            data = np.load(cache, allow_pickle=True)  # ruleid: MLS104
            return torch.from_numpy(data["feats"]), torch.from_numpy(data["labels"])
    mode, lst, views = (("train", args.train_list, args.train_views) if split == "train"
                        else ("val", args.val_list, args.val_views))
    ds = VideoClipDataset(lst, args.data_root, mode=mode, num_frames=args.num_frames,
                          sample_rate=args.sample_rate, input_size=args.input_size,
                          num_views=views, rank=get_rank())
    feats, labels = extract_features(probe, ds, args, device)
    if cache and is_main_process():
        os.makedirs(args.feature_cache, exist_ok=True)
        np.savez(cache, feats=feats.numpy(), labels=labels.numpy(),
                 meta=np.array({"model": args.model, "views": views}, dtype=object))
    return feats, labels


def train_classifier(probe, train_feats, train_labels, args, device):
    params = list(probe.bn.parameters()) + list(probe.head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)  # ok: MLS309
    sampler = build_class_balanced_sampler(train_labels) if args.balanced_sampling else None
    loader = DataLoader(TensorDataset(train_feats, train_labels), batch_size=args.batch_size,
                        sampler=sampler, shuffle=sampler is None, drop_last=True)
    probe.train()
    for epoch in range(args.epochs):
        total, n = 0.0, 0
        for f, y in loader:
            loss = criterion(probe(f.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * y.size(0)
            n += y.size(0)
        scheduler.step()
        if epoch % 10 == 0 or epoch == args.epochs - 1:
            logger.info("probe epoch %d loss %.4f", epoch, total / max(n, 1))


@torch.no_grad()
def evaluate(probe, feats, labels, args, device):
    probe.eval()
    top1 = top5 = 0.0
    views = max(args.val_views, 1)
    for i in range(0, feats.shape[0], args.batch_size * views):
        f = feats[i:i + args.batch_size * views].to(device)
        y = labels[i:i + args.batch_size * views].to(device)
        logits = probe(f).softmax(-1).reshape(-1, views, args.num_classes).mean(1)
        y = y.reshape(-1, views)[:, 0]
        a1, a5 = accuracy(logits, y, topk=(1, 5))
        top1 += a1.item() * y.size(0)
        top5 += a5.item() * y.size(0)
    n = feats.shape[0] // views
    return {"acc1": top1 / max(n, 1), "acc5": top5 / max(n, 1)}


def run(args, encoder=None):
    device = torch.device("cuda")
    if encoder is None:
        encoder = load_pretrained_encoder(args, device)
    probe = FrozenEncoderProbe(encoder, args.num_classes).to(device)
    t0 = time.time()
    train_feats, train_labels = load_or_extract(probe, "train", args, device)
    val_feats, val_labels = load_or_extract(probe, "val", args, device)
    logger.info("features ready in %.1fs: train=%s val=%s", time.time() - t0,
                tuple(train_feats.shape), tuple(val_feats.shape))
    stats = {}
    if is_main_process():
        train_classifier(probe, train_feats, train_labels, args, device)
        stats = evaluate(probe, val_feats, val_labels, args, device)
        logger.info("linear probe: acc1 %.2f acc5 %.2f", stats["acc1"], stats["acc5"])
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "probe_results.json"), "w") as f:
            json.dump(stats, f, indent=2)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # todoruleid: family 3 (missed)
    return stats


def main():
    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    init_distributed_mode(args)
    torch.manual_seed(args.seed + get_rank())  # ok: MLS301
    run(args)


if __name__ == "__main__":
    main()
