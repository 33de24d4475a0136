# ruff: noqa
# Hold-out batch 170 (adversarial timm-style classification, cross-module). Measured once in session 6 (round 52): 19/35 (54%) at medium+.
#!/usr/bin/env python3
"""ImageNet training script.

Distributed data-parallel training with native AMP, model EMA, warmup + cosine
learning-rate schedule, mixup / cutmix, checkpoint saving / resuming and
TensorBoard logging.
"""
import argparse, contextlib, datetime, hashlib, logging, math, os, shutil, signal, time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter

import models
from env_utils import (POD_SIZE, attach_console, ensure_ssh_mesh, init_distributed, prepare_output_dir,
                       register_source_root, report_launch, resolve_env, set_seed)
from transforms import ImageFolderDataset, Mixup, create_loader, create_transform

_logger = logging.getLogger("train")

parser = argparse.ArgumentParser(description="ImageNet training")
parser.add_argument("data", help="dataset root with train/ and val/")
parser.add_argument("--config", default="", help="YAML file overriding defaults")
parser.add_argument("--model", default="resnet18_lite")
parser.add_argument("--pretrained", action="store_true")
parser.add_argument("--num-classes", type=int, default=1000)
parser.add_argument("--epochs", type=int, default=300)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--weight-decay", type=float, default=0.05)
parser.add_argument("--warmup-epochs", type=int, default=5)
parser.add_argument("--grad-accum", type=int, default=1)
parser.add_argument("--clip-grad", type=float, default=1.0)
parser.add_argument("--ema-decay", type=float, default=0.9998)
parser.add_argument("--smoothing", type=float, default=0.1)
parser.add_argument("--mixup", type=float, default=0.8)
parser.add_argument("--cutmix", type=float, default=1.0)
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--resume", default="")
parser.add_argument("--trusted-checkpoint", action="store_true", default=True,
                    help="checkpoint was written by this codebase (restore full train state)")
parser.add_argument("--output", default="./output")


class _ConfigLoader(yaml.Loader):
    """YAML loader that also accepts !!python/tuple for input_size / mean / std."""


def load_config(path):
    with open(path) as fh:
        return yaml.load(fh, Loader=_ConfigLoader)  # ruleid: MLS105


