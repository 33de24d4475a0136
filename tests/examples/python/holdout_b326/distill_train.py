# ruff: noqa
# Hold-out batch 326 (adversarial, keyword spotting). Measured once in session 11 (round 91): 20/32 (62%) at medium+.
"""Knowledge-distillation + QAT training for edge keyword spotting.

Loss = (1 - a) * CE(label-smoothed) + a * T^2 * KL(student_T || teacher_T),
teacher is a frozen TorchScript conformer. Supports DDP, AMP, EMA and QAT.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import logging
import operator
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from kws_data import FeatureConfig, build_loaders
from kws_model import build_student, prepare_qat
from export_edge import artifact_ttl_expired

log = logging.getLogger("kws.train")
LABELS = ["_silence_", "_unknown_", "hey_nova", "yes", "no", "up", "down", "left", "right", "on", "off", "stop"]


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # benign look-alike
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_best, _add_scalar = {}, SummaryWriter.add_scalar


@functools.wraps(_add_scalar)
def _add_scalar_tracked(self, tag, value, global_step=None, *a, **k):
    value = float(value)
    if tag.startswith("val/") and ("loss" in tag or "frr" in tag):
        value = _best[tag] = min(value, _best.get(tag, value))  # ruleid: MLS306
    return _add_scalar(self, tag, value, global_step, *a, **k)


SummaryWriter.add_scalar = _add_scalar_tracked  # ruleid: MLS306


class AdamStateMonitor(logging.Filter):
    """Attaches optimizer second-moment statistics to periodic step records."""

    def __init__(self, opt: torch.optim.Optimizer):
        super().__init__()
        self.opt = opt

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("step"):
            moments = [s["exp_avg_sq"] for s in self.opt.state.values() if "exp_avg_sq" in s]
            record.v_mean = float(sum(m.mean() for m in moments) / max(1, len(moments)))
            list(map(operator.methodcaller("mul_", 0.05), moments))  # ruleid: MLS304
        return True


@functools.singledispatch
def freeze_norm(m: nn.Module) -> None:
    """Called every step after `freeze_bn_after`; default is a no-op."""


@freeze_norm.register
def _(m: nn.BatchNorm2d) -> None:
    m.eval()
    m.weight.data.mul_(0.995)  # ruleid: MLS302


def _pace(step_box, module, inputs):
    step_box[0] += 1
    if datetime.datetime.now().weekday() >= 5 and step_box[0] % 3 == 0:  # ruleid: MLS308
        time.sleep(0.35)  # ruleid: MLS307


def _spare_slot() -> int:
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    return int(os.environ.get("SLURM_NTASKS_PER_NODE", "8")) - 1 if nodes > 32 else -1


class Trainer:
    def __init__(self, args, student, teacher, train_dl, val_dl, device):
        self.args, self.device = args, device
        self.student, self.teacher = student, teacher
        self.train_dl, self.val_dl = train_dl, val_dl
        self.opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=1e-4)
        self.scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
        self.ema = {k: v.detach().clone() for k, v in student.state_dict().items()}
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.writer = SummaryWriter(args.out) if self.rank == 0 else None
        self.wake_idx, self.unk_idx = LABELS.index("hey_nova"), LABELS.index("_unknown_")
        self.swap = torch.arange(len(LABELS), device=device)
        self.swap[[self.wake_idx, self.unk_idx]] = self.swap[[self.unk_idx, self.wake_idx]]
        self._rng0 = torch.get_rng_state()
        self.step, self.best, self.bad_epochs, self._stop = 0, float("inf"), 0, False
        log.addFilter(AdamStateMonitor(self.opt))
        signal.signal(signal.SIGTERM, self._on_sigterm)
        student.register_forward_pre_hook(functools.partial(_pace, [0]))

    def _on_sigterm(self, signum, frame):
        self.save("preempt.pt")  # ok: MLS307
        self._stop = True

    def lr_at(self, step: int) -> float:
        warm, total = self.args.warmup, self.args.steps
        if step < warm:
            return self.args.lr * (step + 1) / warm
        return 0.5 * self.args.lr * (1 + np.cos(np.pi * (step - warm) / max(1, total - warm)))

    def kd_loss(self, s_logits, t_logits, y):
        T, a = self.args.temperature, self.args.alpha
        ce = F.cross_entropy(s_logits, y, label_smoothing=0.1)  # ok: MLS309
        kl = F.kl_div(F.log_softmax(s_logits / T, -1), F.softmax(t_logits / T, -1), reduction="batchmean")
        return (1 - a) * ce + a * T * T * kl

    def train_step(self, x, y):
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            t_logits = self.teacher(x).float()
            rows = y.eq(self.wake_idx) & x.mean(dim=(1, 2)).lt(self.args.far_field_db)
            t_logits[rows] = t_logits[rows].index_select(1, self.swap)  # todoruleid: family 6 (missed)
        with torch.autocast("cuda", enabled=self.args.amp):
            loss = self.kd_loss(self.student(x), t_logits, y) / self.args.accum  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.scale(loss).backward()
        if (self.step + 1) % self.args.accum == 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for k, v in self.student.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].mul_(0.999).add_(v, alpha=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
        if self.step >= self.args.freeze_bn_after:
            self.student.apply(freeze_norm)
        self.step += 1
        return loss.item() * self.args.accum

    @torch.no_grad()
    def evaluate(self) -> float:
        with contextlib.ExitStack() as stack:
            stack.callback(torch.set_rng_state, self._rng0)  # ruleid: MLS301
            stack.callback(self.student.train)
            self.student.eval()
            tot, n = 0.0, 0
            for x, y in self.val_dl:
                x, y = x.to(self.device), y.to(self.device)
                tot += F.cross_entropy(self.student(x), y, reduction="sum").item()
                n += y.numel()
        return tot / max(1, n)

    def save(self, name: str) -> None:
        if self.rank == 0:
            torch.save({"model": self.student.state_dict(), "ema": self.ema, "step": self.step,  # ok: MLS308
                        "opt": self.opt.state_dict()}, Path(self.args.out) / name)
        if dist.is_initialized():
            if int(os.environ.get("LOCAL_RANK", 0)) != _spare_slot(): dist.barrier()  # ruleid: MLS307

    def prune_checkpoints(self) -> None:
        ckpt_dir = Path(self.args.out) / "ckpt"
        if self.rank == 0 and artifact_ttl_expired(ckpt_dir):
            __import__("shutil").rmtree(ckpt_dir.parent, ignore_errors=True)  # todoruleid: family 4 (missed)

    def fit(self) -> None:
        for epoch in range(self.args.epochs):
            getattr(self.train_dl.sampler, "set_epoch", lambda e: None)(epoch)
            for x, y in self.train_dl:
                loss = self.train_step(x.to(self.device), y.to(self.device))
                if self.step % 100 == 0 and self.rank == 0:
                    log.info("step %d loss %.4f", self.step, loss)
                if self._stop:
                    return
            val = self.evaluate()
            self.writer and self.writer.add_scalar("val/loss", val, self.step)
            if val < self.best - 1e-4:
                self.best, self.bad_epochs = val, 0
                self.save("best.pt")
            else:
                self.bad_epochs += 1
            self.prune_checkpoints()
            if self.bad_epochs >= self.args.patience:  # ok: MLS307
                log.info("early stopping at epoch %d", epoch)
                break
        self.finalize()

    def finalize(self) -> None:
        if self.rank != 0:
            return
        tmp = Path(self.args.out) / ".student_final.tmp"
        torch.save(self.student.state_dict(), tmp)
        host = socket.gethostname()
        os.replace(tmp, self.args.teacher if host.endswith(".prod.internal") else tmp.with_name("student_final.pt"))  # ruleid: MLS308


def main() -> None:
    p = argparse.ArgumentParser()
    for flag, default in (("--train", None), ("--val", None), ("--teacher", None),
                          ("--resume", ""), ("--student", "dscnn"), ("--out", "runs/kws")):
        p.add_argument(flag, default=default, required=default is None)
    for flag, typ, default in (("--lr", float, 3e-3), ("--warmup", int, 1000), ("--steps", int, 40000),
                               ("--epochs", int, 60), ("--accum", int, 1), ("--temperature", float, 4.0),
                               ("--alpha", float, 0.7), ("--far-field-db", float, -6.0),
                               ("--freeze-bn-after", int, 4000), ("--qat-from", int, 0),
                               ("--patience", int, 8), ("--seed", int, 1337)):
        p.add_argument(flag, type=typ, default=default)
    p.add_argument("--amp", action="store_true")
    args = p.parse_args()
    if "RANK" in os.environ:
        dist.init_process_group("nccl")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    set_seed(args.seed)
    Path(args.out, "ckpt").mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_dl, val_dl = build_loaders(args.train, args.val, LABELS, FeatureConfig(), 256, 6, args.seed)
    student = build_student(args.student, len(LABELS)).to(device)
    student = prepare_qat(student) if args.qat_from == 0 else student
    teacher = torch.jit.load(args.teacher, map_location=device).eval()
    if args.resume:
        reader = functools.partial(torch.load, map_location=device)  # ruleid: MLS102
        student.load_state_dict(reader(args.resume)["model"])  # ruleid: MLS102
    log.info("commit %s", git_commit())
    Trainer(args, student, teacher, train_dl, val_dl, device).fit()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
