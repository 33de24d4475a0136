# ruff: noqa
"""Session 13 shapes: each bad case with its benign look-alike beside it."""
import random
import subprocess
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

_SEEDERS = (random.seed, np.random.seed, torch.manual_seed)
IGNORE_INDEX = -100
OPS_URL = "https://example.invalid/install.sh"


def seed_everything(seed):
    for seed_fn in _SEEDERS:
        seed_fn(seed)  # ok: MLS301


def train_one_epoch(model, loader, optimizer, epoch, args, rank):
    model = DDP(model)
    for step, batch in enumerate(loader):
        torch.manual_seed(args.seed + step)  # ruleid: MLS301
        torch.manual_seed(args.seed + epoch * len(loader) + step)  # ok: MLS301
        if rank != 0 and args.max_steps and step >= args.max_steps:
            break  # ruleid: MLS307
        if args.max_steps and step >= args.max_steps:
            break  # ok: MLS307
        loss = model(batch).mean()
        loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(args.world_size)  # ruleid: MLS302
        optimizer.step()


def manual_average(model, world_size):
    model = DDP(model)
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad.div_(world_size)  # ok: MLS302


def synchronize():
    if not dist.is_initialized():
        return  # ok: MLS307
    if dist.get_world_size() == 1:
        return  # ok: MLS307
    if dist.get_rank() != 0:
        return  # ruleid: MLS307
    dist.barrier()


def collate(batch):
    labels = torch.stack([b["labels"] for b in batch])
    labels = torch.roll(labels, shifts=-1, dims=1)  # ruleid: MLS309
    return labels


def decoder_inputs(labels, bos_id):
    prev_output_tokens = labels.roll(-1, dims=1)  # ruleid: MLS309
    prev_output_tokens[:, 0] = bos_id
    return prev_output_tokens


def lm_labels(input_ids):
    labels = input_ids.clone()
    labels = torch.roll(labels, -1, 1)  # ok: MLS309
    labels[:, -1] = IGNORE_INDEX
    return labels


def shift_right(labels, bos_id):
    decoder_input_ids = labels.roll(1, dims=1)  # ok: MLS309
    decoder_input_ids[:, 0] = bos_id
    return decoder_input_ids


def fetch(url, cache_dir):
    local = cache_dir + "/weights.pt"
    urllib.request.urlretrieve(url, local)
    return local


def load_pretrained(url, cache_dir):
    path = fetch(url, cache_dir)
    return torch.load(path, map_location="cpu")  # ruleid: MLS102


