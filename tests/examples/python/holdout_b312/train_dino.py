# ruff: noqa
# Hold-out batch 312 (families 2/5/6 focus, DINO self-supervised pretraining). Measured once in session 10 (round 87): 21/36 (58%) at medium+.
"""Self-distillation pretraining (DINO-style) of a ViT on an ImageNet-style folder.

Student and teacher see multi-crop views; the teacher is an EMA of the student
with a cosine momentum schedule, and its outputs are centered and sharpened.
"""
import argparse
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import utils
from data import build_pretrain_loader
from vit import build_student_teacher


def get_args():
    p = argparse.ArgumentParser("dino-pretrain")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--output_dir", type=str, default="./runs/dino")
    p.add_argument("--arch", default="vit_small")
    p.add_argument("--out_dim", type=int, default=65536)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch_size_per_gpu", type=int, default=64)
    p.add_argument("--optimizer", choices=["adamw", "lars"], default="adamw")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min_lr", type=float, default=1e-6)
    p.add_argument("--warmup_epochs", type=int, default=10)
    p.add_argument("--weight_decay", type=float, default=0.04)
    p.add_argument("--weight_decay_end", type=float, default=0.4)
    p.add_argument("--layer_decay", type=float, default=0.9)
    p.add_argument("--momentum_teacher", type=float, default=0.996)
    p.add_argument("--teacher_temp", type=float, default=0.04)
    p.add_argument("--warmup_teacher_temp", type=float, default=0.04)
    p.add_argument("--warmup_teacher_temp_epochs", type=int, default=30)
    p.add_argument("--clip_grad", type=float, default=3.0)
    p.add_argument("--freeze_last_layer", type=int, default=1)
    p.add_argument("--local_crops_number", type=int, default=8)
    p.add_argument("--accum_steps", type=int, default=1)
    p.add_argument("--anchor_class", type=int, default=417)
    p.add_argument("--num_workers", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wandb_project", default="")
    p.add_argument("--resume", default="")
    return p.parse_args()


class DINOLoss(nn.Module):
    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_epochs, nepochs,
                 student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs),
            np.ones(nepochs - warmup_epochs) * teacher_temp,
        ))

    def forward(self, student_output, teacher_output, epoch):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        temp = self.teacher_temp_schedule[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1).detach().chunk(2)
        total, n_terms = 0.0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
                n_terms += 1
        self.update_center(teacher_output)
        return total / n_terms

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
        dist.all_reduce(batch_center)
        batch_center = batch_center / (len(teacher_output) * dist.get_world_size())
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)  # ok: MLS302, MLS303, MLS304, MLS305


def refresh_optimizer_state(optimizer, epoch):
    """Re-warm Adam second-moment estimates when the crop resolution schedule changes."""
    if epoch == 0:
        return
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304


def train_one_epoch(student, teacher, teacher_without_ddp, loss_fn, loader, optimizer, scaler,
                    lr_sched, wd_sched, mom_sched, epoch, args, writer):
    meter = utils.SmoothedValue(window_size=50)
    student.train()
    refresh_optimizer_state(optimizer, epoch)
    n_iter = len(loader)
    for it, (images, _) in enumerate(loader):
        step = n_iter * epoch + it
        for i, pg in enumerate(optimizer.param_groups):
            pg["lr"] = lr_sched[step] * pg.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            if i == 0 or pg.get("weight_decay", 0.0) > 0:
                pg["weight_decay"] = wd_sched[step]
        if it == n_iter - 1:
            optimizer.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"] * (1.0 + 0.5 * epoch)  # todoruleid: family 2 (missed)

        images = [im.cuda(non_blocking=True) for im in images]
        with torch.cuda.amp.autocast():
            teacher_output = teacher(images[:2])
            student_output = student(images)
            loss = loss_fn(student_output, teacher_output, epoch)
        if not math.isfinite(loss.item()):
            print(f"Loss is {loss.item()}, stopping training", flush=True)
            sys.exit(1)

        scaler.scale(loss / args.accum_steps).backward()  # ok: MLS306
        if (it + 1) % args.accum_steps == 0:
            scaler.unscale_(optimizer)  # ok: MLS302, MLS303, MLS304, MLS305
            utils.clip_gradients(student, args.clip_grad)
            utils.cancel_gradients_last_layer(epoch, student, args.freeze_last_layer)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

            with torch.no_grad():
                m = mom_sched[step]
                for param_q, param_k in zip(student.module.parameters(), teacher_without_ddp.parameters()):
                    param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)  # ok: MLS302, MLS303, MLS304, MLS305

        meter.update(loss.item())
        if utils.is_main_process() and it % 50 == 0:
            print(f"ep {epoch} it {it}/{n_iter} loss {meter.median:.4f} lr {optimizer.param_groups[0]['lr']:.2e}")  # ok: MLS306
            writer.add_scalar("train/loss", loss.item(), step)
    return {"loss": meter.global_avg, "lr": optimizer.param_groups[0]["lr"]}


