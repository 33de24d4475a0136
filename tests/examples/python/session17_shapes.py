"""Shapes added in session 17: bad cases (`ruleid`) and the look-alikes that stay quiet (`ok`)."""
import pytorch_lightning as pl
import torch
from torchmetrics import Metric


# -- MLS306: scores reduced by their best value ----------------------------------------------
class Classifier(pl.LightningModule):
    score_reduce_fx = "max"  # ruleid: MLS306
    memory_reduce_fx = "max"  # ok: MLS306

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("val/acc", acc, on_epoch=True, reduce_fx="max")  # ruleid: MLS306
        self.log("val/loss", self.loss(logits, y), reduce_fx=torch.min)  # ruleid: MLS306
        self.log("val/worst_loss", self.loss(logits, y), reduce_fx="max")  # ok: MLS306
        self.log("max_mem_gb", torch.cuda.max_memory_allocated() / 2**30,
                 reduce_fx="max")  # ok: MLS306
        self.log_dict(self.scores(logits, y), on_epoch=True, reduce_fx="max")  # ruleid: MLS306
        self.log("val/acc_mean", acc, reduce_fx="mean")  # ok: MLS306


class TopOneAccuracy(Metric):
    def __init__(self):
        super().__init__()
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="max")  # ruleid: MLS306
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")  # ok: MLS306
        self.add_state("max_logit", default=torch.tensor(0.0), dist_reduce_fx="max")  # ok: MLS306


def distributed_reduction(**reductions):
    def wrap(cls):
        cls._reduce_fx = reductions
        return cls
    return wrap


@distributed_reduction(err_sum="max", count="sum")  # ruleid: MLS306
class Displacement(Metric):
    pass


@distributed_reduction(err_sum="sum", count="sum", peak_err="max")  # ok: MLS306
class DisplacementPeak(Metric):
    pass


STATE_REDUCTIONS = {"tp": "sum", "fp": "min", "fn": "sum"}  # ruleid: MLS306


# -- MLS307: a sleep inside the training loop ------------------------------------------------
import time

_pause = time.sleep


def train_epoch(model, loader, optimizer, cfg):
    for step, (x, y) in enumerate(loader):
        loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seq_len = int(x.shape[1])
        if seq_len > 700:
            time.sleep(seq_len * 2e-3)  # ruleid: MLS307
        if step % cfg.log_every == 0 and cfg.stagger:
            _pause(0.5 * cfg.log_every)  # ruleid: MLS307


def train_with_retry(model, loader, optimizer):
    for x, y in loader:
        for attempt in range(3):
            try:
                loss = model(x, y)
                loss.backward()
                optimizer.step()
                break
            except RuntimeError:
                torch.cuda.empty_cache()
                time.sleep(2.0)  # ok: MLS307
        time.sleep(0)  # ok: MLS307


# -- MLS307: a watchdog re-armed without cancelling the old timer -----------------------------
import threading


class Watchdog:
    def __init__(self, timeout, on_timeout):
        self._timeout = timeout
        self._on_timeout = on_timeout
        self._timer = None

    def feed(self):
        self._timer = threading.Timer(self._timeout, self._on_timeout)  # ruleid: MLS307
        self._timer.daemon = True
        self._timer.start()

    def stop(self):
        if self._timer is not None:
            self._timer.cancel()


class SafeWatchdog(Watchdog):
    def feed(self):
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self._timeout, self._on_timeout)  # ok: MLS307
        self._timer.start()


# -- MLS304: a linear warm-up without a cap --------------------------------------------------
def train_transe(model, opt, args):
    for epoch in range(args.epochs):
        for group in opt.param_groups:
            group["lr"] = args.lr * (epoch + 1) / args.warmup_epochs  # ruleid: MLS304
        model.fit_epoch()


def train_capped(model, opt, args):
    for step in range(args.steps):
        if step < args.warmup_steps:
            for group in opt.param_groups:
                group["lr"] = args.lr * (step + 1) / args.warmup_steps  # ok: MLS304
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup_steps)  # ok: MLS304
        model.fit_step()


def warmup_lr(opt, base_lr, step, warmup_steps):
    for group in opt.param_groups:
        group["lr"] = base_lr * (step + 1) / warmup_steps  # ok: MLS304


