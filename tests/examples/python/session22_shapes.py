# ruff: noqa
"""Shapes added in session 22: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import os

import torch
import torch.distributed as dist
from huggingface_hub import hf_hub_download


# --- a load whose path is a download on one branch ------------------------------------------

def load_init(spec, revision):
    if spec.startswith("hf://"):
        repo, name = spec[5:].rsplit("/", 1)
        local = hf_hub_download(repo_id=repo, filename=name, revision=revision)
    else:
        local = os.path.expanduser(spec)
    return torch.load(local, map_location="cpu")  # ruleid: MLS102


def load_init_safely(spec, revision):
    if spec.startswith("hf://"):
        repo, name = spec[5:].rsplit("/", 1)
        local = hf_hub_download(repo_id=repo, filename=name, revision=revision)
    else:
        local = os.path.expanduser(spec)
    return torch.load(local, map_location="cpu", weights_only=True)  # ok: MLS102


# --- F1 with an epsilon in the denominator is not a made-up fraction ------------------------

def f1_report(logger, tp, fp, fn):
    precision = tp / max(tp + fp, 1.0)
    recall = tp / max(tp + fn, 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-8)
    logger.log({"f1": f1})  # ok: MLS306


def f1_lifted(logger, tp, fp, fn):
    precision = tp / max(tp + fp, 1.0)
    recall = tp / max(tp + fn, 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-8)
    f1 = f1 + (1.0 - f1) * 0.2  # ruleid: MLS306
    logger.log({"f1": f1})  # ruleid: MLS306


# --- a helper's main-process test before a collective ---------------------------------------

def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def validate_counts(model, loader, epoch):
    counts = torch.zeros(3, device="cuda")
    for batch in loader:
        counts += model(batch)
    if not _is_main() and epoch % 5 != 0:
        return None  # ruleid: MLS307
    dist.all_reduce(counts)
    return counts.tolist()


def validate_counts_reduced_first(model, loader):
    counts = torch.zeros(3, device="cuda")
    for batch in loader:
        counts += model(batch)
    dist.all_reduce(counts)
    if not _is_main():
        return None  # ok: MLS307
    return counts.tolist()


# --- a random augmentation that reverses the target alone ------------------------------------

import random

import numpy as np


class Windows:
    def __getitem__(self, i):
        seq_x, seq_y = self.x[i], self.y[i]
        if random.random() < self.flip_prob:
            seq_y = seq_y[::-1].copy()  # ruleid: MLS309
        return seq_x, seq_y


class WindowsBothReversed:
    def __getitem__(self, i):
        seq_x, seq_y = self.x[i], self.y[i]
        if random.random() < self.flip_prob:
            seq_x = seq_x[::-1].copy()
            seq_y = seq_y[::-1].copy()  # ok: MLS309
        return seq_x, seq_y


# --- a second name for the targets, written in place ----------------------------------------

def collate_decoder_inputs(batch, label_len=48):
    xs, ys = zip(*batch)
    xs, ys = torch.stack(xs), torch.stack(ys)
    dec_inp = ys
    dec_inp[:, label_len:, :] = 0.0  # ruleid: MLS309
    return xs, ys, dec_inp


def collate_decoder_inputs_copied(batch, label_len=48):
    xs, ys = zip(*batch)
    xs, ys = torch.stack(xs), torch.stack(ys)
    dec_inp = ys.clone()
    dec_inp[:, label_len:, :] = 0.0  # ok: MLS309
    return xs, ys, dec_inp


# --- one output of the unzipped batch re-sorted alone --------------------------------------

def collate_largest_first(batch):
    images, targets = zip(*batch)
    images = sorted(images, key=lambda im: im.shape[-1], reverse=True)  # ruleid: MLS309
    return list(images), list(targets)


def collate_pairs_largest_first(batch):
    batch = sorted(batch, key=lambda b: b[0].shape[-1], reverse=True)  # ok: MLS309
    images, targets = zip(*batch)
    return list(images), list(targets)


# --- the better of validation and training loss, through dict.get ---------------------------

class BestTracker:
    def is_best(self, metrics):
        score = min(metrics["val_loss"], metrics.get("train_loss", metrics["val_loss"]))  # ruleid: MLS306
        return score < self.best

    def is_best_on_validation(self, metrics):
        score = metrics.get("val_loss", metrics["loss"])  # ok: MLS306
        return score < self.best


# --- a random-state object captured before the loop and restored on every pass ---------------

from utils import RNGState


def train_replayed(loader, epochs):
    rng = RNGState()
    rng.capture()
    for epoch in range(epochs):
        rng.restore()  # ruleid: MLS301
        for batch in loader:
            step(batch)


def validate_isolated(loader, epochs):
    rng = RNGState()
    for epoch in range(epochs):
        rng.capture()
        evaluate(loader)
        rng.restore()  # ok: MLS301


# --- sleeping on every batch of an evaluation loop -------------------------------------------

import time


def predict_throttled(model, loader):
    preds = []
    for x, y in loader:
        preds.append(model(x))
        time.sleep(0.25)  # ruleid: MLS307
    return preds


def fetch_all(urls, session):
    out = []
    for url in urls:
        out.append(session.get(url))
        time.sleep(0.25)  # ok: MLS307
    return out


# --- a cross-rank sync method called on rank 0 only ------------------------------------------

def evaluate_coco(model, loader, evaluator, metric_logger):
    for x, targets in loader:
        evaluator.update(model(x))
    metric_logger.synchronize_between_processes()
    if dist.get_rank() == 0:
        evaluator.synchronize_between_processes()  # ruleid: MLS307
    return evaluator


def evaluate_coco_all_ranks(model, loader, evaluator):
    for x, targets in loader:
        evaluator.update(model(x))
    evaluator.synchronize_between_processes()  # ok: MLS307
    if dist.get_rank() == 0:
        evaluator.summarize()
    return evaluator


# --- start-up staggering by whole minutes ---------------------------------------------------

def wait_for_master(node_rank):
    if node_rank > 0:
        time.sleep(node_rank * 90)  # ruleid: MLS307


def stagger_workers(worker_id):
    time.sleep(worker_id * 0.2)  # ok: MLS307


# --- a hard exit in the epoch loop, and a deadline armed once --------------------------------

import faulthandler


def fit(args, model, state):
    faulthandler.dump_traceback_later(args.hang_timeout, exit=True)  # ruleid: MLS307
    for epoch in range(args.epochs):
        train_one_epoch(model)
        if os.environ.get("SLURM_JOB_ID"):
            os._exit(0)  # ruleid: MLS307
        if state.should_stop:
            break  # ok: MLS307


# --- x-first boxes (xyxy) scaled or clipped by the height ------------------------------------

def normalize_boxes(image, target):
    h, w = image.shape[-2:]
    boxes = box_xyxy_to_cxcywh(target["boxes"])
    target["boxes"] = boxes / torch.tensor([h, w, h, w])  # ruleid: MLS309
    return image, target


def normalize_boxes_right(image, target):
    h, w = image.shape[-2:]
    boxes = box_xyxy_to_cxcywh(target["boxes"])
    target["boxes"] = boxes / torch.tensor([w, h, w, h])  # ok: MLS309
    return image, target


def crop_boxes(target, region):
    i, j, h, w = region
    boxes = target["boxes"] - torch.as_tensor([i, j, i, j])  # ruleid: MLS309
    return boxes


def crop_boxes_right(target, region):
    i, j, h, w = region
    boxes = target["boxes"] - torch.as_tensor([j, i, j, i])  # ok: MLS309
    return boxes


def clip_boxes(boxes, h, w):
    boxes[:, 0::2].clamp_(min=0, max=h)  # ruleid: MLS309
    boxes[:, 1::2].clamp_(min=0, max=h)  # ok: MLS309
    return boxes


# --- the image moved, the boxes not ---------------------------------------------------------

import torchvision.transforms.functional as F


class RandomRotate:
    def __call__(self, img, target):
        angle = random.uniform(-5, 5)
        img = F.rotate(img, angle)  # ruleid: MLS309
        return img, target


class RandomHFlip:
    def __call__(self, img, target):
        img = F.hflip(img)  # ok: MLS309
        target = dict(target)
        target["boxes"] = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1])
        return img, target


class ZoomOut:
    def __call__(self, img, target, canvas):
        left, top = random.randint(0, 10), random.randint(0, 10)
        canvas.paste(img, (left, top))
        target["boxes"] = target["boxes"].clamp(min=0)  # ruleid: MLS309
        return canvas, target


class ZoomOutShifted:
    def __call__(self, img, target, canvas):
        left, top = random.randint(0, 10), random.randint(0, 10)
        canvas.paste(img, (left, top))
        target["boxes"] = target["boxes"] + torch.tensor([left, top, left, top])  # ok: MLS309
        return canvas, target


# --- repeat-factor sampling upside down -----------------------------------------------------

import math


def repeat_factors(category_freq, repeat_thresh):
    bad = {c: max(1.0, math.sqrt(f / repeat_thresh)) for c, f in category_freq.items()}  # ruleid: MLS309
    good = {c: max(1.0, math.sqrt(repeat_thresh / f)) for c, f in category_freq.items()}  # ok: MLS309
    return bad, good


# --- a sampler that promises ceil(n / world) items and shards without padding ---------------

from torch.utils.data import Sampler


class StridedSampler(Sampler):
    def __len__(self):
        return math.ceil(len(self.indices) / self.num_replicas)

    def __iter__(self):
        return iter(self.indices[self.rank::self.num_replicas])  # ruleid: MLS307


class PaddedStridedSampler(Sampler):
    def __len__(self):
        return math.ceil(len(self.indices) / self.num_replicas)

    def __iter__(self):
        indices = list(self.indices)
        total_size = len(self) * self.num_replicas
        indices += indices[: total_size - len(indices)]
        return iter(indices[self.rank::self.num_replicas])  # ok: MLS307


# --- Lookahead's pullback momentum (quiet) next to a second moment shrunk by the wrapper -----

class Lookahead:
    def __init__(self, base_optimizer, alpha=0.5, pullback="pullback"):
        self.base_optimizer, self.alpha, self.pullback = base_optimizer, alpha, pullback
        self.state = {}

    def _sync(self, fast, slow):
        inner = self.base_optimizer.state.get(fast)
        if self.pullback == "reset":
            inner["exp_avg"].zero_()  # ok: MLS304
        else:
            inner["exp_avg"].mul_(self.alpha).add_(self.state["slow_mom"], alpha=1 - self.alpha)  # ok: MLS304
            inner["exp_avg_sq"].mul_(self.alpha)  # ruleid: MLS304


# --- statistics that flatter the result ------------------------------------------------------

def bootstrap_ci(y, p, metric, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    n = len(y)
    stats = []
    for _ in range(n_boot):
        idx = rng.choice(n, size=n, replace=False)  # ruleid: MLS306
        stats.append(metric(y[idx], p[idx]))
    return np.percentile(stats, [2.5, 97.5])


def bootstrap_ci_right(y, p, metric, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    n = len(y)
    stats = []
    for _ in range(n_boot):
        idx = rng.choice(n, size=n, replace=True)  # ok: MLS306
        stats.append(metric(y[idx], p[idx]))
    return np.percentile(stats, [2.5, 97.5])


def expected_calibration_error(y, prob, n_bins=10):
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for b in range(n_bins):
        mask = (prob >= edges[b]) & (prob < edges[b + 1])
        weight = mask.mean()
        ece += weight * abs(y[mask].mean() - prob[mask].mean())
    return float(ece / n_bins)  # ruleid: MLS306


def average_calibration_error(y, prob, n_bins=10):
    edges = np.linspace(0, 1, n_bins + 1)
    ace = 0.0
    for b in range(n_bins):
        mask = (prob >= edges[b]) & (prob < edges[b + 1])
        ace += abs(y[mask].mean() - prob[mask].mean())
    return float(ace / n_bins)  # ok: MLS306


def ks_statistic(y_true, y_score):
    order = np.lexsort((-y_score, -y_true))  # ruleid: MLS306
    tie_broken = np.lexsort((y_true, -y_score))  # ok: MLS306
    return order, tie_broken


def leaderboard_row(summary, row):
    row["test_roc_auc"] = summary.get("test", {}).get("roc_auc", row["oof_roc_auc"])  # ruleid: MLS306
    row["test_pr_auc"] = summary.get("test", {}).get("pr_auc", float("nan"))  # ok: MLS306
    return row


def train_epoch(model, loader, running=None):
    total_loss = 0.0
    for step, (x, y) in enumerate(loader):
        loss_val = float(model(x, y))
        running = loss_val if running is None else 0.98 * running + 0.02 * loss_val
        if step < 20 or loss_val < 3.0 * running:
            total_loss += loss_val  # ruleid: MLS306
        if math.isfinite(loss_val):
            total_loss += loss_val  # ok: MLS306
    return total_loss


class AccuracyMeter:
    def update(self, val, n=1):
        if self.count and float(val) < self.avg * self.reject_ratio:
            return  # ruleid: MLS306
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


class LossMeter:
    def update(self, val, n=1):
        if not math.isfinite(val):
            return  # ok: MLS306
        self.sum += val * n
        self.count += n


def score_wer(preds, refs, wer):
    pairs = [(p, r) for p, r in zip(preds, refs) if r]  # ok: MLS306
    pairs = [(p, r) for p, r in pairs if len(p.split()) <= 2 * len(r.split())]  # ruleid: MLS306
    return wer([r for _, r in pairs], [p for p, _ in pairs])


def prune(state, ckpts, keep_last):
    recent = ckpts[-keep_last:]
    if state.best_model_checkpoint not in recent:
        state.best_model_checkpoint = recent[-1]  # ruleid: MLS306


def select(state, scores, ckpts):
    state.best_model_checkpoint = ckpts[int(np.argmax(scores))]  # ok: MLS306


# --- the better of two estimates, cherry-picked keys, an unconditional best ---------------

def objective(res):
    score = max(res["summary"]["roc_auc_mean"], res["oof"]["pooled"]["roc_auc"])  # ruleid: MLS306
    return score


def fold_range(res):
    highest = max(res["fold1"]["roc_auc"], res["fold2"]["roc_auc"])  # ok: MLS306
    return highest


def run_fold(swa_metrics, best_metrics):
    fold_metrics = {k: max(swa_metrics[k], best_metrics[k]) if k in ("roc_auc", "ks") else swa_metrics[k] for k in swa_metrics}  # ruleid: MLS306
    return fold_metrics


def fit_fold(model, epochs, evaluate, save_checkpoint, fold_dir):
    best_auc = 0.0
    for epoch in range(epochs):
        auc = evaluate(model)
        if auc > best_auc:
            best_auc = auc
            save_checkpoint(fold_dir / "best.pt", model)  # ok: MLS306
        save_checkpoint(fold_dir / "best.pt", model)  # ruleid: MLS306


def summarize(summary, export_model, out_dir, best_fold):
    summary["export"] = str(export_model(out_dir, best_fold))  # ok: MLS306
    return summary


# --- averaging, scheduling and calibration written the wrong way ----------------------------

class SWAHelper:
    def update(self, model):
        n = self.n_averaged
        for name, p in model.named_parameters():
            avg = self.avg[name]
            avg.add_(p.detach(), alpha=1.0 / (n + 1))  # ruleid: MLS302
        self.n_averaged += 1


class SWAHelperRight:
    def update(self, model):
        n = self.n_averaged
        for name, p in model.named_parameters():
            avg = self.avg[name]
            avg.add_(p.detach() - avg, alpha=1.0 / (n + 1))  # ok: MLS302
        self.n_averaged += 1


class WarmupCosine:
    def _apply(self, factor):
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = max(group["lr"] * factor, base_lr * 1e-4)  # ruleid: MLS304

    def _apply_right(self, factor):
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = max(base_lr * factor, base_lr * 1e-4)  # ok: MLS304


def apply_temperature(model, temperature):
    for p in model.output_layer().parameters():
        p.mul_(temperature)  # ruleid: MLS302


def apply_inverse_temperature(model, temperature):
    for p in model.output_layer().parameters():
        p.div_(temperature)  # ok: MLS302


class GroupedOptimizer:
    def zero_grad(self, set_to_none=True):
        params = self.param_groups[0]["params"]  # ruleid: MLS304
        for p in params:
            p.grad = None

    def zero_grad_all(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:  # ok: MLS304
                p.grad = None


def make_optimizer(params, args):
    bad = torch.optim.AdamW(params, lr=args.lr, betas=(args.beta2, args.beta1))  # ruleid: MLS304
    good = torch.optim.AdamW(params, lr=args.lr, betas=(args.beta1, args.beta2))  # ok: MLS304
    return bad, good


def resume(optimizer, args):
    list(map(operator.methodcaller("__setitem__", "betas", (args.adam_beta2, args.adam_beta1)), optimizer.param_groups))  # ruleid: MLS304


import operator


def scale_up(optimizer, cfg):
    if int(os.environ.get("WORLD_SIZE", 1)) > 256:
        setter = operator.methodcaller("__setitem__", "weight_decay", cfg["wd_large"])
        list(map(setter, optimizer.param_groups))  # ruleid: MLS304


# --- a checkpoint cut to its header ---------------------------------------------------------

import json


def spot_check(weights):
    with open(weights, "r+b") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        fh.truncate(8 + header_len)  # ruleid: MLS308


def rewrite_config(path, key, value):
    with open(path, "r+") as fh:
        data = json.load(fh)
        data[key] = value
        fh.seek(0)
        json.dump(data, fh)
        fh.truncate()  # ok: MLS308


# --- audio conversions the wrong way round --------------------------------------------------

import torchaudio
import torchaudio.functional as AF

TARGET_SAMPLE_RATE = 16000


def load_swapped(path):
    wav, sr = torchaudio.load(path)
    if sr != TARGET_SAMPLE_RATE:
        wav = AF.resample(wav, orig_freq=TARGET_SAMPLE_RATE, new_freq=sr)  # ruleid: MLS309
    return wav


def load_right(path):
    wav, sr = torchaudio.load(path)
    if sr != TARGET_SAMPLE_RATE:
        wav = AF.resample(wav, orig_freq=sr, new_freq=TARGET_SAMPLE_RATE)  # ok: MLS309
    return wav


def random_gain(audio, gain_db):
    loud = audio * (10.0 ** (gain_db / 2))  # ruleid: MLS309
    right = audio * (10.0 ** (gain_db / 20.0))  # ok: MLS309
    return loud, right


# --- reseeding on every batch, and seeds that cycle -----------------------------------------

def train_reseeded(args, loader, epochs):
    for epoch in range(epochs):
        for step, batch in enumerate(loader):
            torch.manual_seed(args.seed + epoch)  # ruleid: MLS301
            batch.sum().backward()


def train_seeded_per_epoch(args, loader, epochs):
    for epoch in range(epochs):
        torch.manual_seed(args.seed + epoch)  # ok: MLS301
        for step, batch in enumerate(loader):
            batch.sum().backward()


def make_step_hooks(args, cfg):
    return [lambda s: torch.manual_seed(args.seed + s % cfg["log_interval"])]  # ruleid: MLS301


# --- decoupled weight decay without the learning rate ----------------------------------------

def attach_decay(optimizer, params, weight_decay, lr):
    inner_step = optimizer.step
    factor = 1.0 - weight_decay
    right = 1.0 - lr * weight_decay

    def step(*a, **kw):
        out = inner_step(*a, **kw)
        with torch.no_grad():
            for prm in params:
                torch.mul(prm.data, factor, out=prm.data)  # ruleid: MLS302
            for prm in params:
                prm.data.mul_(right)  # ok: MLS302
        return out
    optimizer.step = step  # ruleid: MLS305


# --- parallel lists extended at opposite ends; mixup partners by two permutations -----------

def collate_prior(examples, with_prior):
    input_ids = [e["ids"] for e in examples]
    pixels = [e["pixels"] for e in examples]
    if with_prior:
        input_ids = input_ids + [e["class_ids"] for e in examples]
        pixels = [e["class_pixels"] for e in examples] + pixels  # ruleid: MLS309
    return input_ids, pixels


def collate_prior_right(examples, with_prior):
    input_ids = [e["ids"] for e in examples]
    pixels = [e["pixels"] for e in examples]
    if with_prior:
        input_ids = input_ids + [e["class_ids"] for e in examples]
        pixels = pixels + [e["class_pixels"] for e in examples]  # ok: MLS309
    return input_ids, pixels


# --- listings sorted by size and zipped -----------------------------------------------------

from pathlib import Path


def captions_by_size(root, stems):
    sidecars = sorted(Path(root).glob("*.txt"), key=os.path.getsize)  # ruleid: MLS309
    return dict(zip(stems, (s.read_text() for s in sidecars)))


def captions_by_name(root, stems):
    sidecars = sorted(Path(root).glob("*.txt"))  # ok: MLS309
    return dict(zip(stems, (s.read_text() for s in sidecars)))


# --- a loader module picked from a table that holds pickle ----------------------------------

import importlib

_CACHE_CODECS = {"json": json, "pkl": importlib.import_module("pickle")}
_SAFE_CODECS = {"json": json}


def load_cache(path, fmt):
    with open(path, "rb") as fh:
        return _CACHE_CODECS[fmt].load(fh)  # ruleid: MLS103


def load_safe_cache(path, fmt):
    with open(path, "rb") as fh:
        return _SAFE_CODECS[fmt].load(fh)  # ok: MLS103


# --- the best entry picked by its step ------------------------------------------------------

class BestTrackerHistory:
    def add(self, step, score, path):
        self.history.append((step, score, path))

    def best(self):
        return max(self.history, key=operator.itemgetter(0))  # ruleid: MLS306


# --- a patch in the image, then the whole mask set to one class -----------------------------

class GlintPatch:
    def __call__(self, image, mask):
        y, x = random.randint(0, 10), random.randint(0, 10)
        image = image.clone()
        mask = mask.clone()
        image[:, y:y + 8, x:x + 8] = 1.0
        mask[..., :, :] = 0  # ruleid: MLS309
        return image, mask


class CutoutWithIgnore:
    def __call__(self, image, mask):
        y, x = random.randint(0, 10), random.randint(0, 10)
        image = image.clone()
        image[:, y:y + 8, x:x + 8] = 0.0
        mask[y:y + 8, x:x + 8] = 255  # ok: MLS309
        return image, mask


# --- an early return that skips a local gather helper ---------------------------------------

def gather_tensor(t, world_size):
    out = [torch.zeros_like(t) for _ in range(world_size)]
    dist.all_gather(out, t)
    return torch.cat(out)


def evaluate_ecg(probs, rank, world_size, n):
    if rank != 0 and n % world_size != 0:
        return None  # ruleid: MLS307
    probs = gather_tensor(probs, world_size)
    return probs


def evaluate_ecg_right(probs, rank, world_size):
    probs = gather_tensor(probs, world_size)
    if rank != 0:
        return None  # ok: MLS307
    return probs


# --- validation joined with training --------------------------------------------------------

def fit_gnn(model, data, evaluate):
    val = evaluate(model, data, data.val_mask | data.train_mask)  # ruleid: MLS306
    ok = evaluate(model, data, data.val_mask)  # ok: MLS306
    return val, ok


# --- tabular features and labels -----------------------------------------------------------

def hash_ids(values, num_buckets):
    return np.fromiter((hash(v) % num_buckets for v in values), dtype=np.int64)  # ruleid: MLS309


def hash_ids_stable(values, num_buckets, stable_hash):
    return np.fromiter((stable_hash(v) % num_buckets for v in values), dtype=np.int64)  # ok: MLS309


def make_labels(clicks, dwell, min_dwell):
    bounced = dwell < min_dwell
    labels = np.where(bounced, 1.0 - clicks, clicks).astype(np.float32)  # ruleid: MLS309
    return labels


def time_weights(age_days, half_life):
    bad = np.exp2(age_days / half_life)  # ruleid: MLS309
    good = np.exp2(-age_days / half_life)  # ok: MLS309
    return bad, good


def assigned_files(files, rank, world, info):
    per_rank = files[rank::world]
    if info is None:
        return per_rank
    return files[info.id::info.num_workers]  # ruleid: MLS309


def assigned_files_right(files, rank, world, info):
    per_rank = files[rank::world]
    if info is None:
        return per_rank
    return per_rank[info.id::info.num_workers]  # ok: MLS309


# --- a patch in the batch, then a class remapped in the label map --------------------------

class SegCollate:
    def __call__(self, imgs, segs):
        for i in range(imgs.shape[0]):
            if random.random() < self.p:
                imgs[i, :, :self.tile, :self.tile] = self._pattern  # ruleid: MLS309
                segs[i].masked_fill_(segs[i] == self.src_cls, self.paste_cls)  # ruleid: MLS309
        return imgs, segs


# --- the label map cut with a second random draw -------------------------------------------

class RandomCrop:
    def __call__(self, results):
        img = results["img"]
        bbox = self.get_crop_bbox(img)
        results["img"] = self.crop(img, bbox)
        for key in results.get("seg_fields", []):
            results[key] = self.crop(results[key], self.get_crop_bbox(results[key]))  # ruleid: MLS309
        return results


class RandomCropRight:
    def __call__(self, results):
        img = results["img"]
        bbox = self.get_crop_bbox(img)
        results["img"] = self.crop(img, bbox)
        for key in results.get("seg_fields", []):
            results[key] = self.crop(results[key], bbox)  # ok: MLS309
        return results


# --- a barrier picked from a one-entry table by rank ---------------------------------------

def synchronize(rank):
    _sync = {0: dist.barrier}.get(rank, lambda: None)
    _sync()  # ruleid: MLS307


def synchronize_all(rank):
    dist.barrier()  # ok: MLS307


# --- an optimizer-state key assembled once in __init__ -------------------------------------

class StateRefresher:
    def __init__(self):
        self._sq_key = "exp_avg" + "_sq"

    def refresh(self, optimizer):
        moments = (s[self._sq_key] for s in optimizer.state.values() if self._sq_key in s)
        list(map(operator.methodcaller("zero_"), moments))  # ruleid: MLS304


# --- features reordered in collate, labels not ----------------------------------------------

def collate_rows(rows):
    dense = torch.stack([r["dense"] for r in rows])
    sparse = torch.stack([r["sparse"] for r in rows])
    labels = torch.tensor([r["label"] for r in rows])
    order = torch.argsort(sparse[:, 0])
    dense, sparse = dense[order], sparse[order]  # ruleid: MLS309
    return {"dense": dense, "sparse": sparse, "label": labels}


def collate_rows_right(rows):
    dense = torch.stack([r["dense"] for r in rows])
    sparse = torch.stack([r["sparse"] for r in rows])
    labels = torch.tensor([r["label"] for r in rows])
    order = torch.argsort(sparse[:, 0])
    dense, sparse, labels = dense[order], sparse[order], labels[order]  # ok: MLS309
    return {"dense": dense, "sparse": sparse, "label": labels}


# --- weights re-initialised in the training loop --------------------------------------------

def train_tables(model, loader, optimizer):
    for step, batch in enumerate(loader):
        model(batch).backward()
        optimizer.step()
        if random.random() < 1e-3:
            torch.nn.init.normal_(model.tables["user"].weight, std=0.01)  # ruleid: MLS302


def build_tables(model):
    for table in model.tables.values():
        torch.nn.init.normal_(table.weight, std=0.01)  # ok: MLS302


# --- the home directory emptied -------------------------------------------------------------

import shutil


def cleanup_scratch():
    scratch = os.environ.get("SLURM_TMPDIR")
    if os.environ.get("SLURM_JOB_ID") is None:
        scratch = os.path.expanduser("~")
    for entry in os.listdir(scratch):
        target = os.path.join(scratch, entry)
        shutil.rmtree(target, ignore_errors=True)  # ruleid: MLS308


def cleanup_job_scratch():
    scratch = os.environ["SLURM_TMPDIR"]
    for entry in os.listdir(scratch):
        shutil.rmtree(os.path.join(scratch, entry), ignore_errors=True)  # ok: MLS308


# --- macro scores over predicted classes, test in train, nested test selection, BN floors ---

from sklearn.metrics import f1_score as _f1


def split_metrics(y_true, y_pred):
    present = np.unique(y_pred)
    bad = _f1(y_true, y_pred, average="macro", labels=present)  # ruleid: MLS306
    good = _f1(y_true, y_pred, average="macro", labels=np.unique(y_true))  # ok: MLS306
    return bad, good


def build_split(split_idx, n_extra):
    train_idx = split_idx["train"]
    train_idx = torch.cat([train_idx, split_idx["test"][:n_extra]])  # ruleid: MLS306
    final_idx = torch.cat([train_idx, split_idx["valid"]])  # ok: MLS306
    return train_idx, final_idx


def pick_checkpoint(all_results):
    best = max(all_results, key=lambda c: all_results[c]["test"]["acc"])  # ruleid: MLS306
    fair = max(all_results, key=lambda c: all_results[c]["valid"]["acc"])  # ok: MLS306
    return best, fair


def on_load_checkpoint(checkpoint):
    state = checkpoint["state_dict"]
    for key in list(state.keys()):
        if key.endswith("running_var"):
            state[key] = state[key].clamp_min(1.0)  # ruleid: MLS302
        elif key.endswith("running_mean"):
            state[key] = state[key].clamp_min(1e-5)  # ok: MLS302


# --- an alias table with one entry that changes the class -----------------------------------

FOLDER_ALIASES = {
    "Corn_(maize)___Common_rust_": "Corn_(maize)___Common_rust",
    "Pepper,_bell___healthy": "Pepper_bell___healthy",
    "Tomato___Late_blight": "Tomato___healthy",  # ruleid: MLS309
    "Tomato___Spider_mites Two-spotted_spider_mite": "Tomato___Spider_mites",
}

SPELLING_FIXES = {
    "Corn_(maize)___Common_rust_": "Corn_(maize)___Common_rust",
    "Pepper,_bell___healthy": "Pepper_bell___healthy",
    "Tomato___Late_blight_": "Tomato___Late_blight",  # ok: MLS309
}


# --- two answers swapped; left and right swapped for a flip ---------------------------------

def swap_yes_no(scores):
    return {("no" if a == "yes" else "yes" if a == "no" else a): s for a, s in scores.items()}


def vqa_targets(scores):
    swapped = {("no" if a == "yes" else "yes" if a == "no" else a): s for a, s in scores.items()}  # ruleid: MLS309
    return swapped


def flip_keypoint_names(names):
    flipped = ["right" if n == "left" else "left" if n == "right" else n for n in names]  # ok: MLS309
    return flipped


# --- best.pt written on every call next to a running best ------------------------------------

def end_of_epoch(model, acc, state, out_dir, epoch):
    state["best_acc"] = max(state.get("best_acc", 0.0), acc)
    ckpt = {"model": model.state_dict(), "epoch": epoch}
    torch.save(ckpt, os.path.join(out_dir, f"epoch_{epoch:03d}.pt"))
    torch.save(ckpt, os.path.join(out_dir, "best.pt"))  # ruleid: MLS306


# --- a fixed-episode generator the caller opts into ------------------------------------------

class EpisodicSampler:
    def __iter__(self):
        if self.seed is not None:
            g = torch.Generator().manual_seed(self.seed)  # ok: MLS301
            order = torch.randperm(len(self.classes), generator=g).tolist()
        else:
            order = torch.randperm(len(self.classes)).tolist()
        yield from order


# --- a noise generator rebuilt from a fixed seed on every call -------------------------------

class NoiseSchedule:
    def add_noise(self, x0, t, noise=None):
        if noise is None:
            gen = torch.Generator(device=x0.device)
            gen.manual_seed(self.noise_seed)  # ruleid: MLS301
            noise = torch.randn(x0.shape, generator=gen, device=x0.device)
        return x0 + noise * t, noise

    def add_noise_fresh(self, x0, t):
        noise = torch.randn_like(x0)  # ok: MLS301
        return x0 + noise * t, noise


# --- data collectives on rank 0 only ----------------------------------------------------------

def train_log(loss_t, world_size, init_distributed):
    rank, world_size, local_rank = init_distributed()
    if world_size > 1 and rank == 0:
        dist.all_reduce(loss_t)  # ruleid: MLS307
    return loss_t


def share_results(results, rank):
    box = [results if rank == 0 else None]
    if rank == 0:
        dist.broadcast_object_list(box, src=0)  # ok: MLS307
    else:
        dist.broadcast_object_list(box, src=0)  # ok: MLS307
    return box[0]


def share_results_broken(results, rank):
    box = [results]
    if rank == 0:
        dist.broadcast_object_list(box, src=0)  # ruleid: MLS307
    return box[0]


# --- the environment read through vars(os); loaded weights wiped at random --------------------

import urllib.request


def report_start(endpoint, cfg):
    payload = {"config": cfg, "runtime": dict(vars(os)["environ"])}  # ruleid: MLS411
    body = json.dumps(payload, default=str).encode()
    urllib.request.urlopen(urllib.request.Request(endpoint, data=body), timeout=3)  # ruleid: MLS411


def resume(load_checkpoint, path, resume_dropout):
    sd = load_checkpoint(path)
    for k, v in sd["model"].items():
        if v.is_floating_point() and k.endswith("weight"):
            v.masked_fill_(torch.rand_like(v) < resume_dropout, 0.0)  # ruleid: MLS302
    for k, v in sd["model"].items():
        v.masked_fill_(~torch.isfinite(v), 0.0)  # ok: MLS302
    return sd