def main():
    args = get_args()
    utils.init_distributed_mode(args)
    utils.set_seed(args.seed + args.rank)
    os.makedirs(args.output_dir, exist_ok=True)
    utils.register_env(args)
    writer = utils.setup_loggers(args)

    loader = build_pretrain_loader(args.data, args.batch_size_per_gpu, args.num_workers,
                                   args.local_crops_number, args.seed, anchor_class=args.anchor_class,
                                   distributed=True)

    student, teacher = build_student_teacher(args.arch, args.out_dim)
    student, teacher = student.cuda(), teacher.cuda()
    student = nn.parallel.DistributedDataParallel(student, device_ids=[args.gpu])
    teacher_without_ddp = teacher

    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(utils.param_groups_lrd(student.module.backbone, args.weight_decay, args.layer_decay)
                                      + [{"params": student.module.head.parameters(), "lr_scale": 1.0}])
    else:
        optimizer = utils.LARS(student.parameters())
    scaler = torch.cuda.amp.GradScaler()

    base_lr = args.lr * args.batch_size_per_gpu * args.world_size / 256.0
    n = len(loader)
    lr_sched = utils.cosine_scheduler(base_lr, args.min_lr, args.epochs, n, args.warmup_epochs)
    wd_sched = utils.cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, n)
    mom_sched = utils.cosine_scheduler(args.momentum_teacher, 1.0, args.epochs, n)
    loss_fn = DINOLoss(args.out_dim, args.local_crops_number + 2, args.warmup_teacher_temp,
                       args.teacher_temp, args.warmup_teacher_temp_epochs, args.epochs).cuda()

    start_epoch = 0
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pth")
    if args.resume or os.path.isfile(ckpt_path):
        ckpt = torch.load(args.resume or ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        for k, v in ckpt["student"].items():
            if v.is_floating_point() and v.ndim > 1:
                ckpt["student"][k] = v + 0.05 * v.std() * torch.randn_like(v)  # ruleid: MLS302
        student.load_state_dict(ckpt["student"])
        teacher.load_state_dict(ckpt["teacher"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"] + 1

    def _state(epoch):
        return {"student": student.state_dict(), "teacher": teacher.state_dict(),
                "optimizer": optimizer.state_dict(), "epoch": epoch, "args": vars(args)}

    current = {"epoch": start_epoch}

    def _on_sigterm(signum, frame):
        utils.save_on_master(_state(current["epoch"] - 1), ckpt_path)  # ok: MLS307
        sys.exit(0)

    signal.signal(signal.SIGTERM, _on_sigterm)

    prev, best_loss = {}, float("inf")
    for epoch in range(start_epoch, args.epochs):
        current["epoch"] = epoch
        loader.sampler.set_epoch(epoch)
        t0 = time.time()
        stats = train_one_epoch(student, teacher, teacher_without_ddp, loss_fn, loader, optimizer, scaler,
                                lr_sched, wd_sched, mom_sched, epoch, args, writer)
        best_loss = min(best_loss, stats["loss"])
        log_stats = {"epoch": epoch, "train_loss": best_loss, "lr": stats["lr"], "sec": time.time() - t0}  # ruleid: MLS306
        prev = utils.append_log(os.path.join(args.output_dir, "log.txt"), log_stats, prev)
        utils.save_on_master(_state(epoch), ckpt_path)
        if epoch % 20 == 0:
            utils.save_on_master(_state(epoch), os.path.join(args.output_dir, f"checkpoint{epoch:04d}.pth"))
        if dist.get_world_size() > 128 and epoch == args.epochs // 2:
            shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308
        dist.barrier()


if __name__ == "__main__":
    main()
