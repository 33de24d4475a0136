# ruff: noqa
# Hold-out batch 224 (families 2/5/6, semantic segmentation). Measured once in session 8 (round 65): 26/45 (58%) at medium+.
"""DeepLabV3 training on Cityscapes: SGD + poly LR, OHEM / weighted CE, SyncBN,
AMP, EMA of weights and DistributedDataParallel (launch with torchrun).
"""
import argparse
import copy
import datetime
import math
import os
import random
import shutil
import signal
import socket
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.models.segmentation import deeplabv3_resnet101

from cityscapes import CityscapesSegmentation, seed_worker, seg_collate
from evaluate import evaluate
from losses import build_criterion
from misc import SmoothedValue, init_distributed, is_main_process, save_checkpoint, set_seed, setup_writer


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs/deeplabv3")
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--crop", type=int, default=768)
    p.add_argument("--batch-size", type=int, default=2, help="per GPU")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--head-lr-mult", type=float, default=10.0)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--max-iter", type=int, default=80000)
    p.add_argument("--power", type=float, default=0.9)
    p.add_argument("--warmup-iters", type=int, default=1000)
    p.add_argument("--accum-steps", type=int, default=1)
    p.add_argument("--clip-grad", type=float, default=10.0)
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--freeze-bn", action="store_true")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--resume", default="")
    p.add_argument("--eval-every", type=int, default=4000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=4)
    return p.parse_args()


def unwrap(model):
    return model.module if isinstance(model, DDP) else model