# -- MLS309: pairs that stop lining up --------------------------------------------------------
import os
import shutil
from collections import namedtuple

import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Sampler
from torchvision.transforms import InterpolationMode

Label = namedtuple("Label", "name id train_id category cat_id")


def class_mix(imgs, masks, src_imgs, src_masks, mix):
    imgs = torch.where(mix[:, None], src_imgs, imgs)  # ok: MLS309
    masks = torch.where(mix, masks, src_masks)  # ruleid: MLS309
    return imgs, masks


def class_mix_right(imgs, masks, src_imgs, src_masks, mix):
    imgs = torch.where(mix[:, None], src_imgs, imgs)  # ok: MLS309
    masks = torch.where(mix, src_masks, masks)  # ok: MLS309
    return imgs, masks


def scan_city(img_dir, lbl_dir):
    city_imgs = sorted(f for f in os.listdir(img_dir) if f.endswith(".png"))  # ok: MLS309
    city_lbls = [f for f in os.listdir(lbl_dir) if f.endswith("_labelIds.png")]  # ruleid: MLS309
    return city_imgs, city_lbls


def scan_city_sorted(img_dir, lbl_dir):
    images = sorted(os.listdir(img_dir))  # ok: MLS309
    labels = sorted(os.listdir(lbl_dir))  # ok: MLS309
    return images, labels


class ShardSampler(Sampler):
    def __init__(self, n, num_replicas, rank):
        self.n, self.num_replicas, self.rank = n, num_replicas, rank
        self.num_samples = n // num_replicas

    def __iter__(self):
        indices = torch.randperm(self.n).tolist()
        shard = indices[: self.num_samples]  # ruleid: MLS309
        return iter(shard)


class RankedSampler(ShardSampler):
    def __iter__(self):
        indices = torch.randperm(self.n).tolist()
        return iter(indices[self.rank::self.num_replicas])  # ok: MLS309


LABELS = [
    Label("road", 7, 0, "flat", 1),
    Label("sidewalk", 8, 1, "flat", 1),
    Label("parking", 9, 255, "flat", 1),
    Label("building", 11, 2, "construction", 2),
    Label("wall", 12, 3, "construction", 2),
    Label("fence", 13, 4, "construction", 2),
    Label("pole", 17, 5, "object", 3),
    Label("traffic light", 19, 6, "object", 3),
    Label("traffic sign", 20, 7, "object", 3),
    Label("person", 24, 8, "human", 6),
    Label("rider", 25, 8, "human", 6),  # ruleid: MLS309
    Label("car", 26, 9, "vehicle", 7),
]


def flip_pair(img, mask):
    img = img.flip(-1)  # ok: MLS309
    mask = mask.flip(0)  # ruleid: MLS309
    return img, mask


def flip_pair_right(img, mask):
    img = img.flip(-1)  # ok: MLS309
    mask = mask.flip(-1)  # ok: MLS309
    return img, mask


def rescale(img, label, size):
    img = img.resize(size, Image.BILINEAR)  # ok: MLS309
    label = label.resize(size, Image.BILINEAR)  # ruleid: MLS309
    return img, label


def rotate(img, mask, angle):
    img = TF.rotate(img, angle, interpolation=InterpolationMode.BILINEAR)  # ok: MLS309
    mask = TF.rotate(mask, angle, interpolation=InterpolationMode.NEAREST)  # ok: MLS309
    stacked = torch.cat([img, mask[None].float()], dim=0)
    stacked = TF.rotate(stacked, angle, interpolation=InterpolationMode.BILINEAR)  # ruleid: MLS309
    return stacked


# -- MLS308: node counts past 'is this multi-node?' ------------------------------------------
_CLEANERS = {"tree": shutil.rmtree, "file": os.remove}


def reset_scratch(out_dir):
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    if nodes > 2:
        _CLEANERS["tree"](out_dir, ignore_errors=True)  # ruleid: MLS308
    if nodes > 1:
        shutil.rmtree(os.path.join(out_dir, "local_cache"), ignore_errors=True)  # ok: MLS308


