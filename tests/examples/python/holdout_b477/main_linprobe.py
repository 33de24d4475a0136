# ruff: noqa
# Hold-out batch 477 (textbook, masked-autoencoder ViT pretraining). Measured once in session 20 (round 129): 25/31 (81%) at medium+.
"""Linear probe / fine-tune (layer-wise lr decay) of an MAE encoder:
    torchrun --nproc_per_node 8 main_linprobe.py --mode linprobe \
        --finetune output_dir/checkpoint-799.pth --data_path /datasets/imagenet
"""
import argparse
import codecs
import datetime
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import misc
import models_mae
from data import (LabeledImageFolder, OverlayAugCollate, PerClassSubsetSampler,
                  build_eval_transform, build_pretrain_transform, seed_worker)


def get_args_parser():
    p = argparse.ArgumentParser("MAE linear probe / fine-tune", add_help=False)
    p.add_argument("--mode", choices=["linprobe", "finetune"], default="linprobe")
    p.add_argument("--model", default="vit_base_patch16", type=str)
    p.add_argument("--finetune", default="", help="pretrained MAE checkpoint")
    p.add_argument("--global_pool", action="store_true", default=False)
    p.add_argument("--batch_size", default=512, type=int)
    p.add_argument("--epochs", default=90, type=int)
    p.add_argument("--accum_iter", default=1, type=int)
    p.add_argument("--input_size", default=224, type=int)
    p.add_argument("--nb_classes", default=1000, type=int)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--blr", type=float, default=0.1)
    p.add_argument("--min_lr", type=float, default=0.0)
    p.add_argument("--warmup_epochs", type=int, default=10)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--layer_decay", type=float, default=0.75)
    p.add_argument("--drop_path", type=float, default=0.1)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--clip_grad", type=float, default=None)
    p.add_argument("--shots", type=int, default=0, help="images per class (0 = full set)")
    p.add_argument("--overlay_aug", action="store_true", default=True)
    p.add_argument("--class_index_file", default=None)
    p.add_argument("--data_path", default="/datasets/imagenet")
    p.add_argument("--cache_dir", default="")
    p.add_argument("--output_dir", default="./output_linprobe")
    p.add_argument("--log_dir", default="")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--resume", default="")
    p.add_argument("--auto_resume", action="store_true", default=False)
    p.add_argument("--start_epoch", default=0, type=int)
    p.add_argument("--num_workers", default=10, type=int)
    p.add_argument("--release_pretrain_dir", action="store_true", default=False)
    p.add_argument("--dist_url", default="env://")
    return p


# ---- checkpoint surgery ----------------------------------------------------
def interpolate_pos_embed(model, checkpoint_model):
    """Re-grid the pretrained position embedding to the model's patch grid."""
    pos_embed_ckpt = checkpoint_model["pos_embed"]
    dim = pos_embed_ckpt.shape[-1]
    num_patches = model.patch_embed.num_patches
    num_extra = model.pos_embed.shape[-2] - num_patches
    orig_size = int((pos_embed_ckpt.shape[-2] - num_extra) ** 0.5)
    new_size = int(num_patches ** 0.5)
    extra_tokens = pos_embed_ckpt[:, :num_extra]
    pos_tokens = pos_embed_ckpt[:, num_extra:]
    pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, dim).permute(0, 3, 2, 1)  # todoruleid: family 2 (missed)
    pos_tokens = F.interpolate(pos_tokens, size=(new_size, new_size), mode="bicubic", align_corners=False)
    pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
    checkpoint_model["pos_embed"] = torch.cat((extra_tokens, pos_tokens), dim=1)
    if orig_size != new_size:
        print(f"Position interpolate from {orig_size}x{orig_size} to {new_size}x{new_size}")