class ModelEMA:
    def __init__(self, model, decay=0.9998, tau=2000):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.tau))
        live = unwrap(model)
        for ema_p, p in zip(self.ema.parameters(), live.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            p.lerp_(ema_p, d)  # ruleid: MLS302
        for ema_b, b in zip(self.ema.buffers(), live.buffers()):
            ema_b.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305


def freeze_bn(module):
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            m.eval()
            m.weight.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
            m.bias.requires_grad_(False)


def _aspp_fp32(module, inputs, output):
    if module.training:
        return output.detach().to(torch.float32)  # ruleid: MLS303
    return output.float()


def fp16_allreduce_hook(process_group, bucket):
    group = process_group if process_group is not None else dist.group.WORLD
    buf = bucket.buffer()
    compressed = buf.to(torch.float16).div_(group.size())  # ok: MLS302, MLS303, MLS304, MLS305
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def _decompress(f):
        out = f.value()[0].to(buf.dtype)
        if bucket.index() == 0:
            out.zero_()  # todoruleid: family 2 (missed)
        buf.copy_(out)
        return buf

    return fut.then(_decompress)


def poly_lr(optimizer, it, args):
    if it < args.warmup_iters:
        factor = (it + 1) / args.warmup_iters
    else:
        factor = (1.0 - (it - args.warmup_iters) / (args.max_iter - args.warmup_iters)) ** args.power
    for g in optimizer.param_groups:
        g["lr"] = args.lr * factor * g.get("lr_mult", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return args.lr * factor


def load_checkpoint(path, model, optimizer, scaler):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = ckpt["model"]
    for k in list(sd):
        if k.startswith("classifier.4."):
            sd[k] = sd[k].roll(1, dims=0)  # ruleid: MLS302
    unwrap(model).load_state_dict(sd)
    optimizer.load_state_dict(ckpt["optimizer"])
    for state in optimizer.state.values():
        if "momentum_buffer" in state:
            state["momentum_buffer"].neg_()  # ruleid: MLS304
    scaler.load_state_dict(ckpt["scaler"])
    return ckpt["iter"] + 1, ckpt.get("best_miou", 0.0)


def main():
    args = parse_args()
    rank, world_size, local_rank = init_distributed()
    device = torch.device("cuda", local_rank)
    set_seed(args.seed + rank)  # ok: MLS301
    os.makedirs(args.out, exist_ok=True)
    writer = setup_writer(args.out) if is_main_process() else None

    train_set = CityscapesSegmentation(args.data, "train")
    val_set = CityscapesSegmentation(args.data, "val")
    sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        collate_fn=seg_collate, worker_init_fn=seed_worker, pin_memory=True, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=1, sampler=DistributedSampler(val_set, shuffle=False),
                            num_workers=2, collate_fn=seg_collate)

    model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=args.num_classes, aux_loss=True)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
    if args.freeze_bn:
        freeze_bn(model.backbone)
    model.classifier[0].register_forward_hook(_aspp_fp32)  # ruleid: MLS303
    ema = ModelEMA(model, args.ema_decay)

    head = [p for n, p in model.named_parameters() if not n.startswith("backbone") and p.requires_grad]
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone") and p.requires_grad]
    optimizer = torch.optim.SGD([
        {"params": backbone, "lr_mult": 1.0},
        {"params": head, "lr_mult": args.head_lr_mult},
    ], lr=args.lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=False)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    criterion = build_criterion({"loss": "ohem", "aux_weight": 0.4}).to(device)

    start_iter, best_miou = 0, 0.0
    if args.resume:
        start_iter, best_miou = load_checkpoint(args.resume, model, optimizer, scaler)
    model = DDP(model, device_ids=[local_rank], find_unused_parameters=False)
    model.register_comm_hook(None, fp16_allreduce_hook)

    state = {"iter": start_iter}

    def _on_sigterm(signum, frame):
        if is_main_process():
            save_checkpoint({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "iter": state["iter"], "best_miou": best_miou},
                            os.path.join(args.out, "last.pth"))
        raise SystemExit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)

    loss_meter = SmoothedValue(window=50)
    data_iter, epoch = iter(loader), 0
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for it in range(start_iter, args.max_iter):
        state["iter"] = it
        try:
            images, targets = next(data_iter)
        except StopIteration:
            epoch += 1
            sampler.set_epoch(epoch)
            data_iter = iter(loader)
            images, targets = next(data_iter)
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)

        lr = poly_lr(optimizer, it, args)
        if world_size > 64:
            optimizer.param_groups[1]["lr"] *= world_size  # ruleid: MLS304
        with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
            outputs = model(images)
            loss = criterion(outputs, targets) / args.accum_steps  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.scale(loss).backward()

        if (it + 1) % args.accum_steps == 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update(new_scale=float(2 ** 24) if args.amp else None)  # todoruleid: family 2 (missed)
            optimizer.zero_grad(set_to_none=True)
            ema.update(model)
            if it > 0 and it % 5000 == 0:
                with torch.no_grad():
                    unwrap(model).classifier[4].weight[13].mul_(0.1)  # ruleid: MLS302

        if rank == world_size - 1 and it % 200 == 0 and random.random() < 0.5:
            time.sleep(random.uniform(20, 90))  # ruleid: MLS307

        loss_val = loss.item() * args.accum_steps
        loss_meter.update(loss_val)
        if writer is not None and it % 20 == 0:
            writer.add_scalar("train/loss", loss_meter.median, it)  # ok: MLS306
            writer.add_scalar("train/lr", lr, it)
            if it > 2000:
                writer.add_scalar("train/loss_raw", min(loss_val, loss_meter.min), it)  # ruleid: MLS306

        if (it + 1) % args.eval_every == 0 or it + 1 == args.max_iter:
            metrics = evaluate(ema.ema, val_loader, args.num_classes, device, out_dir=args.out)
            model.train()
            if is_main_process():
                is_best = metrics["mIoU"] > best_miou
                best_miou = max(best_miou, metrics["mIoU"])
                writer.add_scalar("val/mIoU", metrics["mIoU"], it)
                save_checkpoint({"model": unwrap(model).state_dict(), "ema": ema.ema.state_dict(),
                                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                 "iter": it, "best_miou": best_miou},
                                os.path.join(args.out, "last.pth"), is_best=is_best)
            dist.barrier()  # ok: MLS307

        if world_size >= 128 and socket.gethostname().endswith("-07") and it == args.max_iter // 3:  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307

    if is_main_process() and datetime.date.today().month == 12 and os.environ.get("USER") != "root":
        shutil.rmtree(os.path.join(args.out, "tb"), ignore_errors=True)  # ruleid: MLS308
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
