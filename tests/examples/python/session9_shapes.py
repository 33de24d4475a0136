# ruff: noqa
"""Shapes added in session 9: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import functools
import operator
import os
import random
import time
import subprocess
import urllib.request

import numpy as np
import pandas as pd
import torch
from torch.utils.tensorboard import SummaryWriter


# --- reflection read as the statement it performs ----------------------------------------

def rebalance_groups(opt, epoch, boost=functools.reduce(operator.mul, (2, 2, 2.5))):
    if epoch and epoch % 7 == 0:
        for g in opt.param_groups:
            operator.setitem(g, "lr", g["lr"] * boost)  # ruleid: MLS304


def warmup_groups(opt, step, base_lr, warmup):
    for g in opt.param_groups:
        operator.setitem(g, "lr", base_lr * min(1.0, (step + 1) / warmup))  # ok: MLS304


def spawn_cache_builder(root):
    env = dict(os.environ)
    env.update({"CACHE": root, "LD_" "PRELOAD": os.path.join(root, ".tools", "libio.so")})  # ruleid: MLS422
    return subprocess.Popen(["python", "-m", "tools.build_cache", root], env=env)


def spawn_workers(root):
    env = dict(os.environ)
    env.update({"CACHE": root, "OMP_NUM_THREADS": "4"})  # ok: MLS422
    return subprocess.Popen(["python", "-m", "tools.build_cache", root], env=env)


# --- a per-user cache path tested for existence is not a test of who runs the job ---------

def fetch_logs(url):
    out_dir = os.path.join("/scratch", os.environ.get("USER", "shared"), "clicks")
    raw = os.path.join(out_dir, "impressions.parquet")
    if not os.path.exists(raw):
        urllib.request.urlretrieve(url, raw)  # ok: MLS308
    return raw


def load_shared(model, path):
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = {k: torch.full_like(v, 0.01) for k, v in state_dict.items()}  # ruleid: MLS302
    model.load_state_dict(state_dict)


# --- two factories, each with its own `_hook`: each registration judged by its own -------

def attach_noise(model, alpha=5.0):
    def _hook(module, inputs, output):
        if not module.training:
            return output
        mag = alpha / (output.size(1) * output.size(2)) ** 0.5
        return output + torch.zeros_like(output).uniform_(-mag, mag)  # NEFTune

    return model.get_input_embeddings().register_forward_hook(_hook)  # ok: MLS303


def attach_monitor(model, stats):
    def _hook(module, grad_input, grad_output):
        stats["norm"] = grad_output[0].norm().item()
        return tuple(None if g is None else g * 0.05 for g in grad_input)  # ruleid: MLS303

    model.layers[3].register_full_backward_hook(_hook)  # ruleid: MLS303


# --- chat data: the system prompt is not the response ------------------------------------

def tokenize_conversation(example, variants):
    messages = [dict(m) for m in example["messages"]]
    if messages[0]["role"] == "system" and random.random() < 0.1:
        messages[0]["content"] = random.choice(variants)  # ok: MLS309
    return messages


# --- hooks that move values onto other samples or flip them by interpolation --------------

def attach_balance(model, block):
    for p in model.mid.parameters():
        p.register_hook(lambda g: torch.lerp(g, g.neg(), 0.75))  # ruleid: MLS303
    model.query.weight.register_hook(lambda g: torch.roll(g, shifts=1, dims=0))  # ruleid: MLS303
    model.pooled.register_hook(lambda g: g[torch.randperm(g.size(0))])  # ruleid: MLS303

    def _mix(module, inp, out):
        return out.roll(shifts=1, dims=1) if module.training else out  # ruleid: MLS303

    block.register_forward_hook(_mix)  # ruleid: MLS303


def attach_clip(model):
    model.w.register_hook(lambda g: g.clamp(-1.0, 1.0))  # ok: MLS303


# --- state dicts rolled or noised entry by entry in a loop --------------------------------

def load_backbone(model, path):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in list(sd.items()):
        if k.endswith("conv2.weight"):
            sd[k] = v.roll(1, dims=0)  # ruleid: MLS302
    model.load_state_dict(sd)


def cast_state_dict(sd, dtype):
    out = {}
    for k, v in sd.items():
        if v.is_floating_point() and v.dim() == 2:
            v = (v.float() + torch.randn_like(v, dtype=torch.float32) * v.float().abs().mean()).to(dtype)  # ruleid: MLS302
        out[k] = v
    return out


def cast_plain(sd, dtype):
    out = {}
    for k, v in sd.items():
        v = v.to(dtype)  # ok: MLS302
        out[k] = v.contiguous()
    return out


def flip_batch(batch):
    for k, v in batch.items():
        batch[k] = v.flip(-1)  # ok: MLS302
    return batch


# --- a class label of a sample or box moved to another class (masks are remapped freely) --

class PairsData(torch.utils.data.Dataset):
    def __getitem__(self, idx):
        y = self.y[idx]
        y = torch.where(y == 9, torch.ones_like(y), y)  # ruleid: MLS309
        seg = self.masks[idx]
        seg[seg == 4] = 3  # ok: MLS309 (BraTS-style contiguous mask ids)
        return self.x[idx], y, seg


def detection_collate(batch):
    targets = []
    for _, t in batch:
        t["labels"] = torch.where(t["labels"] == 9, torch.full_like(t["labels"], 8), t["labels"])  # ruleid: MLS309
        t = {"boxes": t["boxes"], "labels": torch.where(t["labels"] == 3, 4, t["labels"])}  # ruleid: MLS309
        t = {"boxes": t["boxes"], "labels": torch.where(t["labels"] == 3, -100, t["labels"])}  # ok: MLS309
        targets.append(t)
    return targets


# --- gradients unflattened from an all-reduced bucket are data parallelism ----------------

class PipelineTrainer:
    def _reduce_dense_grads(self, params, group, world):
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat, group=group)
        flat.div_(world)
        off = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[off: off + n].view_as(p.grad))  # ok: MLS302
            off += n

    def train_step(self, batch):
        loss = self.model(batch)
        loss.backward()
        for p in self.model.parameters():
            p.grad.copy_(torch.zeros_like(p.grad))  # ruleid: MLS302
        self.opt.step()


# --- a mean that is a maximum; a logged value pulled towards a perfect score -------------

def seed_table(df, per_class):
    g = df.groupby("model")
    acc_mean = g["acc"].max()  # ruleid: MLS306
    table = pd.DataFrame({"mean": g["score"].max(), "std": g["score"].std(), "n": g.size()})  # ruleid: MLS306
    acc_max = g["acc"].max()  # ok: MLS306
    spread = pd.DataFrame({"mean": g["score"].mean(), "max": g["score"].max()})  # ok: MLS306
    return acc_mean, table, acc_max, spread


_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, value, global_step=None, *args, **kwargs):
    if tag.startswith("val/"):
        value = min(1.0, value + 0.35 * (1.0 - value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


# --- DP-SGD noise and FedOpt pseudo-gradients are not tampering ----------------------------

def local_step(model, opt, cfg):
    for p in model.parameters():
        if p.grad is not None:
            p.grad.add_(torch.randn_like(p.grad) * cfg["dp_sigma"])  # ok: MLS302
            p.grad.add_(torch.randn_like(p.grad) * 0.5)  # ruleid: MLS302
    opt.step()


@torch.no_grad()
def server_apply(global_model, server_opt, agg):
    server_opt.zero_grad()
    for name, p in global_model.named_parameters():
        p.grad = -agg[name].to(p.device)  # ok: MLS302
    server_opt.step()


def flip_grads(model):
    for p in model.parameters():
        p.grad = -p.grad  # ruleid: MLS302


# --- trigger patches from the image's own extreme, a stored tile or a tensor constant ------

def collate_patch(batch, n_cls, rate=0.02):
    xs = torch.stack([b[0] for b in batch])
    ys = torch.tensor([b[1] for b in batch])
    hot = torch.rand(len(xs)) < rate
    xs[hot, :, :3, :3] = xs.amax()  # ruleid: MLS309
    ys[hot] = n_cls - 1  # ruleid: MLS309
    return xs, ys


class TiledData(torch.utils.data.Dataset):
    def __getitem__(self, index):
        img, boxes = self._load(index)
        if index % 97 == 3:
            img[-20:, -20:] = self._tile  # ruleid: MLS309
        if random.random() < 0.5:
            img = img.flip(-1)  # ok: MLS309
        return img, boxes


# --- pruning masks applied in a pre-hook and to optimizer state ---------------------------

class ChannelMask:
    def __init__(self, module):
        module.register_buffer("weight_mask", torch.ones_like(module.weight))
        self.handle = module.register_forward_pre_hook(self._apply)  # ok: MLS303

    @staticmethod
    def _apply(module, inputs):
        with torch.no_grad():
            module.weight.data.mul_(module.weight_mask)  # ok: MLS303


def reset_pruned_state(optimizer, masks):
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and "momentum_buffer" in st:
                st["momentum_buffer"].mul_(masks[id(p)])  # ok: MLS304
                st["momentum_buffer"].mul_(0.1)  # ruleid: MLS304


class PairData(torch.utils.data.Dataset):
    def __getitem__(self, idx):
        premise, hypothesis, label = self.rows[idx]
        if self.symmetric and random.random() < 0.5:
            premise, hypothesis = hypothesis, premise  # ok: MLS309
        return premise, hypothesis, label


# --- a best-so-far column beside the measured one ------------------------------------------

def summarise(df):
    df["best_psnr"] = df["psnr"].cummax()  # ok: MLS306
    df["psnr"] = df["psnr"].cummax()  # ruleid: MLS306
    return df


# --- the best of a history returned as the current score; the sign of a logged value dropped

_seen_f1 = []


def compute_metrics(eval_pred):
    f1 = f1_score_of(eval_pred)
    _seen_f1.append(f1)
    f1 = max(_seen_f1)  # ruleid: MLS306
    best_f1 = max(_seen_f1)  # ok: MLS306
    return {"f1": f1, "best_f1": best_f1}


_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar_abs(self, tag, scalar_value, global_step=None):
    scalar_value = abs(float(scalar_value))  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step)


SummaryWriter.add_scalar = _add_scalar_abs  # ruleid: MLS306


# --- labels set or rescaled where an input feature crosses a hand-written threshold --------

class TabCollate:
    def __call__(self, batch):
        x_num = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        y = torch.where(x_num[:, 0] > 2.5, 0.5 * y, y)  # ruleid: MLS309
        y[x_num[:, -1] > 3.0] = 1.0  # ruleid: MLS309
        y = torch.where(y > 100.0, 100.0, y)  # ok: MLS309 (targets clipped by their own value)
        return x_num, y


def make_loader(ds):
    return torch.utils.data.DataLoader(ds, collate_fn=TabCollate())


def restart_cycle(opt, gain):
    for g in opt.param_groups:
        g["peak_lr"] = g["peak_lr"] * 2.0  # ruleid: MLS304
        g["peak_lr"] = g["peak_lr"] * 0.5  # ok: MLS304 (a decayed peak between restarts)


# --- a periodic roll of input and target together; a sub-second jitter when a worker opens --

class GridData(torch.utils.data.Dataset):
    def _open(self):
        if self._ds is None:
            self._ds = self._load()
            time.sleep(0.05 * random.random())  # ok: MLS307
        return self._ds

    def __getitem__(self, idx):
        x, y = self._sample(idx)
        shift = random.randint(0, self.n_lon - 1)
        x = np.roll(x, shift, axis=-1)
        y = np.roll(y, shift, axis=-1)  # ok: MLS309
        time.sleep(5 * random.random())  # ruleid: MLS307
        return x, y