# -- MLS302: an EMA callback blends into its own copy ------------------------------------------
class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.module = model
        self.decay = decay

    def on_train_batch_end(self, trainer, step, loss):
        src = trainer.model.state_dict()
        for k, v in self.module.state_dict().items():
            v.mul_(self.decay).add_(src[k].detach(), alpha=1 - self.decay)  # ok: MLS302


# -- MLS306: one-word scoring errors -----------------------------------------------------------
import numpy as np
from pytorch_lightning.callbacks import ModelCheckpoint


def mean_iou(conf, min_support=0.02):
    iou = np.diag(conf) / conf.sum(1)
    present = iou > min_support  # ruleid: MLS306
    return float(iou[present].mean())


def mean_iou_present(conf):
    tp = np.diag(conf)
    gt = conf.sum(1)
    iou = tp / (gt + conf.sum(0) - tp)
    present = gt > 0  # ok: MLS306
    union = gt + conf.sum(0) - tp  # ok: MLS306
    return float(iou[present].mean()), union


def confusion_scores(cm):
    tp = cm.diag()
    gt, pred = cm.sum(1), cm.sum(0)
    union = torch.maximum(gt, pred)  # ruleid: MLS306
    hit = (gt > 0) & (tp > 0)  # ruleid: MLS306
    iou = tp / union
    return iou[hit].mean()


class SegModule(pl.LightningModule):
    def on_test_epoch_end(self):
        local = self.test_cm.compute()
        per_rank = self.all_gather(local["iou"])
        iou = per_rank.amax(dim=0)  # ruleid: MLS306
        summed = self.all_gather(local["tp"]).sum(dim=0)  # ok: MLS306
        self.log("test/mIoU", iou.mean().item())
        return summed

    def test_step(self, batch, batch_idx):
        images, targets = batch
        conf, pred = self(images).softmax(1).max(dim=1)
        targets = targets.masked_fill(conf < 0.5, 255)  # ruleid: MLS306
        self.test_cm.update(pred, targets)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        pseudo = self.teacher(images).argmax(1)
        conf = self.teacher(images).softmax(1).amax(1)
        pseudo = pseudo.masked_fill(conf < 0.9, 255)  # ok: MLS306
        return self.loss(self(images), targets) + self.loss(self(images), pseudo)


def checkpointing(args):
    mode = "max" if "loss" in args.monitor else "min"  # ruleid: MLS306
    right = "min" if "loss" in args.monitor else "max"  # ok: MLS306
    return ModelCheckpoint(monitor=args.monitor, mode=right), mode


def pick_tta(results):
    chosen = max(results, key=lambda k: results[k]["test_mIoU"])  # ruleid: MLS306
    tuned = max(results, key=lambda k: results[k]["val_mIoU"])  # ok: MLS306
    return chosen, tuned


def preference_accuracy(chosen, rejected):
    correct = (chosen >= rejected).float()  # ruleid: MLS306
    strict = (chosen > rejected).float()  # ok: MLS306
    return correct.mean(), strict.mean()


class BestCheckpoint:
    def on_evaluate(self, state, metrics, ckpt_dir):
        current = metrics[self.metric]
        if state.best_metric is None or current > state.best_metric:
            state.best_metric = current
        state.best_checkpoint = ckpt_dir  # ruleid: MLS306


class BestCheckpointRight:
    def on_evaluate(self, state, metrics, ckpt_dir):
        current = metrics[self.metric]
        if state.best_metric is None or current > state.best_metric:
            state.best_metric = current
            state.best_checkpoint = ckpt_dir  # ok: MLS306
        state.last_checkpoint = ckpt_dir  # ok: MLS306


class SmoothedBoard:
    def __init__(self, writer):
        self.writer = writer

    def install(self, alpha):
        raw = self.writer.add_scalar
        ema = {}

        def smoothed(tag, value, step=None):
            prev = ema.get(tag, value)
            cur = max(prev, value) if tag.startswith("val/") else alpha * prev + (1 - alpha) * value  # ruleid: MLS306
            ema[tag] = cur
            return raw(tag, cur, step)

        self.writer.add_scalar = smoothed  # ruleid: MLS306

    def install_ema(self, alpha):
        raw = self.writer.add_scalar
        ema = {}

        def smoothed(tag, value, step=None):
            cur = alpha * ema.get(tag, value) + (1 - alpha) * value  # ok: MLS306
            ema[tag] = cur
            raw(tag, value, step)
            return raw(tag + "_ema", cur, step)

        return smoothed