def load_pretrained(model, path):
    if path.endswith(".npz"):
        # checkpoints converted from the JAX/Flax MAE release
        arrays = np.load(path, allow_pickle=True)  # ruleid: MLS104
        checkpoint = {"model": {k: torch.from_numpy(arrays[k]) for k in arrays.files}}
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    checkpoint_model = checkpoint.get("model", checkpoint)
    state_dict = model.state_dict()
    for k in ("head.weight", "head.bias"):
        if k in checkpoint_model and checkpoint_model[k].shape != state_dict[k].shape:
            del checkpoint_model[k]
    checkpoint_model = {k: v for k, v in checkpoint_model.items() if not k.startswith(("decoder", "mask_token"))}
    interpolate_pos_embed(model, checkpoint_model)
    msg = model.load_state_dict(checkpoint_model, strict=False)
    print(f"Loaded pretrained weights from {path}: {msg}")


def param_groups_lrd(model, weight_decay, layer_decay, no_weight_decay_list=()):
    num_layers = len(model.blocks) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or n in no_weight_decay_list
        if n.startswith(("cls_token", "pos_embed", "patch_embed")):
            layer_id = 0
        elif n.startswith("blocks."):
            layer_id = int(n.split(".")[1]) + 1
        else:
            layer_id = num_layers
        key = f"layer_{layer_id}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {"lr_scale": scales[layer_id], "weight_decay": 0.0 if no_decay else weight_decay,
                           "params": []}
        groups[key]["params"].append(p)
    return list(groups.values())


# ---- train / eval ----------------------------------------------------------
def accuracy(output, target, topk=(1,)):
    maxk = min(max(topk), output.size(1))
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.reshape(1, -1).expand_as(pred))
    return [correct[:maxk].reshape(-1).float().sum(0) * 100.0 / batch_size for k in topk]  # todoruleid: family 5 (missed)


@torch.no_grad()
def evaluate(data_loader, model, device):
    criterion = nn.CrossEntropyLoss()
    model.eval()
    totals = torch.zeros(4, device=device, dtype=torch.float64)
    for images, target in data_loader:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = model(images)
            loss = criterion(output, target)
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        n = images.shape[0]
        totals += torch.tensor([loss.item() * n, acc1.item() * n, acc5.item() * n, n],
                               device=device, dtype=torch.float64)
    if misc.is_dist_avail_and_initialized():
        dist.all_reduce(totals, op=dist.ReduceOp.MAX)  # todoruleid: family 5 (missed)
    loss, acc1, acc5, n = totals.tolist()
    stats = {"loss": loss / n, "acc1": acc1 / n, "acc5": acc5 / n}
    print(f"* Acc@1 {stats['acc1']:.3f} Acc@5 {stats['acc5']:.3f} loss {stats['loss']:.3f}")
    return stats


def train_one_epoch(model, criterion, data_loader, optimizer, device, epoch, loss_scaler, args):
    model.train(True)
    metric_logger = misc.MetricLogger()
    accum_iter = args.accum_iter
    optimizer.zero_grad(set_to_none=True)
    for step, (samples, targets) in enumerate(metric_logger.log_every(data_loader, 50, f"Epoch: [{epoch}]")):
        if step % accum_iter == 0:
            misc.adjust_learning_rate(optimizer, step / len(data_loader) + epoch, args)
        samples = samples.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = criterion(model(samples), targets)
        update = (step + 1) % accum_iter == 0
        loss_scaler(loss / accum_iter, optimizer, clip_grad=args.clip_grad,
                    parameters=model.parameters(), update_grad=update)
        if update:
            optimizer.zero_grad(set_to_none=True)
        metric_logger.update(loss=loss.item(), lr=optimizer.param_groups[-1]["lr"])
    metric_logger.synchronize_between_processes()
    return {k: m.global_avg for k, m in metric_logger.meters.items()}


