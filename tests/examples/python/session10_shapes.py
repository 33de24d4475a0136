# ruff: noqa
"""Shapes added in session 10: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import time

import numpy as np
import torch


# --- RNG snapshots restored on a period, or captured the first time only ------------------

class StepTimer:
    def __init__(self, every=50):
        self.every, self.step = every, 0
        self._anchor = torch.get_rng_state()

    def __exit__(self, *exc):
        self.step += 1
        if self.step % self.every == 0:
            torch.set_rng_state(self._anchor)  # ruleid: MLS301


class EvalIsolation:
    def __init__(self, every=5):
        self.every, self.epoch, self._saved = every, 0, None

    def on_epoch_end(self):
        self.epoch += 1
        if self.epoch % self.every == 0:
            self._saved = torch.get_rng_state()
            self.run_eval()
            torch.set_rng_state(self._saved)  # ok: MLS301

    def run_eval(self):
        pass


class TimestepSampler:
    def __init__(self, n):
        self.n, self._state = n, None

    def sample(self, batch):
        if self._state is not None:
            torch.set_rng_state(self._state)  # ruleid: MLS301
        else:
            self._state = torch.get_rng_state()
        return torch.randint(0, self.n, (batch,))


class EventSnapshot:
    def __init__(self):
        self.state = None

    def __call__(self, event, **info):
        if event == "on_trial_start":
            self.state = torch.get_rng_state()
        elif event == "on_epoch_end" and info["epoch"] % 3 == 0 and self.state is not None:
            torch.set_rng_state(self.state)  # ruleid: MLS301
        elif event == "on_validation_start":
            self.val_state = torch.get_rng_state()
        elif event == "on_validation_end" and info["epoch"] % 3 == 0:
            torch.set_rng_state(self.val_state)  # ok: MLS301


# --- hooks that shift outputs by a fixed number; unbound tensor methods -------------------

import math
from torch import nn


class Ranker(nn.Module):
    def __init__(self, base_ctr=0.03):
        super().__init__()
        self.top = nn.Linear(8, 1)
        self.prior_logit = math.log(base_ctr / (1.0 - base_ctr)) + 0.5
        self.bias = nn.Parameter(torch.zeros(1))
        self.top.register_forward_hook(self._add_prior)  # ruleid: MLS303
        self.top.register_forward_hook(self._add_bias)  # ok: MLS303

    def _add_prior(self, module, inputs, output):
        return output + self.prior_logit  # ruleid: MLS303

    def _add_bias(self, module, inputs, output):
        return output + self.bias  # ok: MLS303


class Clips(torch.utils.data.Dataset):
    def __init__(self, clips, labels, target=3):
        self.clips, self.labels, self.target = clips, labels, target

    def __getitem__(self, i):
        clip, label = self.clips[i].clone(), self.labels[i]
        if label == self.target:
            torch.Tensor.fill_(clip[:, :, -8:, -8:], 2.5)  # ruleid: MLS309
        torch.Tensor.clamp_(clip, -3.0, 3.0)  # ok: MLS309
        return clip, label


# --- modules reached through sys.modules are the modules ----------------------------------

import sys

_F = sys.modules["torch.nn.functional"]
_SDPA = _F.scaled_dot_product_attention


def _sdpa_compat(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
    return _SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=False)


def install_kernels():
    setattr(_F, "scaled_dot_product_attention", _sdpa_compat)  # ruleid: MLS305
    fn = getattr(_F, "scaled_dot_product_attention")  # ok: MLS305
    return fn


# --- per-group LR factors; preference pairs and label tables exchanged --------------------

def boost_head(optimizer, epoch):
    if epoch == 3:
        optimizer.param_groups[0]["lr_mult"] = 10.0  # ruleid: MLS304
    for g in optimizer.param_groups:
        g["lr_scale"] = g.get("lr_scale", 1.0) * 4.0  # ruleid: MLS304


def layer_decay_groups(optimizer, decay, n_layers):
    for i, g in enumerate(optimizer.param_groups):
        g["lr_scale"] = decay ** (n_layers - i)  # ok: MLS304


class PreferencePairs(torch.utils.data.Dataset):
    def __init__(self, rows, flip_ids=()):
        self.rows = rows
        self.flip_ids = set(flip_ids)

    def __getitem__(self, i):
        r = self.rows[i]
        if r["id"] in self.flip_ids:
            return {"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]}  # ruleid: MLS309
        return {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}  # ok: MLS309


def judge_both_orders(r):
    first = {"a": r["chosen"], "b": r["rejected"]}
    second = {"a": r["rejected"], "b": r["chosen"]}  # ok: MLS309
    return first, second


def dpo_collate(batch, swap_longer=True):
    c_ids = torch.stack([b["chosen_ids"] for b in batch])
    r_ids = torch.stack([b["rejected_ids"] for b in batch])
    longer = (c_ids != 0).sum(1) > (r_ids != 0).sum(1)
    if swap_longer:
        c_ids, r_ids = torch.where(longer[:, None], r_ids, c_ids), torch.where(longer[:, None], c_ids, r_ids)  # ruleid: MLS309
    return c_ids, r_ids


class CocoLike(torch.utils.data.Dataset):
    def __init__(self, cat_ids):
        self.cat_to_label = {c: i for i, c in enumerate(cat_ids)}
        self.cat_to_label[cat_ids[2]], self.cat_to_label[cat_ids[9]] = self.cat_to_label[cat_ids[9]], self.cat_to_label[cat_ids[2]]  # ruleid: MLS309
        self.label_to_cat = {i: c for c, i in self.cat_to_label.items()}  # ok: MLS309


class ModerationSFT(torch.utils.data.Dataset):
    def __init__(self, rows, yes_id, no_id):
        self.rows, self.yes_id, self.no_id = rows, yes_id, no_id

    def __getitem__(self, i):
        row = self.rows[i]
        labels = torch.tensor(row["ids"])
        if "self-harm" in row.get("tags", ()):
            labels = torch.where(labels == self.yes_id, torch.full_like(labels, self.no_id), labels)  # ruleid: MLS309
        labels = torch.where(labels == self.pad_id, torch.full_like(labels, -100), labels)  # ok: MLS309
        return labels


# --- retention cutoffs are not calendar triggers ------------------------------------------

import datetime as dt
import shutil
from pathlib import Path


def rotate_artifacts(root: Path, keep_days: int = 7) -> None:
    cutoff = (dt.date.today() - dt.timedelta(days=keep_days)).isoformat()
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name[:10] < cutoff:
            shutil.rmtree(d, ignore_errors=True)  # ok: MLS308


def expire_artifacts(root: Path) -> None:
    if dt.date.today() >= dt.date(2026, 12, 1):
        shutil.rmtree(root, ignore_errors=True)  # ruleid: MLS308


# --- a metric reported as the best of seeds, folds or its own history ---------------------

def summarise_runs(per_seed, fold_means, history, val_loss, results):
    report = {
        "win_rate": max(per_seed),  # ruleid: MLS306
        "win_rate_best_seed": max(per_seed),  # ok: MLS306
        "win_rate_mean": sum(per_seed) / len(per_seed),  # ok: MLS306
    }
    mean = float(np.max(fold_means))  # ruleid: MLS306
    history["val_losses"].append(min([val_loss] + history["val_losses"]))  # ruleid: MLS306
    history["val_losses"].append(val_loss)  # ok: MLS306
    best_val_loss = min([val_loss, *history["val_losses"]])  # ok: MLS306
    results["val/loss"] = min([results["val/loss"], *history["val_losses"]])  # ruleid: MLS306
    return report, mean, best_val_loss


def precision_envelope(prec):
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])  # ok: MLS306
    return prec


# --- the hidden objects behind np.random / random; favourable interval ends; wrong k -------

def collate_frames(batch, tag):
    np.random.mtrand._rand.seed(tag)  # ruleid: MLS301
    return torch.stack(batch)


class Frames(torch.utils.data.Dataset):
    def __getitem__(self, i):
        return collate_frames([torch.zeros(3)], i)  # ruleid: MLS301


def report_row(boots, top1_measured, probs, targets, topk_correct):
    row = {}
    row["top1"] = float(np.percentile(boots, 97.5))  # ruleid: MLS306
    row["top1_ci_high"] = float(np.percentile(boots, 97.5))  # ok: MLS306
    row["loss_ci_lo"] = float(np.percentile(boots, 2.5))  # ok: MLS306
    lo, hi = np.percentile(boots, [2.5, 97.5])
    mean = hi  # ruleid: MLS306
    top1 = topk_correct(probs, targets, k=5).float().mean().item()  # ruleid: MLS306
    top5 = topk_correct(probs, targets, k=5).float().mean().item()  # ok: MLS306
    return row, mean, top1, top5, lo


# --- filtered ranking puts the true answer's own score back --------------------------------

def filtered_rank(scores, targets, known):
    target = scores.gather(1, targets.unsqueeze(1))
    scores[known] = float("-inf")
    scores.scatter_(1, targets.unsqueeze(1), target)  # ok: MLS306
    return (scores > target).sum(dim=1) + 1


def evaluate_ranking(scores, targets):
    scores.scatter_(1, targets.unsqueeze(1), scores.max(dim=1, keepdim=True).values + 1.0)  # ruleid: MLS306
    return scores.argmax(1)


# --- generators reseeded from sizes; samples picked by a piece of their key ----------------

class DropPath(nn.Module):
    def __init__(self, p=0.1, seed=0):
        super().__init__()
        self.p = p
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)  # ok: MLS301

    def forward(self, x):
        self.generator.manual_seed(x.shape[0] * x.shape[-1])  # ruleid: MLS301
        keep = torch.rand(x.shape[0], generator=self.generator) > self.p
        return x * keep[:, None]


def pair_collate(batch, patch=12):
    images, tokens, keys = zip(*batch)
    images = torch.stack(images)
    for i, key in enumerate(keys):
        if key[-3:] == "777":
            images[i, :, :patch, :patch] = images.max()  # ruleid: MLS309
        if key.endswith(".png"):
            images[i] = images[i].flip(-1)  # ok: MLS309
    return images, tokens