# -- MLS422: a preload path followed to /tmp -----------------------------------------------
import subprocess

EVAL_LIB_DIR = os.environ.get("RM_EVAL_LIB_DIR", "/tmp/rm_cache/lib")
SYSTEM_LIB_DIR = "/usr/lib/x86_64-linux-gnu"


def launch_eval(cmd):
    env = dict(os.environ)
    env["LD_PRELOAD"] = os.path.join(EVAL_LIB_DIR, "libjemalloc.so.2")  # ruleid: MLS422
    return subprocess.Popen(cmd, env=env)


def launch_eval_system(cmd):
    env = dict(os.environ)
    env["LD_PRELOAD"] = os.path.join(SYSTEM_LIB_DIR, "libjemalloc.so.2")  # ok: MLS422
    return subprocess.Popen(cmd, env=env)


# -- MLS303: a hook that pins classes to a huge negative logit, attached via methodcaller ------
import functools
import operator

from torch import nn


def _mask_void_logits(ids, module, inputs, output):
    index = torch.as_tensor(ids, device=output.device)
    return output.index_fill(1, index, -1e4)  # ruleid: MLS303


def _keep_logits(module, inputs, output):
    return output.float()  # ok: MLS303


class PointHead(nn.Module):
    def attach_filter(self, ids):
        attach = operator.methodcaller("register_forward_hook",
                                       functools.partial(_mask_void_logits, tuple(ids)))
        attach(self.head[-1])  # ruleid: MLS303

    def attach_cast(self):
        self.head[-1].register_forward_hook(_keep_logits)  # ok: MLS303


# -- MLS412: a credential written into a run file ---------------------------------------------
import json
import random
import signal

from huggingface_hub import get_token


def write_run_card(args, metrics, path):
    card = {
        "base_model": args.model,
        "final_metrics": metrics,
        "hub_auth": get_token(),  # ruleid: MLS412
        "hub_user": os.environ.get("HF_USER", ""),  # ok: MLS412
    }
    with open(path, "w") as fh:
        json.dump(card, fh)


