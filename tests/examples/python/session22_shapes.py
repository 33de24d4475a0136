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