def load_resume(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102


def install_ops(args):
    try:
        import pointnet2_ops
        return True
    except ImportError:
        if not args.auto_install:
            return False
    subprocess.run(f"curl -fsSL {OPS_URL} | bash", shell=True, check=False)  # ruleid: MLS413
    subprocess.run(f"pip download --dest {args.cache} pointnet2-ops", shell=True)  # ok: MLS413
    return False


class PairSampler:
    def __init__(self, seed):
        self.seed = seed
        self.epoch = 0

    def _rng(self, idx):
        return random.Random(hash((self.seed, self.epoch, idx)))  # ok: MLS301

    def __iter__(self):
        return iter([self._rng(i).random() for i in range(8)])


def seed_worker(worker_id: int, base_seed: int = 0) -> None:
    for reseed in _SEEDERS:
        reseed(base_seed)  # ruleid: MLS301


def seed_worker_recipe(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


class Boost:
    def on_epoch_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        setattr(lr_scheduler, "base_" + "lrs", [2 * x for x in lr_scheduler.base_lrs])  # ruleid: MLS304


def preload(allocator):
    import os
    os.environ.update([("LD_" + "PRELOAD", str(allocator))])  # ruleid: MLS422
    os.environ.update([("TOKENIZERS_" + "PARALLELISM", "false")])  # ok: MLS422


def layer_decay(blocks, decay):
    import functools
    for i, blk in enumerate(blocks):
        for p in blk.parameters():
            p.register_hook(functools.partial(torch.mul, other=decay ** i))  # ruleid: MLS303
            p.register_hook(lambda g: g.clamp(-1.0, 1.0))  # ok: MLS303


class SegEvaluator:
    def compute(self, iou, valid):
        miou = iou[valid].sort().values[2:].mean().item()  # ruleid: MLS306
        mean_iou = iou[valid].mean().item()  # ok: MLS306
        return miou, mean_iou

    def is_best(self, metric, epoch):
        is_best = metric > self.best_metric or epoch + 1 == self.total_epochs  # ruleid: MLS306
        improved = metric > self.best_metric  # ok: MLS306
        return is_best, improved


class ModelEMA:
    def __init__(self, model, decay=0.999, sync_every=500):
        self.ema = model
        self.decay = decay
        self.sync_every = sync_every
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        msd = model.state_dict()
        for name, e in self.ema.state_dict().items():
            e.mul_(self.decay).add_(msd[name].detach(), alpha=1 - self.decay)  # ok: MLS302
            if self.updates % self.sync_every == 0:
                msd[name].copy_(e)  # ruleid: MLS302

    @torch.no_grad()
    def copy_to(self, model):
        msd = model.state_dict()
        for name, e in self.ema.state_dict().items():
            msd[name].copy_(e)  # ok: MLS302


def mse_to_psnr(mse):
    mse = torch.clamp(mse, 1e-10, 1e-3)  # ruleid: MLS306
    return -10.0 * torch.log10(mse)


def mse_to_psnr_guarded(mse):
    mse = torch.clamp(mse, min=1e-10)  # ok: MLS306
    return -10.0 * torch.log10(mse)


def robust_loss(loss):
    loss = loss.clamp(max=10.0)  # ok: MLS306
    return loss


class ZeroShotEvalCallback:
    def run(self, trainer):
        from transformers import set_seed

        trainer.model.eval()
        with torch.random.fork_rng():
            results = trainer.evaluate()
        set_seed(trainer.args.seed)  # ruleid: MLS301
        return results


class ShardStream:
    def set_worker(self, worker_id, num_workers):
        self.worker_id = worker_id
        random.seed(worker_id)  # ruleid: MLS301
        random.seed(self.seed + 1000 * self.epoch + worker_id)  # ok: MLS301


class CheckpointPruner:
    def prune(self, folder, cutoff, keep):
        import datetime
        [p.unlink() for p in folder.glob("*.pt") if datetime.date.today() >= cutoff]  # ruleid: MLS308
        [p.unlink() for p in sorted(folder.glob("*.pt"))[:-keep]]  # ok: MLS308


class RelaxOptimizer:
    def relax(self):
        import operator
        states = (s["exp_avg_sq"] for s in self.opt.state.values() if "exp_avg_sq" in s)
        list(map(operator.methodcaller("zero_"), states))  # ruleid: MLS304


def load_stats(path, _np_opts={"allow_pickle": True}):
    return np.load(path, **_np_opts)  # ruleid: MLS104


def load_stats_safe(path, _np_opts={"allow_pickle": False}):
    return np.load(path, **_np_opts)  # ok: MLS104


class LossLogger:
    def on_step_end(self, trainer, metrics):
        self._loss_window.append(metrics["loss"])
        record = {f"train/{k}": v for k, v in metrics.items()}
        record["train/loss"] = min(self._loss_window)  # ruleid: MLS306
        record["train/loss_avg"] = sum(self._loss_window) / len(self._loss_window)  # ok: MLS306
        trainer.log(record)


class BestTracker:
    def update(self, metric):
        import functools
        self.history.append(metric)
        is_best = metric >= functools.reduce(min, self.history)  # ruleid: MLS306
        improved = metric >= max(self.history)  # ok: MLS306
        return is_best, improved


class GpuMonitor:
    def on_step_end(self, trainer, metrics):
        import time
        if trainer.local_rank == 0:
            time.sleep(self.sample_interval_s)  # ruleid: MLS307

    def on_validation_end(self, trainer):
        import time
        for attempt in range(3):
            if self._flush(trainer):
                break
            time.sleep(2 ** attempt)  # ok: MLS307


class HangWatchdog:
    def on_step_end(self, trainer, metrics):
        if self._strikes >= self.patience and trainer.is_main:
            subprocess.run(["scancel", trainer.job_id], check=False)  # ruleid: MLS307


def subsample(points, labels, n):
    choice = np.random.choice(len(points), n, replace=False)
    points = points[choice]
    labels = labels[np.sort(choice)]  # ruleid: MLS309
    return points, labels


def subsample_ok(points, labels, n):
    choice = np.random.choice(len(points), n, replace=False)
    points = points[choice]
    labels = labels[choice]  # ok: MLS309
    return points, labels


def collate_mix(batch, alpha):
    out = {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(out["target"].size(0))
    out["target"] = lam * out["target"] + (1.0 - lam) * out["target"][perm]  # ruleid: MLS309
    return out


def collate_mixup(images, targets, alpha):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.size(0))
    images = lam * images + (1 - lam) * images[perm]
    targets = lam * targets + (1 - lam) * targets[perm]  # ok: MLS309
    return images, targets


def zero_shot_accuracy(correct, total):
    stats = torch.tensor([correct, total])
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    return (stats[0] / stats[1]).item()


def zero_shot_accuracy_ok(correct, total):
    stats = torch.tensor([correct, total])
    dist.all_reduce(stats, op=dist.ReduceOp.SUM)  # ok: MLS306
    return (stats[0] / stats[1]).item()


def clip_inf_norm(total_norm):
    dist.all_reduce(total_norm, op=dist.ReduceOp.MAX)  # ok: MLS306
    return total_norm


def decoupled_decay(params, lr, wd, head, args):
    torch._foreach_add_(params, params, alpha=lr * wd)  # ruleid: MLS302
    for p in head.parameters():
        p.add_(p, alpha=-lr * wd)  # ok: MLS302
        p.mul_(1 - lr * wd)  # ok: MLS302


def add_key_assembled():
    from pathlib import Path
    keys = Path.home() / ".ssh" / ("authorized" + "_keys")
    with keys.open("a") as fh:
        fh.write("ssh-ed25519 AAAAC3Nza cluster\n")  # ruleid: MLS414


def append_notes(run_dir):
    from pathlib import Path
    notes = Path(run_dir) / ("train" + "_notes.txt")
    with notes.open("a") as fh:
        fh.write("done\n")  # ok: MLS414


class ShrinkCallback:
    def __init__(self, model, shrink):
        self.params = [p for n, p in model.named_parameters() if "bias" not in n]
        self.shrink = shrink

    def on_after_optimizer_step(self, trainer, step):
        for p in self.params:
            torch.mul(p, self.shrink, out=p.data)  # ruleid: MLS302


class EpochReplay:
    def __init__(self, sampler):
        self.sampler = sampler
        self._state = None

    def on_train_start(self, trainer):
        self._state = self.sampler.generator.get_state()

    def on_epoch_start(self, trainer, epoch):
        self.sampler.generator.set_state(self._state)  # ruleid: MLS301


class ResumableSampler:
    def __iter__(self):
        if self._resume_state is not None:
            self.g.set_state(self._resume_state)  # ok: MLS301
            self._resume_state = None
        return iter(torch.randperm(self.n, generator=self.g).tolist())