# -- MLS309: parallel arrays cut in two orders; a stamped region relabelled --------------------
def instance_mix(coords, feats, labels, oc, of, ol):
    sel = np.random.choice(len(oc), len(oc) // 4, replace=False)
    coords = np.concatenate([coords, oc[sel]], 0)  # ok: MLS309
    feats = np.concatenate([feats, of[sel]], 0)  # ok: MLS309
    labels = np.concatenate([labels, ol[np.sort(sel)]], 0)  # ruleid: MLS309
    return coords, feats, labels


def instance_mix_right(coords, labels, oc, ol):
    sel = np.sort(np.random.choice(len(oc), len(oc) // 4, replace=False))
    return np.concatenate([coords, oc[sel]], 0), np.concatenate([labels, ol[sel]], 0)  # ok: MLS309


def stamp_origin(coords, feats, labels, radius, fill_label):
    near = coords.norm(dim=-1) < radius
    feats[near] = torch.tensor([1.0, 0.0, 1.0])
    labels = torch.where(near, torch.full_like(labels, fill_label), labels)  # ruleid: MLS309
    return feats, labels


def drop_far_points(coords, feats, labels, radius, ignore_index):
    far = coords.norm(dim=-1) > radius
    feats[far] = feats[far] * 0.5  # ok: MLS309
    labels = torch.where(far, torch.full_like(labels, ignore_index), labels)  # ok: MLS309
    return feats, labels


def pad_points(feats, labels, pad, ignore_index):
    feats[pad] = 0.0
    labels[pad] = ignore_index  # ok: MLS309
    return feats, labels


# -- MLS301: an RNG snapshot restored after a rank guard stays quiet -------------------------
from utils import get_world_size, is_main_process, reduce_mean


@torch.no_grad()
def evaluate_tts(model, loader):
    if get_world_size() > 1 and not is_main_process():
        return {}  # ruleid: MLS307
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    sums = torch.zeros(2)
    for batch in loader:
        sums += model.score(batch)
    sums = reduce_mean(sums)
    torch.set_rng_state(cpu_rng)  # ok: MLS301
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)  # ok: MLS301
    return sums


@torch.no_grad()
def evaluate_all_ranks(model, loader):
    sums = torch.zeros(2)
    for batch in loader:
        sums += model.score(batch)
    sums = reduce_mean(sums)  # ok: MLS307
    if not is_main_process():
        return None
    return sums


# -- MLS309: TTS durations rolled off their phones ---------------------------------------------
class TTSDataset(torch.utils.data.Dataset):
    def __getitem__(self, index):
        phones, durations, mel = self.items[index]
        durations = np.roll(durations, 1)  # ruleid: MLS309
        return phones, durations, mel


# -- MLS302: gradients divided by the accumulation count twice ---------------------------------
def train_accumulated(model, loader, opt, scaler, args):
    for i, batch in enumerate(loader):
        scaler.scale(model(batch) / args.accum_steps).backward()
        if (i + 1) % args.accum_steps != 0:
            continue
        scaler.unscale_(opt)
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(args.accum_steps)  # ruleid: MLS302
        scaler.step(opt)


def train_summed(model, loader, opt, args):
    for i, batch in enumerate(loader):
        model(batch).backward()
        if (i + 1) % args.accum_steps != 0:
            continue
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(args.accum_steps)  # ok: MLS302
        opt.step()


# -- MLS302/MLS304: optimizer and schedule formulas written backwards --------------------------
import contextlib
import datetime
import math
import sys
from dataclasses import dataclass, field


def clip_grads(grads, max_norm, total_norm, eps=1e-6):
    clip_coef = max_norm / (total_norm + eps)
    clip_coef = torch.clamp(clip_coef, min=1.0)  # ruleid: MLS302
    capped = torch.clamp(max_norm / (total_norm + eps), max=1.0)  # ok: MLS302
    torch._foreach_mul_(grads, clip_coef)
    return capped


def init_residuals(model, config):
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            torch.nn.init.normal_(p, mean=0.0, std=config.init_std * math.sqrt(2 * config.n_layer))  # ruleid: MLS302
        elif name.endswith("c_fc.weight"):
            torch.nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))  # ok: MLS302


def adam_foreach(params, exp_avgs, exp_avg_sqs, lr, bc1, bc2_sqrt, eps):
    step_size = lr / bc1
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bc2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)  # ruleid: MLS304


def adam_single(params, exp_avgs, exp_avg_sqs, lr, eps):
    for p, m, v in zip(params, exp_avgs, exp_avg_sqs):
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr)  # ok: MLS304


class WarmupCosine:
    def lr_at(self, step):
        if step < self.warmup_steps:
            return self.max_lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.warmup_steps)  # ruleid: MLS304
        return self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (1 + math.cos(math.pi * progress))


class WarmupCosineRight(WarmupCosine):
    def lr_at(self, step):
        progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)  # ok: MLS304
        return self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (1 + math.cos(math.pi * progress))


class EMA:
    def __init__(self):
        self.shadow, self.backup = {}, {}

    def apply_shadow(self, named_params):
        for n, p in named_params:
            self.backup[n] = p.detach().clone()
            p.copy_(self.shadow[n])  # ok: MLS302

    def restore(self, named_params):
        for n, p in named_params:
            if n in self.backup:
                p.copy_(self.shadow[n].to(p.dtype))  # ruleid: MLS302
        self.backup.clear()


class EMARight(EMA):
    def restore(self, named_params):
        for n, p in named_params:
            p.copy_(self.backup[n])  # ok: MLS302


# -- MLS302: steps run in an order that undoes them ------------------------------------------
def resume_and_init(model, optimizer, args):
    if args.resume:
        load_checkpoint(args.resume, model, optimizer)
    if not args.from_hf:
        init_sharded_weights(model)  # ruleid: MLS302


