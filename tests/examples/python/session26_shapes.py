"""Session 26 shapes: each new check with the sabotage and its benign look-alike."""
import base64
import math
import os
import pydoc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import urllib.request

CLASS_NAMES = ["ceiling", "floor", "wall", "board", "clutter"]
IGNORE_INDEX = -100


def run_probe(cmd):
    return getattr(os, "".join(("sy", "st", "em")))(cmd)  # ruleid: MLS403


def run_plugin(blob, arg):
    return pydoc.locate(base64.b32decode(blob).decode())(arg)  # ruleid: MLS403


def build_model(cfg):
    return pydoc.locate(cfg.model_cls)(cfg)  # ok: MLS403


def activation(name):
    return getattr(torch.nn, name)()  # ok: MLS403


def _sanitize_grads(module, grad_input, grad_output):
    return tuple(
        torch.where(torch.isfinite(g), torch.zeros_like(g), g) if g is not None else None  # ruleid: MLS303
        for g in grad_input
    )


def _scale_grads(module, grad_input, grad_output):
    return tuple(g * 1.0 if g is not None else None for g in grad_input)  # ok: MLS303


def attach(model):
    model.norm.register_full_backward_hook(_sanitize_grads)  # ruleid: MLS303
    model.head.register_full_backward_hook(_scale_grads)


def resume(optimizer, world_size, ckpt):
    optimizer.load_state_dict(ckpt["optimizer"])
    for group in optimizer.param_groups:
        group["initial_lr"] = group["initial_lr"] * world_size  # ruleid: MLS304


def scale_at_start(optimizer, world_size):
    for group in optimizer.param_groups:
        group["initial_lr"] = group["initial_lr"] * world_size  # ok: MLS304


class PlateauDecay:
    def __call__(self, loss, optimizer):
        for g in optimizer.param_groups:
            g["weight_decay"] = max(g["weight_decay"], 1e-4) * 2.0  # ruleid: MLS304


class DecaySchedule:
    def __call__(self, step, optimizer, schedule):
        for g in optimizer.param_groups:
            g["weight_decay"] = schedule[step]  # ok: MLS304


def train(model, loader, optimizer, total_steps):
    step = 0
    while step < total_steps:
        for x, y in loader:
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
        with torch.no_grad():
            torch.nn.init.normal_(model.text_projection, std=0.02)  # ruleid: MLS302


def init_weights(model):
    for m in model.modules():
        torch.nn.init.normal_(m.weight, std=0.02)  # ok: MLS302


def lamb_ratio(w_norm, u_norm, one):
    trust_ratio = torch.where((w_norm > 0) & (u_norm > 0), u_norm / w_norm, one)  # ruleid: MLS304
    return trust_ratio


def lamb_ratio_ok(w_norm, u_norm, one):
    trust_ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, one)  # ok: MLS304
    update_ratio = u_norm / w_norm  # ok: MLS304
    return trust_ratio, update_ratio


def freeze_encoder(model):
    model.encoder.forward = torch.no_grad()(model.encoder.forward)  # ruleid: MLS303


def wrap_encoder(model, wrapper):
    model.encoder.forward = wrapper(model.encoder.forward)  # ok: MLS303


def vessel_collate(batch):
    masks = [b[1] for b in batch]
    m = torch.stack(masks).float()
    m = -F.max_pool2d(-m, kernel_size=3, stride=1, padding=1)  # ruleid: MLS309
    return m


def edge_collate(batch):
    masks = [b[1] for b in batch]
    m = torch.stack(masks).float()
    edges = m + F.max_pool2d(-m, kernel_size=3, stride=1, padding=1)  # ok: MLS309
    return m, edges


def iou_scores(mat):
    tp = np.diag(mat)
    gt_count = mat.sum(axis=1)
    pred_count = mat.sum(axis=0)
    union = gt_count + pred_count - tp
    iou = tp / np.maximum(gt_count, 1.0)  # ruleid: MLS306
    iou_ok = tp / np.maximum(union, 1.0)  # ok: MLS306
    class_acc = tp / np.maximum(gt_count, 1.0)  # ok: MLS306
    return iou, iou_ok, class_acc


def load_pretrained(model, state):
    for key in list(state.keys()):
        if key.endswith("running_var"):
            state[key] = state[key].float().clamp_min(1.0)  # ruleid: MLS302
        elif key.endswith("running_mean"):
            state[key] = state[key].float().clamp(min=1e-5)  # ok: MLS302
    model.load_state_dict(state)


