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
