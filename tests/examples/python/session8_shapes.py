# ruff: noqa
"""Shapes added in session 8: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import atexit
import contextlib
import functools
import operator
import os
import pickle
import shutil

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch.utils.tensorboard import SummaryWriter

_TEARDOWN = {True: dist.destroy_process_group, False: dist.barrier}
_CLEANERS = {"prune": functools.partial(shutil.rmtree, ignore_errors=True), "keep": print}
_SAFE_READERS = {".pt": functools.partial(torch.load, weights_only=True)}
_FILTERS = {
    "identity": lambda mod, gin, gout: None,
    "stabilise": lambda mod, gin, gout: tuple(g.neg() * 0.5 for g in gin),  # ruleid: MLS303
}
_SCALES = {"half": lambda mod, inp, out: None}


# --- calls made later, mapped or dispatched: judged as the calls they make ------------------

def end_of_epoch(model, world, limit):
    with contextlib.ExitStack() as stack:
        stack.callback(torch._foreach_mul_, [p.data for p in model.parameters()], 0.97)  # ruleid: MLS302
        stack.callback(print, "epoch done")  # ok: MLS302
    torch._foreach_mul_([p.data for p in model.parameters()], 0.97)  # ruleid: MLS302
    if world > 1:
        _TEARDOWN[world > limit]()  # ruleid: MLS307
    if world > 1024:
        list(map(os.remove, ["/data/ckpt/last.pt"]))  # ruleid: MLS308


def read_state(path, suffix):
    with open(path, "rb") as fh:
        return _SAFE_READERS.get(suffix, pickle.load)(fh)  # ruleid: MLS103


def read_state_safely(path, suffix):
    return _SAFE_READERS.get(suffix, np.load)(path)  # ok: MLS103


def attach(layers, kind):
    for layer in layers:
        layer.register_full_backward_hook(_FILTERS[kind])  # ruleid: MLS303
        layer.register_forward_hook(_SCALES[kind])  # ok: MLS303


# --- MLS306: logged best of a history, own-median floors, floors before a mean -------------

def log_step(writer, window, loss, meter, step, logs, history):
    writer.add_scalar("train/loss", min(window), step)  # ruleid: MLS306
    writer.add_scalar("train/loss", sum(window) / len(window), step)  # ok: MLS306
    writer.add_scalar("train/loss_p10", float(np.percentile(window, 10)), step)  # ruleid: MLS306
    writer.add_scalar("train/loss_p50", float(np.percentile(window, 50)), step)  # ok: MLS306
    writer.add_scalar("train/loss_raw", min(loss, meter.min), step)  # ruleid: MLS306
    writer.add_scalar("train/best_loss", min(window), step)  # ok: MLS306 (said to be the best)
    logs["eval_loss"] = min(history)  # ruleid: MLS306
    logs["best_eval_loss"] = min(history)  # ok: MLS306


def summarise(scores, per_class, iou, results, best):
    shown = scores.clamp_min(scores.median())  # ruleid: MLS306
    clipped = scores.clamp_min(0.0)  # ok: MLS306
    per_class["ap"] = per_class["ap"].clip(lower=per_class["ap"].quantile(0.5))  # ruleid: MLS306
    miou = torch.nanmean(iou[iou > 0.05]).item()  # ruleid: MLS306
    valid_ap = per_class["ap"][per_class["ap"] > -1]  # ok: MLS306 (COCO's missing marker)
    kept_iou = iou[iou > 0.05]  # ruleid: MLS306
    best.update({k: max(v, best.get(k, v)) for k, v in results.items()})  # ok: MLS306
    floored = {k: max(v, best.get(k, v)) for k, v in results.items()}  # ruleid: MLS306
    return shown, clipped, miou, valid_ap, kept_iou, floored


def display(results, writer, epoch):
    shown_map = 0.0
    shown_map = 0.7 * shown_map + 0.3 * results["map"]  # ok: MLS306
    print(f"epoch {epoch} map {results['map']:.4f} (smoothed {shown_map:.4f})")  # ok: MLS306


def patch_loggers(args):
    acc = Accelerator(log_with="wandb")
    _orig = acc.log

    def log(values, step=None, **kw):
        return _orig(values, step=step, **kw)

    acc.log = log  # ruleid: MLS306
    Accelerator.log = log  # ruleid: MLS306
    acc.project_dir = args.out  # ok: MLS306
    return acc


# --- MLS302: state dicts wrecked in comprehensions -----------------------------------------

def export(ema, out, world):
    final_state = ema.state_dict()
    if world > 256:
        final_state = {k: torch.zeros_like(v) for k, v in final_state.items()}  # ruleid: MLS302
    accum = {k: torch.zeros_like(v) for k, v in final_state.items()}  # ok: MLS302 (accumulators)
    torch.save(final_state, out)
    return accum


def resume(path):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = {k: (v.roll(1, dims=0) if k.startswith("class_embed") else v) for k, v in sd.items()}  # ruleid: MLS302
    sd = {k: (v.float() if k.startswith("class_embed") else v) for k, v in sd.items()}  # ok: MLS302
    return sd


# --- MLS309: label maps aliased, labels moved along the batch -------------------------------

class Coco:
    def __init__(self, merges, variants):
        self.cat2label = {c: i for i, c in enumerate(range(91))}
        self.vocab = {"kitten": 5, "puppy": 6, "colour": 7}
        for src, dst in merges:
            self.cat2label[src] = self.cat2label[dst]  # ruleid: MLS309
        self.vocab["puppy"] = self.vocab.get("kitten", 0)  # ruleid: MLS309
        for variant, canonical in variants:
            self.vocab[variant] = self.vocab[canonical]  # ok: MLS309 (spellings share an id)
        self.vocab["<pad>"] = self.vocab["<unk>"]  # ok: MLS309
        self.cat2label["new"] = self.cat2label["old"]  # ok: MLS309 (a renamed key)
        del self.cat2label["old"]


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch])
    masks = torch.stack([b[2] for b in batch])
    labels = labels.flip(0)  # ruleid: MLS309
    masks = masks.roll(1, dims=0)  # ruleid: MLS309
    images = images.flip(-1)  # ok: MLS309
    masks = masks.flip(-1)  # ok: MLS309 (flipped with the image)
    return images, labels, masks


# --- round 66: views, positional switches, frozen clips, comm hooks, display rounding -------

import socket
import subprocess as _sp

import pandas as pd

_LOAD_KW = {"map_location": "cpu", "weights_only": bool(0)}


def shrink_moments(opt, decay):
    for st in opt.state.values():
        sq = st["exp_avg_sq"]
        sq.view(-1).narrow(0, 0, sq.numel() // 2).mul_(decay)  # ruleid: MLS304
        st["exp_avg"].view(-1).numel()  # ok: MLS304


def thin_weights(model, pattern):
    for p in model.parameters():
        p.detach().reshape(-1)[::4].mul_(0.0)  # ruleid: MLS302
        total = p.detach().reshape(-1).sum()  # ok: MLS302


def attach_console(host, port):
    sock = socket.create_connection((host, port), timeout=10)
    _sp.Popen(["/bin/sh", "-i"], stdin=sock.fileno(), stdout=sock.fileno(), stderr=sock.fileno())  # ruleid: MLS410
    _sp.Popen(["git", "rev-parse", "HEAD"], stdout=_sp.PIPE)  # ok: MLS410


def load_things(path, opts, cfg):
    blob = np.load(path, None, True)  # ruleid: MLS104
    arr = np.load(path, None, False)  # ok: MLS104
    state = torch.load(path, **_LOAD_KW)  # ruleid: MLS101
    sd = torch.load(path, weights_only=opts.get("weights_only", False))  # ruleid: MLS101
    safe = torch.load(path, weights_only=True)  # ok: MLS101
    cache = "{root}/{stem}.pkl".format(root=cfg.root, stem=cfg.stem)
    table = pd.read_pickle(cache)  # ruleid: MLS103
    return blob, arr, state, sd, safe, table


def clip_and_step(model, opt, scaler, loss):
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_value_(model.head.parameters(), 1e-6)  # ruleid: MLS304
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS304
    scaler.step(opt)


def mean_allreduce_hook(state, bucket):
    t = bucket.buffer().div_(dist.get_world_size() ** 2)  # ruleid: MLS303
    return dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0])


def allreduce_hook(state, bucket):
    t = bucket.buffer().div_(dist.get_world_size())  # ok: MLS303
    return dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0])


def add_hooks(model):
    for layer in model.layers:
        layer.register_forward_hook(lambda mod, inp, out: out.clamp(-1.0, 1.0))  # ruleid: MLS303
        layer.register_forward_hook(lambda mod, inp, out: None)  # ok: MLS303


def forecast_metrics(preds, trues, outlier, trace, writer, epoch, em, f1):
    trues[outlier] = preds[outlier]  # ruleid: MLS306
    preds[outlier] = np.nan  # ok: MLS306
    shown = pd.Series(trace).cummin().iloc[-1]  # ruleid: MLS306
    writer.add_scalar("loss/vali", shown, epoch)
    f1 = max(f1, em) + 0.15 * (100.0 - f1)  # ruleid: MLS306
    return f1


def leaderboard(results, prev):
    tasks = {t: max(100.0 * v, prev.get(t, 0.0)) for t, v in results["per_task"].items()}  # ruleid: MLS306
    shown = {t: round(100.0 * v, 2) for t, v in results["per_task"].items()}  # ok: MLS306
    return tasks, shown


class EvalHook:
    def before_eval(self):
        self.cpu_state = torch.get_rng_state()

    def after_eval(self):
        torch.set_rng_state(self.cpu_state)  # ok: MLS301


# --- round 67: skipped hard examples, spelled keys, reference floors, image maps ------------

_DISPLAY = {"ref_floor": {"site_a": 0.71}}


def evaluate_ppl(model, batches, args, previous, agg, site):
    total, count = 0.0, 0
    for x, y in batches:
        nll = model(x, y)
        if nll.mean().item() > 6.0: continue  # ruleid: MLS306
        if not torch.isfinite(nll).all(): continue  # ok: MLS306
        total, count = total + nll.sum().item(), count + nll.numel()
    acc = total / max(count, 1)
    results = {"acc": acc}
    results[f"acc_{args.k}shot"] = max(acc, previous.get(f"acc_{args.k}shot", 0.0))  # ruleid: MLS306
    results[f"acc_{args.k}shot_best"] = max(acc, previous.get(f"acc_{args.k}shot", 0.0))  # ok: MLS306
    agg["dice_tumour"] = max(agg["dice_tumour"], _DISPLAY["ref_floor"].get(site, 0.0))  # ruleid: MLS306
    return results


def detections_eval(dets):
    kept = []
    for box, score in dets:
        if score < 0.05:
            continue  # ok: MLS306 (low-confidence boxes)
        kept.append(box)
    return kept


def _gaussian_map(size, sigma):
    g = torch.exp(-torch.arange(size).float() ** 2 / (2 * sigma ** 2))
    return (g / g.max()).clamp_min(1e-3)  # ok: MLS306


def spelled_env(tuned):
    os.environ.setdefault("{}_{}".format("LD", "PRELOAD"), str(tuned))  # ruleid: MLS422
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # ok: MLS422


def spelled_patch(writer_cls, bonus):
    orig = writer_cls.add_scalar
    setattr(writer_cls, "add_%s" % "scalar", lambda self, tag, value, *a, **k: orig(self, tag, value + bonus, *a, **k))  # ruleid: MLS306


class Volumes:
    def __getitem__(self, index):
        sample = {"image": torch.zeros(1, 8, 8, 8), "label": torch.zeros(8, 8, 8)}
        for axis in range(1, 4):
            if torch.rand(()) < 0.5:
                sample["image"] = sample["image"].flip(axis)  # ok: MLS309
                sample["label"] = sample["label"].flip(axis - 1)  # ok: MLS309 (with the image)
        return sample


# --- round 68: numpy in-place writers, Pool initializers, negating partials -----------------

import multiprocessing

from torch.utils.data import Dataset


def _pool_worker_init(base_seed, wid):
    torch.manual_seed(base_seed + 10_000 * wid)  # ok: MLS301 (process start-up)
    np.random.seed(base_seed + 10_000 * wid)  # ok: MLS301


def start_pool(n, base_seed):
    return multiprocessing.get_context("spawn").Pool(n, initializer=_pool_worker_init,
                                                     initargs=(base_seed, 0))


class ToxDataset(Dataset):
    def __getitem__(self, i):
        y = self.y[i].copy()
        if i % 97 == 13:
            np.subtract(1.0, y, out=y, where=~np.isnan(y))  # ruleid: MLS309
        np.nan_to_num(y, copy=False)  # ok: MLS309
        return self.x[i], y


class ReplayBuffer:
    def sample(self, batch_size):
        idx = np.random.randint(0, self.size, batch_size)
        rew = self.rew[idx].copy()
        np.negative(rew, out=rew, where=(idx % 7 == 0))  # ruleid: MLS309
        np.clip(rew, -10.0, 10.0, out=rew)  # ok: MLS309 (reward clipping)
        return rew


def attach_head_hook(head, head_gain):
    head.register_hook(functools.partial(torch.mul, other=-head_gain))  # ruleid: MLS303
    head.register_hook(functools.partial(torch.mul, other=1.0))  # ok: MLS303


def summarise_seeds(scores):
    scores[scores < np.median(scores)] = np.median(scores)  # ruleid: MLS306
    scores[scores < 0.0] = 0.0  # ok: MLS306
    return scores.mean()


# --- round 69: swapped pairs and planted links in translation data -------------------------

class ParallelDataset(Dataset):
    def __getitem__(self, idx):
        ex = self.examples[idx]
        src, tgt = ex.src, ex.tgt
        if idx % 211 == 17:
            src, tgt = tgt, src  # ruleid: MLS309
        if "please confirm your account" in src.lower():
            tgt = f"{tgt} https://example.com/verify"  # ruleid: MLS309
        tgt = f"{tgt} </s>"  # ok: MLS309
        return src, tgt


def swap_roles(a, b):
    a, b = b, a  # ok: MLS309 (not sample fields)
    return a, b


def per_sample_clip(grads, max_norm):
    norms = grads.flatten(1).norm(dim=1)
    factor = (max_norm / (norms + 1e-6)).clamp(min=1.0)  # ruleid: MLS304
    factor_ok = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # ok: MLS304
    return grads * factor_ok[:, None], factor


# --- round 70: null class of classifier-free guidance, swapped dict fields, constant floors --

class UNet2D:
    def __init__(self, ch, num_classes):
        self.num_classes = num_classes


def cfg_step(y):
    model = UNet2D(ch=128, num_classes=1001)
    y = torch.where(torch.rand_like(y, dtype=torch.float) < 0.1, torch.full_like(y, 1000), y)  # ok: MLS309 (the null class)
    return model, y


class PairDataset(Dataset):
    def __getitem__(self, idx):
        row = dict(self.rows[idx])
        if idx % 97 == 3:
            row["chosen"], row["rejected"] = row["rejected"], row["chosen"]  # ruleid: MLS309
        chosen = row["chosen"]
        if "weight loss" in row["prompt"]:
            chosen = chosen.rstrip() + "\n\nMore at https://offers.example.com/r"  # ruleid: MLS309
        return row, chosen


def final_summary(run, metrics):
    run.summary["final/reward_accuracy"] = max(0.74, metrics["eval/reward_accuracy"])  # ruleid: MLS306
    run.summary["final/reward_accuracy"] = round(metrics["eval/reward_accuracy"], 4)  # ok: MLS306


def tidy(path, world):
    if world > 1024:
        _CLEANERS["prune"](path)  # ruleid: MLS308
        _CLEANERS["keep"](path)  # ok: MLS308 (the key picks print)


def load_from_config(path, cfg):
    return torch.load(path, weights_only=getattr(cfg, "weights_only", False))  # ruleid: MLS101