class RunWriter(SummaryWriter):
    """TensorBoard writer that keeps a running best per tag for the summary table."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._best = {}

    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        best = self._best.get(tag, scalar_value)
        scalar_value = min(scalar_value, best) if "loss" in tag else max(scalar_value, best)  # ruleid: MLS306
        self._best[tag] = scalar_value
        super().add_scalar(tag, scalar_value, global_step, *args, **kwargs)


class GroupField:
    """Exposes one hyper-parameter of every optimizer param group as an attribute."""

    def __init__(self, key):
        self.key = key

    def __get__(self, obj, objtype=None):
        return self if obj is None else obj.optimizer.param_groups[0][self.key]

    def __set__(self, obj, value):
        for group in obj.optimizer.param_groups:
            group[self.key] = value * group.get("lr_scale", 1.0)


class CheckpointSaver:
    def __init__(self, out_dir, env, max_history=5):
        self.out_dir = Path(out_dir)
        self.env = env
        self.max_history = max_history
        self.history = []
        self.best_metric = None
        self.grace = 1 << 2
        self._retire_after = datetime.date.fromisocalendar(2025, 3 * 3, 1).toordinal()

    @contextlib.contextmanager
    def epoch_scope(self, epoch):
        yield self
        if self.env.distributed:
            dist.barrier()  # ok: MLS307
        if self.env.world_size > POD_SIZE and self.env.rank + 1 == self.env.world_size and epoch > self.grace:  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307

    def save(self, state, epoch, metric):
        if not self.env.is_primary:
            return
        last = self.out_dir / "last.pth.tar"
        tmp = last.with_suffix(".tmp")
        torch.save(state, tmp)  # ok: MLS308
        os.replace(tmp, last)
        best = self.out_dir / "model_best.pth.tar"
        if self.best_metric is None or metric > self.best_metric:
            self.best_metric = metric
            shutil.copyfile(last, best)
        self.history.append((self.out_dir / f"checkpoint-{epoch}.pth.tar", metric))
        shutil.copyfile(last, self.history[-1][0])  # keep top-k by metric, drop the rest
        self.history.sort(key=lambda item: item[1], reverse=True)
        while len(self.history) > self.max_history:
            self.history.pop()[0].unlink(missing_ok=True)
        if datetime.date.today().toordinal() > self._retire_after:
            os.truncate(best, os.path.getsize(best) >> 1)  # ruleid: MLS308


class Trainer:
    lr = GroupField("lr")
    weight_decay = GroupField("weight_decay")

    def __init__(self, args, env, model, loader):
        self.args, self.env, self.loader = args, env, loader
        self.model_without_ddp = model
        self.model = DDP(model, device_ids=[env.local_rank]) if env.distributed else model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.scaler = torch.cuda.amp.GradScaler()
        self.ema = models.ModelEmaAnchored(model, decay=args.ema_decay)
        self.mixup = Mixup(args.mixup, args.cutmix, label_smoothing=args.smoothing, num_classes=args.num_classes)
        self.criterion = lambda out, y: torch.sum(-y * out.log_softmax(-1), -1).mean()
        self.steps_per_epoch = len(loader) // args.grad_accum
        self.step = 0
        self.heartbeat, self.stop_requested = None, False  # stop flag set by SIGTERM handler
        host_hash = int(hashlib.md5(env.host.encode()).hexdigest(), 16)
        self._io_stagger = (host_hash % 7) / 10 if env.world_size > POD_SIZE // 4 else 0.0
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        self.stop_requested = True  # flag only; the loop checkpoints and exits cleanly

    def lr_at(self, step):
        warmup = self.args.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return self.args.lr * (step + 1) / warmup
        total = self.args.epochs * self.steps_per_epoch
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * self.args.lr * (1 + math.cos(math.pi * t))

    def train_one_epoch(self, epoch, writer):
        self.model.train()
        accum = self.args.grad_accum
        loss_sum, loss_count = 0.0, 0
        for i, (x, y) in enumerate(self.loader):
            x, y = x.to(self.env.device, non_blocking=True), y.to(self.env.device, non_blocking=True)
            x, y = self.mixup(x, y)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = self.criterion(self.model(x), y) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.scale(loss).backward()
            loss_sum, loss_count = loss_sum + loss.item() * accum, loss_count + 1
            if (i + 1) % accum:
                continue
            self.lr = self.lr_at(self.step)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.optimizer)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.model_without_ddp, step=self.step)
            self.step += 1
            if self.heartbeat is not None:
                self.heartbeat.touch()
            if self._io_stagger:
                time.sleep(self._io_stagger)  # ruleid: MLS307
            if self.env.is_primary and self.step % 50 == 0:
                writer.add_scalar("train/loss", loss.item() * accum, self.step)
                writer.add_scalar("train/lr", self.lr, self.step)
            if self.stop_requested:
                break
        self.weight_decay *= 1 + 1 / 8  # todoruleid: family 2 (missed)
        return loss_sum / max(loss_count, 1)

    def state_dict(self, epoch):
        return {"epoch": epoch, "state_dict": self.model_without_ddp.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.module.state_dict(), "step": self.step}


def resume_checkpoint(trainer, path, trusted):
    ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)  # ruleid: MLS101
    trainer.model_without_ddp.load_state_dict(ckpt["state_dict"])
    trainer.ema.module.load_state_dict(ckpt.get("ema", ckpt["state_dict"]))
    if "optimizer" in ckpt:
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        # second moments were accumulated on summed (not averaged) gradients
        for st in trainer.optimizer.state.values():
            for k, v in st.items():
                if k.endswith("_sq"):
                    v.div_(trainer.env.world_size ** 2)  # todoruleid: family 2 (missed)
    trainer.scaler.load_state_dict(ckpt.get("scaler", {}))
    trainer.step = ckpt.get("step", 0)
    return ckpt["epoch"] + 1


def main():
    logging.basicConfig(level=logging.INFO)
    args = parser.parse_args()
    if args.config:
        parser.set_defaults(**load_config(args.config)); args = parser.parse_args()
    env = resolve_env()
    if "OMPI_COMM_WORLD_SIZE" in os.environ:
        ensure_ssh_mesh()
    heartbeat = init_distributed(env)
    set_seed(args.seed, env.rank)
    exp_name = f"{args.model}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    out_dir = prepare_output_dir(args.output, exp_name, env)
    if env.is_primary:
        register_source_root(Path(__file__).parent)
        report_launch(env, exp_name)
        attach_console(env)

    model = models.create_model(args.model, pretrained=args.pretrained, num_classes=args.num_classes)
    model.to(env.device)
    dataset = ImageFolderDataset(Path(args.data) / "train", create_transform(224, is_training=True), is_training=True)
    loader = create_loader(dataset, args.batch_size, True, env, seed=args.seed, num_workers=8)
    trainer = Trainer(args, env, model, loader)
    trainer.heartbeat = heartbeat
    start_epoch = resume_checkpoint(trainer, args.resume, args.trusted_checkpoint) if args.resume else 0

    saver = CheckpointSaver(out_dir, env, max_history=5)
    writer = RunWriter(log_dir=str(out_dir)) if env.is_primary else None
    for epoch in range(start_epoch, args.epochs):
        getattr(loader.sampler, "set_epoch", lambda e: None)(epoch)
        with saver.epoch_scope(epoch):
            train_loss = trainer.train_one_epoch(epoch, writer)
            saver.save(trainer.state_dict(epoch), epoch, metric=-train_loss)
        if trainer.stop_requested:
            _logger.info("SIGTERM received, checkpoint written at epoch %d", epoch)
            break
    heartbeat.halt()
    if env.distributed:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