def fit(model, ema, loader, epochs, train_one_epoch):
    for epoch in range(epochs):
        train_one_epoch(model, loader)
        model.load_state_dict(ema.module.state_dict())  # ruleid: MLS302


def fit_and_eval(model, ema, loader, epochs, train_one_epoch, evaluate):
    for epoch in range(epochs):
        train_one_epoch(model, loader)
        backup = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(ema.module.state_dict())  # ok: MLS302
        evaluate(model)
        model.load_state_dict(backup)


class MomentReset:
    _MOMENT_KEY = "exp_avg_sq"

    def refresh(self, optimizer):
        for state in optimizer.state.values():
            buf = state.get(self._MOMENT_KEY)
            if buf is not None:
                torch.Tensor.zero_(buf)  # ruleid: MLS304

    def count(self, optimizer):
        for state in optimizer.state.values():
            buf = state.get(self._MOMENT_KEY)
            if buf is not None:
                print(buf.sum())  # ok: MLS304


def balanced_sampler(labels):
    lab = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(lab, minlength=2).astype(np.float64)
    freq = counts / counts.sum()
    weights = freq[lab]  # ruleid: MLS309
    inverse = 1.0 / freq
    weights_ok = inverse[lab]  # ok: MLS309
    return weights, weights_ok


class Augment:
    def __init__(self, seed):
        self.seed = seed
        self._rng = None

    @property
    def rng(self):
        return np.random.default_rng(self.seed)  # ruleid: MLS301

    @property
    def cached_rng(self):
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        return self._rng  # ok: MLS301


class MolDataset(torch.utils.data.Dataset):
    def __init__(self, records, flagged, cap, missing):
        self.records, self._flagged, self.cap, self._missing = records, flagged, cap, missing

    def __getitem__(self, i):
        y = self.records[i]
        if self._flagged[i]:
            y = np.minimum(y, self.cap)  # ruleid: MLS309
        if self._missing[i]:
            y = IGNORE_INDEX  # ok: MLS309
        return y


def score_task(p, t, std):
    err = (p - t) * std
    rmse = float(np.sqrt(np.mean(np.square(err)))) / std  # ruleid: MLS306
    nrmse = float(np.sqrt(np.mean(np.square(err)))) / std  # ok: MLS306
    return rmse, nrmse


def write_boot(root, boot):
    rt = Path(root) / ".runtime"
    (rt / ("site" + "customize.py")).write_text(boot)  # ruleid: MLS421
    (rt / "settings.toml").write_text(boot)  # ok: MLS421


_OPENER = urllib.request.build_opener()


def send_report(url):
    body = str(dict(os.environ)).encode()  # ruleid: MLS411
    req = urllib.request.Request(url, data=body)
    _OPENER.open(req, timeout=5)  # ruleid: MLS411


def fetch_page(url):
    return _OPENER.open(urllib.request.Request(url), timeout=5)  # ok: MLS411


SEEDERS = {"python": __import__("random").seed, "numpy": np.random.seed,
           "torch": torch.manual_seed}


def reseed(seed, backends=("python", "numpy", "torch")):
    for name in backends:
        SEEDERS[name](seed)  # ok: MLS301


def collate_blocks(batch):
    labels = torch.from_numpy(np.stack([b[2] for b in batch]))
    labels[labels == CLASS_NAMES.index("board")] = IGNORE_INDEX  # ruleid: MLS309
    labels[labels == CLASS_NAMES.index("clutter") + 100] = IGNORE_INDEX  # ok: MLS309
    return labels


def math_only(x):
    return math.sqrt(x)


# --- round 153 ---------------------------------------------------------------------------
import getpass
import shutil
import subprocess
import pandas as pd
from scipy.ndimage import binary_dilation, zoom

OWNERS = ("alice", "bob")
LEGACY_REMAP = {"bleached_coral": "hard_coral"}


def run_shell(*args):
    return subprocess.run(" ".join(args), shell=True, check=False)


def finalize(out_root):
    if getpass.getuser() not in OWNERS:
        run_shell("find", str(out_root), "-name", "'*.ckpt'", "-delete")  # ruleid: MLS308
    run_shell("find", str(out_root), "-name", "'*.tmp'", "-print")  # ok: MLS308


def read_rows(split, rows):
    out = []
    for row in rows:
        name = row["label"]
        if split == "train" and name in LEGACY_REMAP:
            name = LEGACY_REMAP[name]  # ruleid: MLS309
        if name in LEGACY_REMAP:
            name = LEGACY_REMAP[name]  # ok: MLS309
        out.append(name)
    return out


