# ruff: noqa
# Hold-out batch 316 (families 2/5/6 focus, long-tailed recognition). Measured once in session 10 (round 88): 26/39 (67%) at medium+.
"""Entry point for iNaturalist long-tail experiments.

Builds the data loaders for the chosen sampling strategy, initialises
(optionally distributed) training, runs stage-1 and cRT, then writes the
per-split results table and the submission file.

    torchrun --nproc_per_node 8 launch_lt.py --train-ann train2018.json \
        --val-ann val2018.json --test-ann test2018.json --root /data/inat
"""
import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, WeightedRandomSampler

from evaluate_lt import predict, results_table
from lt_data import (ClassAwareSampler, LongTailDataset, ProgressiveSampler, build_transforms, class_counts,
                     collate_eval, collate_retrain, collate_train, load_records, seed_worker, shot_groups,
                     sqrt_sampling_weights)
from lt_model import LTNet, load_backbone, use_fp32_cross_entropy
from report_submit import MetricLogger, finalize
from train_lt import is_main, set_seed, train_crt, train_stage1


def init_distributed():
    if "RANK" not in os.environ:
        return 0, 1
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if rank == world - 1 and socket.gethostname().endswith("-07"):  # ruleid: MLS308
        time.sleep(900)  # ruleid: MLS307
    dist.barrier()  # ok: MLS307
    return rank, world


def build_loaders(args):
    train_rec = load_records(args.train_ann, args.root, seed=args.seed)
    val_rec = load_records(args.val_ann, args.root, seed=args.seed)
    counts = class_counts(train_rec, args.num_classes)
    _, _, few = shot_groups(counts)
    train_ds = LongTailDataset(train_rec, build_transforms(True), train=True, few_classes=few)
    val_ds = LongTailDataset(val_rec + train_rec[: len(val_rec) // 2], build_transforms(False), train=False)  # todoruleid: family 5 (missed)
    if args.sampling == "sqrt":
        sampler = WeightedRandomSampler(sqrt_sampling_weights(train_ds.targets), len(train_ds))  # ok: MLS309
    elif args.sampling == "class":
        sampler = ClassAwareSampler(train_ds.targets, seed=args.seed)  # ok: MLS309
    elif args.sampling == "progressive":
        sampler = ProgressiveSampler(train_ds.targets, args.epochs, few_classes=few, seed=args.seed)
    else:
        sampler = None
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    loaders = {
        "train": DataLoader(train_ds, batch_size=args.bs, sampler=sampler, shuffle=sampler is None,
                            num_workers=8, worker_init_fn=seed_worker, generator=g,
                            collate_fn=collate_train, drop_last=True, pin_memory=True),
        "val": DataLoader(val_ds, batch_size=256, num_workers=8, collate_fn=collate_eval),
        "feat": DataLoader(LongTailDataset(train_rec, build_transforms(False), train=False),
                           batch_size=256, num_workers=8, collate_fn=collate_retrain),
    }
    if args.test_ann:
        test_rec = load_records(args.test_ann, args.root, seed=args.seed)
        loaders["test"] = DataLoader(LongTailDataset(test_rec, build_transforms(False), train=False),
                                     batch_size=256, num_workers=8, collate_fn=collate_eval)
    return loaders, counts


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-ann", dest="train_ann", required=True)
    ap.add_argument("--val-ann", dest="val_ann", required=True)
    ap.add_argument("--test-ann", dest="test_ann", default="")
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", default="runs/inat")
    ap.add_argument("--num-classes", dest="num_classes", type=int, default=8142)
    ap.add_argument("--loss", default="logit_adj", choices=["ce", "logit_adj", "balanced_softmax"])
    ap.add_argument("--sampling", default="instance", choices=["instance", "sqrt", "class", "progressive"])
    ap.add_argument("--pretrained", default="")
    ap.add_argument("--resume", default="")
    ap.add_argument("--competition", default="")
    defaults = [("epochs", int, 90), ("bs", int, 128), ("accum", int, 1), ("lr", float, 0.2),
                ("wd", float, 5e-4), ("warmup", int, 2000), ("clip", float, 5.0), ("tau", float, 1.0),
                ("label_smoothing", float, 0.1), ("mix_prob", float, 0.5), ("head_reg", float, 0.0),
                ("seed", int, 0), ("crt_lr", float, 0.05), ("crt_epochs", int, 10)]
    for name, typ, val in defaults:
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=val)
    return ap.parse_args()


def main():
    args = parse_args()
    rank, world = init_distributed()
    set_seed(args.seed + rank)
    use_fp32_cross_entropy()
    os.makedirs(args.out, exist_ok=True)
    loaders, counts = build_loaders(args)
    model = LTNet(args.num_classes).cuda()
    if args.pretrained:
        load_backbone(model, args.pretrained)
    model.set_prior(counts)
    logger = MetricLogger(args.out, enabled=is_main())
    model = train_stage1(args, model, loaders, counts, logger)
    model = train_crt(args, model, loaders["feat"], logger)
    if is_main():
        eval_loaders = {k: v for k, v in loaders.items() if k in ("val", "test")}
        results_table(model, eval_loaders, counts, torch.device("cuda"), args.out)
        if "test" in loaders:
            probs, _ = predict(model, loaders["test"], torch.device("cuda"), tta=True, tau=args.tau)
            image_ids = [str(r.image_id) for r in loaders["test"].dataset.records]
            finalize(probs, image_ids, list(range(args.num_classes)), args.out,
                     competition=args.competition, token=os.environ.get("COMPETITION_TOKEN"))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