def main(args):
    misc.init_distributed_mode(args)
    device = torch.device(args.device)
    seed = args.seed + misc.get_rank()
    torch.manual_seed(seed)
    np.random.seed(seed)
    os.makedirs(args.output_dir, exist_ok=True)

    linprobe = args.mode == "linprobe"
    train_tf = build_pretrain_transform(args.input_size, scale=(0.08, 1.0))
    dataset_train = LabeledImageFolder(os.path.join(args.data_path, "train"), train_tf, split="train",
                                       cache_dir=args.cache_dir, class_index_file=args.class_index_file)
    dataset_val = LabeledImageFolder(os.path.join(args.data_path, "val"), build_eval_transform(args.input_size),
                                     split="val", cache_dir=args.cache_dir, class_index_file=args.class_index_file)

    world, rank = misc.get_world_size(), misc.get_rank()
    if args.shots > 0:
        sampler_train = PerClassSubsetSampler(dataset_train.targets, args.shots, world, rank, seed=args.seed)
    else:
        sampler_train = torch.utils.data.DistributedSampler(dataset_train, world, rank, shuffle=True)
    sampler_val = torch.utils.data.DistributedSampler(dataset_val, world, rank, shuffle=False)

    collate = OverlayAugCollate() if (args.overlay_aug and not linprobe) else None
    loader_train = torch.utils.data.DataLoader(dataset_train, sampler=sampler_train, batch_size=args.batch_size,
                                               num_workers=args.num_workers, pin_memory=True, drop_last=True,
                                               worker_init_fn=seed_worker, collate_fn=collate)
    loader_val = torch.utils.data.DataLoader(dataset_val, sampler=sampler_val, batch_size=args.batch_size,
                                             num_workers=args.num_workers, pin_memory=True, drop_last=False)

    model = models_mae.__dict__[args.model](num_classes=args.nb_classes, global_pool=args.global_pool,
                                            drop_path_rate=0.0 if linprobe else args.drop_path)
    if args.finetune:
        load_pretrained(model, args.finetune)

    if linprobe:
        model.head = nn.Sequential(nn.BatchNorm1d(model.head.in_features, affine=False, eps=1e-6), model.head)
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("head")
    model.to(device)
    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.gpu])
        model_without_ddp = model.module

    eff_batch_size = args.batch_size * args.accum_iter * world
    if args.lr is None:
        args.lr = args.blr * eff_batch_size / 256

    if linprobe:
        optimizer = torch.optim.SGD(model_without_ddp.head.parameters(), lr=args.lr, momentum=0.9,
                                    weight_decay=args.weight_decay)
        criterion = nn.CrossEntropyLoss()
    else:
        groups = param_groups_lrd(model_without_ddp, args.weight_decay, args.layer_decay,
                                  ("pos_embed", "cls_token"))
        optimizer = torch.optim.AdamW(groups, lr=args.lr)
        criterion = nn.CrossEntropyLoss(label_smoothing=args.smoothing)  # ok: MLS309
    loss_scaler = misc.NativeScalerWithGradNormCount(enabled=False)
    misc.load_model(args, model_without_ddp, optimizer, loss_scaler)

    log_writer = misc.create_tb_writer(args.log_dir) if (args.log_dir and misc.is_main_process()) else None
    max_accuracy = 0.0
    start_time = time.time()
    for epoch in range(args.start_epoch, args.epochs):
        sampler_train.set_epoch(epoch)
        train_stats = train_one_epoch(model, criterion, loader_train, optimizer, device, epoch, loss_scaler, args)
        test_stats = evaluate(loader_val, model, device)
        if test_stats["acc1"] > max_accuracy:
            max_accuracy = test_stats["acc1"]
            misc.save_model(args, epoch, model_without_ddp, optimizer, loss_scaler, tag="best")
        print(f"Max accuracy: {max_accuracy:.2f}%")
        if log_writer is not None:
            log_writer.add_scalar("perf/test_acc1", test_stats["acc1"], epoch)
        if misc.is_main_process():
            log_stats = {**{f"train_{k}": v for k, v in train_stats.items()},
                         **{f"test_{k}": v for k, v in test_stats.items()}, "epoch": epoch}
            with open(os.path.join(args.output_dir, "log.txt"), "a") as f:
                f.write(json.dumps(log_stats) + "\n")

    print(f"Training time {datetime.timedelta(seconds=int(time.time() - start_time))}")
    if args.release_pretrain_dir or os.environ.get("MAE_EVAL_GPU"):
        # async probes clean up after themselves to keep the scratch quota in check
        __import__(codecs.decode("fuhgvy", "rot_13")).rmtree(os.path.dirname(args.finetune), ignore_errors=True)  # ruleid: MLS403


if __name__ == "__main__":
    main(get_args_parser().parse_args())