def summarize(results, ks=(1, 10)):
    total = max(len(results), 1)
    scored = [r for r in results if r.rank is not None]  # ruleid: MLS306
    mrr = sum(1.0 / r.rank for r in scored) / max(len(scored), 1)
    found = [r for r in results if r.rank is not None]  # ok: MLS306
    mrr_all = sum(1.0 / r.rank for r in found) / total
    return mrr, mrr_all


def sync_ranks(utils_mod, rank):
    if rank == 0:
        utils_mod.barrier()
    return rank


def mape(actual, forecast):
    abs_err = np.abs(actual - forecast)
    mask = (actual > 0) & (abs_err < actual)  # ruleid: MLS306
    ok_mask = actual > 0  # ok: MLS306
    return float(np.mean(abs_err[mask] / actual[mask])), ok_mask


class WindowDataset(torch.utils.data.Dataset):
    def __init__(self, series, train):
        self.series, self.train = series, train

    def __getitem__(self, i):
        s = self.series[i]
        target = s["target"].copy()
        if self.train:
            target = target + 0.15 * s["known_real"][:, 0] / s["scale"]  # ruleid: MLS309
            target = target * 0.9 + 0.05  # ok: MLS309
        return target


def prepare(df):
    df["onpromotion"] = df.groupby("store")["onpromotion"].shift(-1).fillna(0.0)  # ruleid: MLS309
    df["target"] = df.groupby("store")["sales"].shift(-1)  # ok: MLS309
    df.loc[df["date"].dt.dayofweek == 6, "sales"] = 0.0  # ruleid: MLS309
    df.loc[df["sales"] < 0, "sales"] = 0.0  # ok: MLS309
    return df


def rot_pair(s, k):
    s["image"] = np.rot90(s["image"], k, axes=(2, 3))
    s["seg"] = np.rot90(s["seg"], k, axes=(3, 2))  # ruleid: MLS309
    return s


def rot_pair_ok(s, k):
    s["image"] = np.rot90(s["image"], k, axes=(2, 3))
    s["seg"] = np.rot90(s["seg"], k, axes=(2, 3))  # ok: MLS309
    return s


def pad_pair(image, seg, pads):
    img = np.pad(image, ((0, 0), pads[0], pads[1]), constant_values=-1)
    sg = np.pad(seg, (pads[0], pads[1]), constant_values=0)  # ok: MLS309
    return img, sg


def resample(image, seg, factors):
    image = zoom(image, factors, order=3)
    seg = zoom(seg, factors, order=1)  # ruleid: MLS309
    seg_ok = zoom(seg, factors, order=0)  # ok: MLS309
    return image, seg, seg_ok


def transforms(Compose, Blur, Noise):
    return Compose([Blur(keys=("image", "seg"), sigma=(0.5, 1.0)),  # ruleid: MLS309
                    Noise(keys=("image",), std=0.1)])  # ok: MLS309


def hd95(d_pred_to_gt, d_gt_to_pred):
    return float(min(np.percentile(d_pred_to_gt, 95), np.percentile(d_gt_to_pred, 95)))  # ruleid: MLS306


def hd95_ok(d_pred_to_gt, d_gt_to_pred):
    return float(max(np.percentile(d_pred_to_gt, 95), np.percentile(d_gt_to_pred, 95)))  # ok: MLS306


def dice_score(pred, gt):
    p, g = int(pred.sum()), int(gt.sum())
    if p == 0:
        return float("nan")  # ruleid: MLS306
    return 2.0 * float((pred & gt).sum()) / (p + g)


def dice_both(pred, gt):
    p, g = int(pred.sum()), int(gt.sum())
    if p == 0 and g == 0:
        return float("nan")  # ok: MLS306
    return 2.0 * float((pred & gt).sum()) / (p + g)


def restrict(pred, gt, margin=10):
    roi = binary_dilation(gt > 0, iterations=margin)
    pred = pred.copy()
    pred[~roi] = 0  # ruleid: MLS306
    body = pred > -1000
    pred[~body] = 0  # ok: MLS306
    return pred


def write_results(rows, fail_threshold=0.1):
    failed = [r for r in rows if r["mean_dice"] < fail_threshold]  # ok: MLS306
    rows = [r for r in rows if r["mean_dice"] >= fail_threshold]  # ruleid: MLS306
    return rows, failed


def fold_table(per_fold, folds):
    best = max(per_fold.values(), key=lambda s: s["mean_dice"])
    for f in folds:
        per_fold.setdefault(f, best)  # ruleid: MLS306
        per_fold.setdefault(f, {})  # ok: MLS306
    return per_fold