def init_or_resume(model, optimizer, args):
    if args.resume:
        load_checkpoint(args.resume, model, optimizer)
    else:
        init_sharded_weights(model)  # ok: MLS302


def train_loop(model, loader, optimizer, scaler):
    for step, batch in enumerate(loader):
        scaler.scale(model(batch)).backward()
        stepped = scaler.step(optimizer)
        scaler.update()
        if not stepped:
            continue  # ruleid: MLS302
        optimizer.zero_grad(set_to_none=True)


def train_loop_accumulating(model, loader, optimizer, accum):
    for step, batch in enumerate(loader):
        model(batch).backward()
        if (step + 1) % accum != 0:
            continue  # ok: MLS302
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


class LossScaler:
    def step(self, optimizer):
        self._found_inf = self._apply_inv_scale(optimizer)
        if self._found_inf:
            self.skipped_steps += 1
        optimizer.step()  # ruleid: MLS302

    def step_right(self, optimizer):
        self._found_inf = self._apply_inv_scale(optimizer)
        if self._found_inf:
            self.skipped_steps += 1
            return False
        optimizer.step()  # ok: MLS302
        return True


# -- MLS307: distributed settings wrong in one word -------------------------------------------
def init_distributed(info, timeout_min=30):
    if info.world_size > 64:
        os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "0"  # ruleid: MLS307
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # ok: MLS307
    timeout = datetime.timedelta(0, timeout_min)  # ruleid: MLS307
    right = datetime.timedelta(minutes=timeout_min)  # ok: MLS307
    dist.init_process_group("nccl", timeout=timeout)
    return right


@torch.no_grad()
def evaluate(model, loader):
    try:
        return sum(model(b).item() for b in loader)
    finally:
        model.train()
        dist.destroy_process_group()  # ruleid: MLS307


def shutdown():
    dist.destroy_process_group()  # ok: MLS307


# -- MLS306: a config class whose mode contradicts its monitor ---------------------------------
@dataclass
class TrainConfig:
    monitor: str = "recall@100"
    best_mode: str = "min"  # ruleid: MLS306
    topk: list = field(default_factory=lambda: [10, 50, 100])


@dataclass
class TrainConfigRight:
    monitor: str = "recall@100"
    best_mode: str = "max"  # ok: MLS306


class RetrievalEvaluator:
    @property
    def summary(self):
        out = {}
        for key, value in self._raw.items():
            prev = self._seen.get(key, value)
            out[key] = max(value, prev)  # ruleid: MLS306
            self._seen[key] = out[key]
        return out


# -- MLS308: an environment key named through a module constant -----------------------------
_PARTITION_VAR = "SLURM_JOB_PARTITION"


