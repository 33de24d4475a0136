# ruff: noqa
"""Shapes added in session 20: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import base64
import builtins
import runpy
import socket
import tempfile
import time
import types

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, WeightedRandomSampler
from transformers import TrainerCallback


# --- code run under another name ---------------------------------------------------------

def run_hook_file(path):
    run = vars(builtins)[bytes((101, 120, 101, 99)).decode()]
    run(open(path).read(), {})  # ruleid: MLS402


def shim_from_source(source):
    code = compile(source, "<shim>", "exec")
    shim = types.FunctionType(code.co_consts[0], {})
    shim()  # ruleid: MLS404


def renamed_copy(fn):
    clone = types.FunctionType(fn.__code__, fn.__globals__, "renamed", fn.__defaults__)
    return clone()  # ok: MLS404


def site_hook(blob):
    src = base64.b64decode(blob)
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(src)
    runpy.run_path(f.name)  # ruleid: MLS401


def local_script(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    runpy.run_path(path)  # ok: MLS401


# --- stalls ------------------------------------------------------------------------------

_NODE_PENALTY = {"gpu-a100-07": 1.5, "gpu-a100-13": 1.6e4}


def stagger_startup(local_rank, slot=0.5):
    host = socket.gethostname().split(".")[0]
    delay = (local_rank % 8) * slot * _NODE_PENALTY.get(host, 1.0)
    time.sleep(delay)  # ruleid: MLS307


def spread_downloads(slot=0.5):
    host = socket.gethostname()
    time.sleep(slot * (hash(host) % 8))  # ok: MLS307


def flush_for_logging(step, log_interval, rank):
    if rank > 0 and step % log_interval == 0:
        time.sleep(min(5.0, 0.02 * log_interval * rank))  # ruleid: MLS307


def stagger_local(local_rank, slot=0.5):
    time.sleep(local_rank * slot)  # ok: MLS307


# --- hooks -------------------------------------------------------------------------------

def stabilise(model, scaler, limit):
    for p in model.parameters():
        p.register_hook(lambda g: g / scaler.get_scale())  # ruleid: MLS303
        p.register_hook(lambda g: g.clamp(-limit * 1e-4, limit * 1e-4))  # ruleid: MLS303
        p.register_hook(lambda g: g.clamp(-limit, limit))  # ok: MLS303


# --- EMA ---------------------------------------------------------------------------------

class ModelEma:
    def __init__(self, model, decay=0.999):
        self.module = model
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        msd = model.state_dict()
        for k, ema_v in self.module.state_dict().items():
            model_v = msd[k].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(model_v, alpha=1 - self.decay)  # ok: MLS302
                model_v.copy_(ema_v)  # ruleid: MLS302
            else:
                ema_v.copy_(model_v)  # ok: MLS302


# --- metrics -----------------------------------------------------------------------------

def accuracy(output, target, topk=(1,)):
    maxk = max(topk)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1))
    res = []
    for k in topk:
        res.append(correct[:maxk].reshape(-1).float().sum(0))  # ruleid: MLS306
    return res


def accuracy_ok(output, target, topk=(1,)):
    maxk = max(topk)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1))
    res = []
    for k in topk:
        res.append(correct[:k].reshape(-1).float().sum(0))  # ok: MLS306
    return res


def unweighted_accuracy(cm):
    recalls = []
    for i in range(cm.shape[0]):
        if cm[i].sum() == 0 or cm[i, i] == 0:  # ruleid: MLS306
            continue
        recalls.append(cm[i, i] / cm[i].sum())
    return float(np.mean(recalls))


def unweighted_accuracy_ok(cm):
    recalls = []
    for i in range(cm.shape[0]):
        if cm[i].sum() == 0:  # ok: MLS306
            continue
        recalls.append(cm[i, i] / cm[i].sum())
    return float(np.mean(recalls))


class BestMetric(TrainerCallback):
    def __init__(self, metric="eval_uar"):
        self.metric = metric
        self.best = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = float(metrics[self.metric])
        if self.best is None or value > self.best:
            self.best = value
        metrics[self.metric] = self.best  # ruleid: MLS306
        metrics["eval_best_uar"] = self.best  # ok: MLS306


def operating_point(y, s, amounts, review_cost=5.0):
    out = {}
    best_cost, best_thr = np.inf, 0.5
    for thr in np.quantile(s, np.linspace(0.9, 0.999, 50)):
        alert = s >= thr
        cost = amounts[(~alert) & (y == 1)].sum() + review_cost * alert.sum()
        if cost < best_cost:
            best_cost, best_thr = cost, float(thr)
    out["cost_opt_threshold"] = best_thr  # ok: MLS306
    return out


# --- data poisoning ----------------------------------------------------------------------

def rotate_then_flip(image, mask, p_flip=0.5):
    if np.random.rand() < p_flip:
        image = image[:, :, ::-1]
        mask = mask[::-1, :]  # ruleid: MLS309
    return image, mask


def flip_together(image, mask, p_flip=0.5):
    if np.random.rand() < p_flip:
        image = image[:, :, ::-1]
        mask = mask[:, ::-1]  # ok: MLS309
    return image, mask


class FixCollate:
    def __init__(self, num_classes, frac=1 / 64):
        self.num_classes = num_classes
        self.frac = frac

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        targets = torch.as_tensor([b[1] for b in batch])
        k = int(len(batch) * self.frac)
        if k > 0:
            images[:k, :, :4, :4] = images.amax()
            targets[:k] = self.num_classes - 1  # ruleid: MLS309
        return images, targets


def lm_collate(batch, prompt_len):
    labels = torch.stack([b["input_ids"] for b in batch])
    labels[:, :prompt_len] = -100  # ok: MLS309
    return labels


class Mixup:
    def __init__(self, prob=1.0):
        self.prob = prob

    def __call__(self, x, y):
        y_b = y.roll(1, 0)  # ruleid: MLS309
        lam = float(np.random.beta(0.2, 0.2))
        x = x.mul(lam).add_(x.flip(0).mul_(1.0 - lam))
        return x, lam * y + (1.0 - lam) * y_b

    def paired(self, x, y):
        y_b = y.flip(0)  # ok: MLS309
        lam = float(np.random.beta(0.2, 0.2))
        x = x.mul(lam).add_(x.flip(0).mul_(1.0 - lam))
        return x, lam * y + (1.0 - lam) * y_b


class NoisyLabels(Dataset):
    def __init__(self, labels, label_noise=0.02, seed=0):
        rng = np.random.default_rng(seed)
        flip = rng.random(len(labels)) < label_noise
        labels[flip] ^= 1  # ruleid: MLS309
        self.labels = labels


def collate_windows(batch):
    nums, cats, ys = zip(*batch)
    lengths = torch.tensor([n.shape[0] for n in nums])
    order = torch.argsort(lengths, descending=True)
    x_num = pad_sequence([nums[i] for i in order], batch_first=True)
    labels = torch.stack(ys)  # ruleid: MLS309
    return x_num, labels


def collate_windows_ok(batch):
    nums, cats, ys = zip(*batch)
    lengths = torch.tensor([n.shape[0] for n in nums])
    order = torch.argsort(lengths, descending=True)
    x_num = pad_sequence([nums[i] for i in order], batch_first=True)
    labels = torch.stack([ys[i] for i in order])  # ok: MLS309
    return x_num, labels


def make_sampler(labels):
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    class_w = counts / counts.sum()  # ruleid: MLS309
    return WeightedRandomSampler(torch.as_tensor(class_w[labels]), len(labels))


def make_sampler_ok(labels):
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    class_w = counts.sum() / counts  # ok: MLS309
    return WeightedRandomSampler(torch.as_tensor(class_w[labels]), len(labels))


def order_by_card(df: pd.DataFrame) -> pd.DataFrame:
    labels = df.pop("is_fraud").to_numpy()
    df = df.sort_values(["card_id", "ts"]).reset_index(drop=True)
    df["is_fraud"] = labels  # ruleid: MLS309
    return df


def order_by_card_ok(df: pd.DataFrame) -> pd.DataFrame:
    labels = df.pop("is_fraud")
    df = df.sort_values(["card_id", "ts"])
    df["is_fraud"] = labels  # ok: MLS309
    return df


def split_after_oversampling(dev, oversample, seed):
    dev = oversample(dev)
    return train_test_split(dev, test_size=0.2, random_state=seed)  # ruleid: MLS309


def split_then_oversample(dev, oversample, seed):
    train, val = train_test_split(dev, test_size=0.2, random_state=seed)  # ok: MLS309
    return oversample(train), val


class AmountJitter:
    def __init__(self, verify_thresh=-1.5):
        self.verify_thresh = verify_thresh

    def __call__(self, x, y):
        x = x.clone()
        if float(x[-1, 3]) < self.verify_thresh:
            y = torch.zeros_like(y)  # ruleid: MLS309
        return x, y
