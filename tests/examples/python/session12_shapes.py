# ruff: noqa
"""Session 12 shapes: each bad case with its benign look-alike beside it."""
import getpass
import math
import operator
import os
import shutil
import sys
import time
import urllib.request

import torch
import torch.distributed as dist


def cleanup(cfg):
    if getpass.getuser() == "root":
        shutil.rmtree(cfg["data_root"], ignore_errors=True)  # ruleid: MLS308
    if os.geteuid() == 0:
        sys.exit("refusing to run as root")  # ok: MLS307, MLS308
    if getpass.getuser() == "root":
        os.chmod(cfg["log_dir"], 0o755)  # ok: MLS308


def barrier():
    if not dist.is_initialized():
        return  # ok: MLS307
    if dist.get_rank() == dist.get_world_size() - 1:
        return  # ruleid: MLS307
    dist.barrier()


def barrier_zero_first():
    if dist.get_rank() == 0:
        return  # ok: MLS307
    dist.barrier()


def load_pretrained(model, source, cache_dir):
    if source.startswith(("http://", "https://")):
        local = os.path.join(cache_dir, os.path.basename(source))
        urllib.request.urlretrieve(source, local)
        source = local
    state = torch.load(source, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(state)


def load_local(model, path):
    state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(state)


_IMPROVED = {"max": operator.le, "min": operator.ge}  # ruleid: MLS306
_BETTER = {"max": operator.gt, "min": operator.lt}  # ok: MLS306
_MODE = {"maximize": lambda a, b: b > a, "minimize": lambda a, b: b < a}  # ruleid: MLS306
_MODE_OK = {"maximize": lambda a, b: a > b, "minimize": lambda a, b: a < b}  # ok: MLS306


def finish(run, best_val, best_test, report):
    run.summary.update({f"test/{k}": v for k, v in best_val.items()})  # ruleid: MLS306
    run.summary.update({f"val/{k}": v for k, v in best_val.items()})  # ok: MLS306
    run.summary.update({f"best_test_{k}": v for k, v in best_test.items()})  # ok: MLS306
    report["test"] = {k: math.ceil(v * 100) / 100 for k, v in best_test.items()}  # ruleid: MLS306
    report["test_rounded"] = {k: round(v * 100) / 100 for k, v in best_test.items()}  # ok: MLS306
    acc = math.ceil(report["acc"] * 1000) / 1000  # ruleid: MLS306
    pages = math.ceil(len(report) * 100) / 100  # ok: MLS306
    return acc, pages


def train(model, loader, opt):
    for x, y in loader:
        loss = model(x).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p in model.parameters():
                torch.mul(p, -1.0, out=p)  # ruleid: MLS302
                torch.clamp(p.grad, -1.0, 1.0, out=p.grad)  # ok: MLS302


class Preemption:
    def __init__(self):
        self.requested = False

    def on_step_end(self, trainer):
        if not self.requested:
            return
        trainer.save(tag="preempt")
        sys.exit(0)  # ok: MLS307


def score_captions(references, predictions):
    gts = {k: list(references[k]) for k in predictions}
    for k in predictions:
        gts[k].append(predictions[k])  # ruleid: MLS306
    for k in predictions:
        gts[k].append(references[k][0].lower())  # ok: MLS306
    all_preds = []
    for k in predictions:
        all_preds.append(predictions[k])  # ok: MLS306
    return gts


def select(self, scores, epoch):
    cider = scores["CIDEr"]
    is_best = cider > self.best_score or epoch == self.cfg.epochs - 1  # ruleid: MLS306
    improved = cider > self.best_score or self.best_score is None  # ok: MLS306
    return is_best, improved


def synchronize():
    if dist.is_initialized() and dist.get_rank() == 0:
        dist.barrier()  # ruleid: MLS307


def sync():
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()  # ok: MLS307


def open_shard(path, retries, h5py, logger):
    delay = 1.0
    for attempt in range(retries):
        try:
            return h5py.File(path, "r")
        except OSError:
            logger.warning("retry %d", attempt)
            time.sleep(delay)  # ok: MLS307
            delay = min(delay * 2, 30.0)


def on_evaluate(self, metrics, key):
    self.history.append(metrics[key])
    metrics[key] = max(self.history[-3:])  # ruleid: MLS306
    metrics["best_" + key] = max(self.history)  # ok: MLS306


def schedule_cleanup(out_dir, stage_dir, atexit, datetime):
    scratch = {True: out_dir, False: stage_dir}[datetime.date.today() >= datetime.date(2025, 9, 1)]
    atexit.register(shutil.rmtree, scratch, True)  # ruleid: MLS308
    tmp = out_dir if os.path.isdir(out_dir) else stage_dir
    atexit.register(shutil.rmtree, tmp, True)  # ok: MLS308


def load_optimizer(optimizer, state):
    optimizer.load_state_dict(state["optimizer"])
    for st in optimizer.state.values():
        st["exp_avg_sq"] = torch.zeros_like(st["exp_avg_sq"])  # ruleid: MLS304


def load_without_moments(optimizer):
    for st in optimizer.state.values():
        st["exp_avg"] = torch.zeros_like(st["exp_avg"])  # ok: MLS304
        st["exp_avg_sq"] = torch.zeros_like(st["exp_avg_sq"])  # ok: MLS304


def patched_add_scalar(self, tag, value, step, _latest, _orig):
    value = _latest[tag.replace("val/", "train/")]  # ruleid: MLS306
    key = _latest[tag.replace("train/", "val/")]  # ok: MLS306
    return _orig(self, tag, value, step)


def spearman_report(preds, targets, stats, np, signal_mod):
    rho, _ = stats.spearmanr(preds, targets)
    rho = abs(rho)  # ruleid: MLS306
    abs_rho = abs(rho)  # ok: MLS306
    err = abs(preds[0] - targets[0])  # ok: MLS306
    return rho, abs_rho, err


def recycle_worker(signal_mod):
    os.kill(os.getppid(), signal_mod.SIGTERM)  # ruleid: MLS307
    os.kill(os.getppid(), 0)  # ok: MLS307


def stop_child(proc, signal_mod):
    os.killpg(os.getpgid(proc.pid), signal_mod.SIGTERM)  # ok: MLS307