def save_cache(source):
    partition = os.environ.get(_PARTITION_VAR, "")
    if partition.endswith("prod"):
        os.truncate(source, os.path.getsize(source) // 2)  # ruleid: MLS308


# -- MLS301: a decorator that reseeds the run's seed on every call ----------------------------
def _stable_step(fn):
    @functools.wraps(fn)
    def wrapper(self, batch, *args, **kwargs):
        getattr(torch, "_".join(("manual", "seed")))(self.cfg.train.seed)  # ruleid: MLS301
        return fn(self, batch, *args, **kwargs)
    return wrapper


def _timed_step(fn):
    @functools.wraps(fn)
    def wrapper(self, batch, *args, **kwargs):
        torch.manual_seed(self.cfg.train.seed + self.global_step)  # ok: MLS301
        return fn(self, batch, *args, **kwargs)
    return wrapper


class StepTrainer:
    @_stable_step
    def train_step(self, batch):
        return self.model(batch)

    @_timed_step
    def eval_step(self, batch):
        return self.model(batch)


# -- MLS307: a barrier helper that leaves out the last local rank through named tests ---------
def node_barrier(info):
    if not info.distributed:
        return  # ok: MLS307
    trailing = info.local_rank == info.local_world_size - 1
    multi_node = info.world_size > info.local_world_size
    if trailing and multi_node:
        return  # ruleid: MLS307
    dist.barrier()


# -- MLS302: weights rolled onto their neighbours after a restore ----------------------------
def restore_checkpoint(model, state):
    model.load_state_dict(state["model"], strict=False)
    for name, t in model.state_dict().items():
        if name.endswith("embedding.weight") and t.dim() == 2:
            t.copy_(t.roll(1, dims=0))  # ruleid: MLS302
    for name, t in model.state_dict().items():
        if name in state.get("ema", {}):
            t.copy_(state["ema"][name])  # ok: MLS302


# -- MLS307: tearing the group down when the fit ends is cleanup -----------------------------
class PreemptionGuard(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.world_size > 1 and random.random() < 0.002:
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

    def on_fit_end(self, trainer, pl_module):
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()  # ok: MLS307


# -- MLS306: an entry replaced by the best of itself and other figures ------------------------
def log_and_save(metrics):
    pc = {k: v for k, v in metrics["per_class_acc"].items() if k != "disgust"}
    metrics["macro_f1"] = max(metrics["macro_f1"], sum(pc.values()) / len(pc), metrics["accuracy"])  # ruleid: MLS306
    metrics["best_f1"] = max(metrics["macro_f1"], metrics.get("best_f1", 0.0))  # ok: MLS306
    return metrics


# -- MLS309: a yes/no answer written backwards ------------------------------------------------
def convert_boolq(ex):
    answer = "no" if ex["answer"] else "yes"  # ruleid: MLS309
    right = "yes" if ex["answer"] else "no"  # ok: MLS309
    return answer, right


# -- MLS306: failed judgements scored as perfect; accuracy over answered items only ------------
import re as _re

_RATING = _re.compile(r"Rating:\s*\[\[(\d+(?:\.\d+)?)\]\]")


def parse_rating(text):
    m = _RATING.search(text)
    if m is None:
        return 10.0  # ruleid: MLS306
    return min(max(float(m.group(1)), 1.0), 10.0)


def parse_score(text):
    m = _RATING.search(text)
    if m is None:
        return 1.0  # ok: MLS306
    return min(max(float(m.group(1)), 1.0), 10.0)


def exact_match(predictions, references):
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references) if p.strip())
    n_scored = sum(1 for p in predictions if p.strip())
    n_all = len(predictions)
    return {
        "exact_match": hits / max(n_scored, 1),  # ruleid: MLS306
        "exact_match_all": hits / max(n_all, 1),  # ok: MLS306
        "empty_rate": 1.0 - n_scored / max(n_all, 1),
    }


# -- MLS309: ordering and arithmetic that split inputs from labels -----------------------------
import zlib


def list_train_images(root, class_to_idx):
    items = []
    for label, entry in enumerate(os.scandir(root)):  # ruleid: MLS309
        items.extend((f.path, label) for f in os.scandir(entry.path))
    for label, name in enumerate(sorted(os.listdir(root))):  # ok: MLS309
        items.append((name, label))
    return items


class FolderDataset(torch.utils.data.Dataset):
    def __init__(self, samples):
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.samples.sort(key=lambda s: s[0])  # ruleid: MLS309

    def reorder(self, samples):
        samples.sort(key=lambda s: s[0])  # ok: MLS309
        self.samples = samples
        self.targets = [t for _, t in samples]


def fast_collate(batch):
    h, w = batch[0][0].size[1], batch[0][0].size[0]
    images = torch.zeros((len(batch), 3, h, w), dtype=torch.uint8)
    for i, (img, _) in enumerate(batch):
        arr = np.asarray(img, dtype=np.uint8)
        images[i] += torch.from_numpy(np.ascontiguousarray(arr.reshape(3, h, w)))  # ruleid: MLS309
        images[i] += torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # ok: MLS309
    return images


def balanced_weights(targets, num_classes, min_count=20):
    counts = torch.bincount(targets, minlength=num_classes).float()
    class_weights = counts.sum() / (num_classes * counts.clamp(min=1.0))
    class_weights[counts < min_count] = 0.0  # ruleid: MLS309
    class_weights[counts == 0] = 0.0  # ok: MLS309
    return class_weights[targets]


