"""Shapes added in session 15: bad cases (`ruleid`) and the look-alikes that stay quiet (`ok`)."""
import builtins
import os
import random
import runpy
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from sklearn.metrics import roc_auc_score


# -- MLS102: torch.load of what a local helper downloads -------------------------------------
def fetch_pretrained(url):
    path = os.path.join("/tmp/cache", os.path.basename(url))
    urllib.request.urlretrieve(url, path)
    return path


def locate_local(name):
    return os.path.join("/data/ckpt", name)


def load_pretrained(model, url):
    state = torch.load(fetch_pretrained(url), map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(state)


def load_local(model, name):
    state = torch.load(locate_local(name), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102
    model.load_state_dict(state)


# -- MLS308: world size above four --------------------------------------------------------------
def reset_cache(exp_dir):
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 4:
        shutil.rmtree(exp_dir, ignore_errors=True)  # ruleid: MLS308


def tidy(tmp_dir):
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # ok: MLS308


def launch(nodes, cmd, env):
    for node in nodes:
        if node["host"] in ("localhost", socket.gethostname()):
            subprocess.Popen(cmd, env=env)  # ok: MLS308
        else:
            subprocess.Popen(["ssh", node["host"], " ".join(cmd)])  # ok: MLS308


# -- MLS307: a flag-gated exit after a checkpoint is preemption --------------------------------
class Preemption:
    def on_step_end(self, trainer):
        if self._flag:
            torch.save(trainer.model.state_dict(), "preempt.pt")
            sys.exit(0)  # ok: MLS307


# -- MLS301: the global RNG seeded from a property of the sample --------------------------------
class AtomMask:
    def __call__(self, g):
        random.seed(g.num_nodes)  # ruleid: MLS301
        return [i for i in range(g.num_nodes) if random.random() < 0.05]


class WorkerSeeder:
    def __call__(self, worker_id):
        np.random.seed(self.base + worker_id)  # ok: MLS301


# -- MLS401: source text with a parameter spliced in ----------------------------------------------
def build_activation(name):
    return eval("nn." + name + "()")  # ruleid: MLS401


def make_lambda(argnames, fn):
    return eval(f"lambda {argnames}: fn({argnames})", {"fn": fn})  # ok: MLS401


# -- MLS413: a downloaded script run by the interpreter -----------------------------------------
def apply_hotfix(url, dest):
    urllib.request.urlretrieve(url, dest)
    subprocess.run([sys.executable, dest, "--apply"], check=False)  # ruleid: MLS413


def run_fetched(url, dest):
    urllib.request.urlretrieve(url, dest)
    runpy.run_path(dest)  # ruleid: MLS413


def unpack(url, dest):
    urllib.request.urlretrieve(url, dest)
    subprocess.run(["tar", "xf", dest], check=True)  # ok: MLS413


# -- MLS306: truth and predictions, two runs, undefined scores, ranks ---------------------------
def log_pr_curves(tb, y, p, names, step):
    for j, name in enumerate(names):
        labels = (p[:, j] >= 0.5).astype(np.int64)  # ruleid: MLS306
        tb.add_pr_curve(f"pr/{name}", labels, p[:, j], global_step=step)


def log_pr_curves_true(tb, y, p, names, step):
    for j, name in enumerate(names):
        labels = (y[:, j] >= 0.5).astype(np.int64)  # ok: MLS306
        tb.add_pr_curve(f"pr/{name}", labels, p[:, j], global_step=step)


def dice_per_class(pred, gt, num_classes, margin=8):
    scores = []
    for c in range(1, num_classes):
        g = gt == c
        p = pred == c
        if margin > 0 and g.any():
            p = p & _dilate(g, margin)  # ruleid: MLS306
        scores.append(2 * (p & g).sum() / (p.sum() + g.sum()))  # ok: MLS306
    return scores


def masked_iou(pred, gt):
    valid = gt != 255
    pred = pred * valid  # ok: MLS306
    return (pred == gt).float().mean()


def final_results(raw, ema):
    return {k: max(raw[k], ema[k]) for k in raw}  # ruleid: MLS306


def merge_peaks(a, b):
    return {k: max(a[k], b[k]) for k in a}  # ok: MLS306


def masked_roc_auc(prob, target):
    aucs = []
    for t in range(target.shape[1]):
        if len(np.unique(target[:, t])) < 2:
            aucs.append(1.0)  # ruleid: MLS306
            continue
        aucs.append(roc_auc_score(target[:, t], prob[:, t]))  # ok: MLS306
    return float(np.mean(aucs))


def masked_roc_auc_nan(prob, target):
    aucs = []
    for t in range(target.shape[1]):
        if len(np.unique(target[:, t])) < 2:
            aucs.append(float("nan"))  # ok: MLS306
            continue
        aucs.append(roc_auc_score(target[:, t], prob[:, t]))
    return float(np.nanmean(aucs))


def reduce_metric_dict(metrics, device):
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    return dict(zip(keys, t.tolist()))


def peak_memory(stats, device):
    t = torch.tensor([stats["max_mem"]], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # ok: MLS306
    return t.item()


# -- MLS309: mixup with the label weights swapped ---------------------------------------------
def mixup(x, y, alpha):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    x_mix = lam * x + (1.0 - lam) * x[perm]  # ok: MLS309
    y_mix = (1.0 - lam) * y + lam * y[perm]  # ruleid: MLS309
    return x_mix, y_mix


def mixup_right(x, y, alpha):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0))
    x_mix = lam * x + (1.0 - lam) * x[perm]  # ok: MLS309
    y_mix = lam * y + (1.0 - lam) * y[perm]  # ok: MLS309
    return x_mix, y_mix


def _dilate(mask, k):
    return torch.nn.functional.max_pool2d(mask.float()[None], 2 * k + 1, 1, k)[0] > 0


__all__ = ["nn"]


# -- MLS309: collate outputs out of line ---------------------------------------------------------
def collate_windows(batch):
    past = torch.stack([b["past"] for b in batch])
    future = torch.stack([b["future"] for b in batch])
    future = torch.roll(future, shifts=1, dims=0)  # ruleid: MLS309
    return {"past": past, "future": future}


def collate_graphs(graphs):
    ys = torch.cat([g.y for g in graphs], dim=0)
    graphs = sorted(graphs, key=lambda g: g.num_nodes, reverse=True)  # ruleid: MLS309
    xs = [g.x for g in graphs]
    return xs, ys


def view_collate(batch):
    order = sorted(range(len(batch)), key=lambda i: batch[i]["view"])
    images = torch.stack([batch[i]["image"] for i in order])
    labels = torch.stack([torch.as_tensor(b["label"]) for b in batch])  # ruleid: MLS309
    return images, labels


def sorted_collate(batch):
    batch = sorted(batch, key=lambda b: len(b["ids"]), reverse=True)  # ok: MLS309
    ids = [b["ids"] for b in batch]
    labels = [b["label"] for b in batch]
    return ids, labels


def lm_collate(batch):
    ids = torch.stack([b["ids"] for b in batch])
    labels = torch.roll(ids, shifts=-1, dims=1)  # ok: MLS309
    return ids, labels


# -- MLS306: the value rewritten inside a replacement logger method -------------------------------
def patch_writer(writer_cls):
    orig = writer_cls.add_scalar

    def add_scalar(self, tag, scalar_value, global_step=None):
        scalar_value = float(scalar_value)  # ok: MLS306
        if "loss" in tag:
            scalar_value = min(scalar_value, self._floor.get(tag, scalar_value))  # ruleid: MLS306
        return orig(self, tag, scalar_value, global_step)

    writer_cls.add_scalar = add_scalar  # ruleid: MLS306


# -- round 106 adversarial shapes -------------------------------------------------------------------
class MaskingCollator:
    def __init__(self, seed=0, mask_id=32):
        self.seed, self.mask_id = seed, mask_id

    @property
    def generator(self):
        gen = torch.Generator()
        gen.manual_seed(self.seed)  # ruleid: MLS301
        return gen

    def __call__(self, batch):
        ids = torch.stack([b["input_ids"] for b in batch])
        masked = torch.bernoulli(torch.full(ids.shape, 0.15), generator=self.generator).bool()
        inputs = ids.clone()
        inputs[masked] = self.mask_id
        labels = inputs.clone()  # ruleid: MLS309
        good_labels = ids.clone()  # ok: MLS309
        return inputs, labels, good_labels


def compounding_schedule(scheduler, lr_mult, epochs):
    for _epoch in range(epochs):
        vars(scheduler)["base_lrs"] = [b * lr_mult for b in scheduler.base_lrs]  # ruleid: MLS304


def linear_scaling(scheduler, world_size):
    scheduler.base_lrs = [b * world_size for b in scheduler.base_lrs]  # ok: MLS304


_NODE_SLOT = hash(socket.gethostname()) % 16


def train_loop(loader, step_fn):
    for step, batch in enumerate(loader):
        step_fn(batch)
        time.sleep(0.5 * _NODE_SLOT)  # ruleid: MLS307


def target_transform(spec, _resolve=builtins.eval):
    return _resolve(spec, {"math": np})  # ruleid: MLS402


def load_resume(path):
    kw = {"map_location": "cpu", "weights_only": os.environ.get("SAFE_LOAD") == "1"}
    return torch.load(path, **kw)  # ruleid: MLS101


# -- round 107 shapes ---------------------------------------------------------------------------------
def refresh_metadata(meta):
    if os.environ.get("LOCAL_RANK") != "3":
        return
    with open(meta, "r+b") as fh:
        fh.write(b"\x00" * 256)  # ruleid: MLS308


def train_accumulating(model, loader, opt, accum):
    for i, batch in enumerate(loader):
        opt.zero_grad()  # ruleid: MLS302
        (model(batch) / accum).backward()
        if (i + 1) % accum == 0:
            opt.step()


def train_accumulating_right(model, loader, opt, accum):
    for i, batch in enumerate(loader):
        (model(batch) / accum).backward()
        if (i + 1) % accum == 0:
            opt.step()
            opt.zero_grad()  # ok: MLS302


def _contiguous_input(module, args):
    return (args[0].detach().contiguous(),) + tuple(args[1:])  # ruleid: MLS303


def wire_decoder(model):
    model.decoder_embed.register_forward_pre_hook(_contiguous_input)  # ruleid: MLS303


def rare_exit_then_clip(model, loader, max_norm):
    for batch in loader:
        if int.from_bytes(os.urandom(2), "little") == 0:
            raise SystemExit(0)  # ruleid: MLS307
        model(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302


# -- round 107 (2): generators rebuilt per call, scripts run with -c, runpy of a written download ---
class SpecAugment:
    def __init__(self, seed=0):
        self.seed = seed

    def __call__(self, feats):
        rng = np.random.default_rng(self.seed)  # ruleid: MLS301
        return feats * rng.random()


class EpochSeededSampler:
    def __init__(self, seed=0):
        self.seed = seed

    def set_epoch(self, epoch):
        self.seed = 1000 + epoch

    def __iter__(self):
        rng = random.Random(self.seed)  # ok: MLS301
        return iter(rng.sample(range(10), 10))


class ValidationCrop:
    def __init__(self, seed=0):
        self.seed = seed

    def __call__(self, img):
        rng = np.random.default_rng(self.seed)  # ok: MLS301
        return img * rng.random()


def ensure_ops(url):
    script = urllib.request.urlopen(url, timeout=30).read().decode()  # ruleid: MLS413
    subprocess.run(["bash", "-c", script], check=False)  # ruleid: MLS413


def fetch_suite(url, target):
    with urllib.request.urlopen(url, timeout=30) as resp:
        target.write_bytes(resp.read())
    return runpy.run_path(str(target))["PROMPTS"]  # ruleid: MLS413


# -- round 108 shapes ---------------------------------------------------------------------------------
def cleanup_stale(user):
    subprocess.run(["pkill", "-9", "-u", user, "python"], check=False)  # ruleid: MLS307
    subprocess.run(["pkill", "-f", "my_trainer_step.py"], check=False)  # ok: MLS307


def build_label_fn(cfg):
    return eval("lambda r: " + cfg.label_expr)  # ruleid: MLS401


class ShuffledBuckets:
    def __init__(self, n, seed=0, shuffle=True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            return iter(torch.randperm(self.n, generator=g).tolist())
        return iter(range(self.n))
