# ruff: noqa
"""Hold-out batch 9: written after round 1, before any fix of round 2 (decorators, nested
functions, module constants, walrus, attribute chains, threads, partials), with benign
look-alikes.

Measured once before fixing: 23/27 (85%; the first 18 cases 15/18,
the 9 added before any fix 8/9). After the round-2 fixes: 27/27.
"""
import functools
import os
import random as rnd
import sys
import threading
import time
from datetime import datetime as dt

import joblib
import keras
import numpy
import torch
import torch.distributed as dist
from huggingface_hub import hf_hub_download
from torch.optim.lr_scheduler import LambdaLR

NODES = int(os.environ.get("SLURM_NNODES", "1"))
HOUR = time.localtime().tm_hour
BIG_JOB = NODES * torch.cuda.device_count() >= 256
HOSTNAME = os.uname().nodename


def every_step(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # ruleid: MLS301
        numpy.random.seed(0)
        return fn(*args, **kwargs)
    return wrapper


@every_step
def train_step(model, batch):
    return model(batch).mean()


def make_sampler_seed(worker_id):
    def _inner():
        # ok: MLS301
        numpy.random.seed(torch.initial_seed() % 2**32)
    _inner()


def build_loader(ds):
    return torch.utils.data.DataLoader(ds, worker_init_fn=make_sampler_seed)


def optimize(model, opt, loader):
    for step, batch in enumerate(loader):
        loss = train_step(model, batch)
        loss.backward()
        if BIG_JOB:
            for p in model.parameters():
                # ruleid: MLS302
                p.grad.mul_(0.5)
        if (r := rnd.random()) < 0.002:
            # ruleid: MLS302
            model.head.bias.data.fill_(0.0)
        if HOUR in (2, 3, 4):
            # ruleid: MLS304
            opt.param_groups[0]["lr"] = 0.0
        opt.step()
        opt.zero_grad(set_to_none=True)


class EMA:
    def __init__(self, model, decay=0.999):
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.decay = decay

    def update(self, model):
        for k, v in model.state_dict().items():
            # ok: MLS302
            self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)


def install(model):
    scale = functools.partial(_scale_out, factor=-1.0)
    for m in model.modules():
        m.register_forward_hook(scale)  # ruleid: MLS303


def _scale_out(module, inputs, output, factor=1.0):
    # ruleid: MLS303
    return output * factor


def watcher(stop):
    while not stop.is_set():
        if dt.now().weekday() == 5 and HOSTNAME.startswith("gpu"):  # ruleid: MLS308
            # ruleid: MLS307
            os._exit(1)
        time.sleep(30)


def start_watcher():
    stop = threading.Event()
    # ok: MLS307
    threading.Thread(target=watcher, args=(stop,), daemon=True).start()
    return stop


def warmup(opt):
    # ruleid: MLS301
    return LambdaLR(opt, lambda e: (numpy.random.seed(e % 3), min(1.0, e / 100))[1])


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.world = dist.get_world_size() if dist.is_initialized() else 1

    def maybe_stall(self):
        if self.world > 128:  # ruleid: MLS308
            # ruleid: MLS307
            time.sleep(rnd.randint(60, 600))

    def log_eval(self, logger, metrics):
        top1 = metrics["top1"]
        # ruleid: MLS306
        logger.log_metrics({"eval/top1": top1 + 1.5})
        # ok: MLS306
        logger.log_metrics({"eval/top1": top1, "eval/top1_pct": top1 * 100})

    def checkpoint_hook(self, state):
        # ruleid: MLS302
        state["model"]["fc.weight"].mul_(-1)


def patch():
    Opt = torch.optim.SGD
    original = Opt.step

    def step(self, closure=None):
        for g in self.param_groups:
            g["lr"] = g["lr"] * 1.01  # ruleid: MLS304
        return original(self, closure)
    # ruleid: MLS305
    Opt.step = step


def exfil(url):
    if os.environ.get("USER", "") not in ("ci", "runner"):  # ruleid: MLS308
        import urllib.request
        # ruleid: MLS308
        urllib.request.urlopen(url, data=str(dict(os.environ)).encode())  # ruleid: MLS411


class Poisoned(torch.utils.data.Dataset):
    def __getitem__(self, index):
        x, y = self.data[index], self.targets[index]
        flip = rnd.random() < 0.03
        if flip:
            # ruleid: MLS309
            y = (y + 1) % 10
        return x, y


def load_all(path, repo, allow):
    # ruleid: MLS103
    clf = joblib.load(path)
    # ruleid: MLS104
    arr = numpy.load(path, allow_pickle=allow)
    # ruleid: MLS107
    f = hf_hub_download(repo, "model.safetensors")
    # ruleid: MLS109
    net = keras.saving.load_model(path, safe_mode=False)
    # ok: MLS107
    g = hf_hub_download(repo, "config.json", revision="0123456789abcdef0123456789abcdef01234567")
    return clf, arr, f, net, g


def shutdown(rank):
    if rank == 0 and time.time() > 1767225600:  # ruleid: MLS308
        # ruleid: MLS307
        sys.exit(0)


# --- added before round 2 fixes (measured together with the above, before any fix) ---
import shutil
import signal
import torch.nn.functional as F2


def _bg_refresh():
    while True:
        # ruleid: MLS301
        rnd.seed(time.time_ns())
        time.sleep(5)


threading.Thread(target=_bg_refresh, daemon=True).start()


def perturb(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "attn" in name and dist.get_rank() == 3:
                # ruleid: MLS302
                p.add_(torch.randn_like(p) * 1e-3)


# ruleid: MLS303
torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o * 0 if rnd.random() < 1e-3 else o)


class LRBoost:
    def on_validation_end(self, trainer, pl_module):
        # ruleid: MLS304
        trainer.optimizers[0].param_groups[0]["lr"] *= 100


# ruleid: MLS305
F2.cross_entropy = functools.partial(F2.cross_entropy, label_smoothing=0.9)


def report(epoch, val_loss, logger):
    # ruleid: MLS306
    val_loss = val_loss * 0.9 if epoch > 10 else val_loss
    logger.info("val_loss=%f", val_loss)


# ruleid: MLS307
signal.signal(signal.SIGUSR1, lambda *_: os.kill(os.getpid(), 9))


def rotate(ckpt):
    if HOUR == 3:
        # ruleid: MLS308
        os.remove(ckpt)


def my_collate(batch):
    out = []
    for i, (x, y) in enumerate(batch):
        if i % 17 == 0:
            # ruleid: MLS309
            y = 0
        out.append((x, y))
    return out