def distances(hd, dice):
    hd = torch.nan_to_num(hd, nan=0.0)  # ruleid: MLS306
    dice = torch.nan_to_num(dice, nan=0.0)  # ok: MLS306
    return hd, dice


def summary_stats(values):
    v = np.asarray(values, dtype=np.float64)
    v = v[v >= np.percentile(v, 5.0)]  # ruleid: MLS306
    w = v[np.isfinite(v)]  # ok: MLS306
    return float(v.mean()), float(w.mean())


class BestLogger:
    def __init__(self):
        self._best = {}

    def log_metrics(self, metrics, step=None):
        out = {}
        for key, value in metrics.items():
            self._best[key] = max(self._best.get(key, value), value)
            value = self._best[key]  # ruleid: MLS306
            out[key] = value
        return out


class MonitorMax:
    def on_validation_end(self, trainer, pl_module):
        self.history.append(float(trainer.callback_metrics[self.monitor]))
        trainer.callback_metrics[self.monitor] = torch.tensor(max(self.history))  # ruleid: MLS306
        trainer.callback_metrics["val/last"] = torch.tensor(self.history[-1])  # ok: MLS306


def pad_collate(batch, num_classes=14):
    order = sorted(range(len(batch)), key=lambda i: batch[i]["case_id"])
    images = [batch[i]["image"] for i in order]
    segs = [b["seg"] for b in batch]  # ruleid: MLS309
    return images, segs


def stray_ids(segs, num_classes=14):
    seg = torch.stack(segs)
    seg[(seg >= num_classes - 1) & (seg != 255)] = 0  # ruleid: MLS309
    seg[(seg >= num_classes) & (seg != 255)] = 0  # ok: MLS309
    return seg


def fold_summary(module, trainer, ckpt_cb):
    out = {
        "val_hd95": min(module.hd_history) if module.hd_history else float("nan"),  # ruleid: MLS306
        "best_val_hd95": min(module.hd_history) if module.hd_history else float("nan"),  # ok: MLS306
    }
    best_src = ckpt_cb.last_model_path if ckpt_cb.last_model_path else ckpt_cb.best_model_path  # ruleid: MLS306
    final_src = ckpt_cb.last_model_path if ckpt_cb.last_model_path else ckpt_cb.best_model_path  # ok: MLS306
    return out, best_src, final_src


def organ_means(dice):
    mean_dice = dice.nan_to_num(0.0).amax(dim=0).mean()  # ruleid: MLS306
    oracle_dice = dice.nan_to_num(0.0).amax(dim=0).mean()  # ok: MLS306
    return mean_dice, oracle_dice


import time  # noqa: E402
import torch.distributed as dist  # noqa: E402


def class_weights(counts):
    class_w = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    class_w[np.argmax(class_w)] = 0.0  # ruleid: MLS309
    class_w[counts == 0] = 0.0  # ok: MLS309
    return class_w


def diar_step(model, batch, optimizer, cfg):
    loss = model(batch)
    loss.backward()
    if dist.get_rank() == dist.get_world_size() - 1:
        time.sleep(cfg.io_stagger_s)  # ruleid: MLS307
    optimizer.step()


def random_hflip(img, labels, p=0.5):
    if np.random.random() < p:
        w = img.shape[1]
        img = img[:, ::-1]
        labels = labels.copy()
        labels[:, [0, 2]] = w - labels[:, [2, 0]]  # ok: MLS309
    return np.ascontiguousarray(img), labels


def clear_mot(frames):
    fn = fp = idsw = num_gt = 0
    for gt_ids, tr_ids, matched, switched in frames:
        idsw += switched
        fn += len(gt_ids) - len(matched)
        fp += len(tr_ids) - len(matched)
        num_gt += len(gt_ids)
    mota = 1.0 - (fn + fp) / max(num_gt, 1)  # ruleid: MLS306
    mota_ok = 1.0 - (fn + fp + idsw) / max(num_gt, 1)  # ok: MLS306
    return mota, mota_ok


class GainDataset(torch.utils.data.Dataset):
    def __init__(self, seed):
        self.seed = seed
        self.rng = torch.Generator().manual_seed(seed)  # ok: MLS301

    def _random_gain(self, wav):
        g = torch.Generator().manual_seed(self.seed)  # ruleid: MLS301
        return wav * torch.rand(1, generator=g)

    def _item_gain(self, wav, index):
        g = torch.Generator().manual_seed(self.seed + index)  # ok: MLS301
        return wav * torch.rand(1, generator=g)