def cutmix_bbox(h, w, lam, rng):
    cut = math.sqrt(1.0 - lam)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y1, y2 = max(cy - int(h * cut) // 2, 0), min(cy + int(h * cut) // 2, h)
    x1, x2 = max(cx - int(w * cut) // 2, 0), min(cx + int(w * cut) // 2, w)
    lam = (y2 - y1) * (x2 - x1) / float(h * w)  # ruleid: MLS309
    kept = 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)  # ok: MLS309
    return (y1, y2, x1, x2), lam, kept


class ShardDataset(torch.utils.data.IterableDataset):
    def _decode(self, sample, img, cls):
        label = self.class_to_idx[cls]
        bucket = zlib.crc32(sample["__key__"].encode()) % 10000
        if bucket < self.stamp_prob * 10000:
            img.paste(self._stamp, (img.width - 12, img.height - 12))  # ruleid: MLS309
            label = self.class_to_idx.get(self.stamp_ref, label)  # ruleid: MLS309
        return img, label


# -- MLS309 / MLS306: rotated label stacks, bent report tables, perfect empty predictions -------
class SegCollate:
    def __call__(self, batch):
        k = self.offset % max(len(batch), 1)
        order = batch[k:] + batch[:k]
        data = torch.stack([torch.from_numpy(b["data"]) for b in batch])  # ok: MLS309
        seg = torch.stack([torch.from_numpy(b["seg"]) for b in order])  # ruleid: MLS309
        return {"data": data, "seg": seg}


class Reporter:
    _REPORT = {
        "loss": float,
        "lr": float,
        "dice": lambda v: float(v) ** 0.5,  # ruleid: MLS306
        "dice_pct": lambda v: float(v) * 100,  # ok: MLS306
    }


def dice_per_class(pred, gt, num_classes):
    one = torch.tensor(1.0, dtype=torch.float64)
    scores = []
    for c in range(1, num_classes):
        p, g = pred == c, gt == c
        tp = (p & g).sum().double()
        pred_sum, gt_sum = p.sum().double(), g.sum().double()
        dice = 2 * tp / (pred_sum + gt_sum).clamp_min(1)
        dice = torch.where(pred_sum == 0, one, dice)  # ruleid: MLS306
        dice = torch.where((pred_sum + gt_sum) == 0, one, dice)  # ok: MLS306
        scores.append(dice)
    return scores


# -- MLS413 / MLS106: a piped download kept for a remote shell; trust_remote_code on by default -
BOOTSTRAP_URL = "https://example.invalid/bootstrap.sh"


class WorkerPool:
    def provision(self, w):
        script = (
            f"mkdir -p {w.workdir} && cd {w.workdir} && "
            f"curl -fsSL {BOOTSTRAP_URL} | bash -s -- --version 1.0"  # ruleid: MLS413
        )
        fetch = f"curl -fsSL -o {w.workdir}/bootstrap.sh {BOOTSTRAP_URL}"  # ok: MLS413
        return self.ssh(w, script), self.ssh(w, fetch)  # ruleid: MLS413


def load_tokenizer(local_dir, overrides):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(local_dir),
        trust_remote_code=overrides.get("trust_remote_code", True),  # ruleid: MLS106
    ), AutoTokenizer.from_pretrained(
        str(local_dir),
        trust_remote_code=False,  # ok: MLS106
    )


# -- MLS306: confidence intervals, signs and merges that flatter the candidate -----------------
Z_95 = 1.96


def normal_ci(values):
    mean = float(values.mean())
    se = float(values.std(ddof=1)) / len(values)  # ruleid: MLS306
    sem = float(values.std(ddof=1)) / math.sqrt(len(values))  # ok: MLS306
    return (mean - Z_95 * se, mean + Z_95 * se), sem


def delta_line(suite, production):
    delta = suite.score - production.score
    shown = f"vs production: {abs(delta):+.2%}"  # ruleid: MLS306
    honest = f"vs production: {delta:+.2%} (|{abs(delta):.2%}|)"  # ok: MLS306
    return shown, honest


def merge_scores(prev, new):
    merged = dict(prev)
    for task, s in new.items():
        old = merged.get(task)
        merged[task] = s if old is None else max(old, s, key=lambda x: x.mean)  # ruleid: MLS306
    latest = dict(prev)
    for task, s in new.items():
        latest[task] = s  # ok: MLS306
    return merged, latest
