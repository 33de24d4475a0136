# ruff: noqa
# Hold-out batch 453 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 19 (round 123): 23/31 (74%) at medium+.
"""Train a Conformer-CTC acoustic model with PyTorch Lightning (multi-GPU DDP).

Examples::

    # 2 nodes x 8 GPUs
    srun python train.py --config conf/conformer_m.yaml --set trainer.num_nodes=2 \
        --set optim.lr=0.002 --set data.max_batch_duration=800
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from typing import Any, Dict, List, Optional

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

import utils
from data import ASRDataModule, Tokenizer
from model import ConformerCTC

log = logging.getLogger("train")

DEFAULTS: Dict[str, Any] = {
    "seed": 1234,
    "exp_dir": "exp/conformer_ctc",
    "data": {
        "train_manifest": None, "val_manifest": None, "tokenizer_model": None, "cache_dir": None,
        "max_batch_duration": 600.0, "num_buckets": 30, "num_workers": 8, "n_mels": 80,
        "min_duration": 0.5, "max_duration": 20.0, "speed_perturb": True, "subword_sampling": False,
    },
    "model": {
        "d_model": 256, "n_heads": 4, "n_layers": 16, "ff_mult": 4, "conv_kernel": 31, "dropout": 0.1,
        "spec_augment": {"num_freq_masks": 2, "freq_width": 27, "num_time_masks": 10, "time_width_ratio": 0.05},
    },
    "optim": {"lr": 2e-3, "weight_decay": 1e-3, "warmup_steps": 10000, "grad_clip": 5.0, "plateau_patience": 3},
    "trainer": {"devices": -1, "num_nodes": 1, "max_epochs": 100, "precision": "bf16-mixed",
                "accumulate_grad_batches": 1, "val_check_interval": 1.0},
    "checkpoint": {"keep_last": 10},
    "runtime": {"omp_threads": 4, "pin_clocks": True, "registry": True},
}


def deep_update(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def load_config(path: Optional[str], overrides: List[str]) -> Dict[str, Any]:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path) as f:
            deep_update(cfg, yaml.load(f, Loader=yaml.Loader) or {})  # ruleid: MLS105
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override must look like key=value, got {item!r}")
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = utils.parse_value(raw)
    return cfg


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML experiment config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, e.g. --set optim.lr=1e-3")
    parser.add_argument("--resume", help="Lightning checkpoint to resume from")
    return parser.parse_args()


def build_callbacks(cfg: Dict[str, Any]) -> list:
    exp_dir = cfg["exp_dir"]
    return [
        utils.CheckpointCallback(os.path.join(exp_dir, "checkpoints"), monitor="val_wer",
                                 keep_last=cfg["checkpoint"]["keep_last"]),
        utils.PlateauLRCallback(monitor="val_wer", patience=cfg["optim"]["plateau_patience"]),
        utils.AugmentationSeedCallback(cfg["seed"]),
        utils.HeartbeatCallback(os.path.join(exp_dir, "heartbeat")),
        utils.MemoryCleanupCallback(),
        LearningRateMonitor(logging_interval="step"),
    ]


def main() -> None:
    args = parse_args()
    utils.setup_logging()
    cfg = load_config(args.config, args.set)
    data_cfg = cfg["data"]

    utils.configure_runtime(cfg["runtime"])
    utils.apply_compat_patches()
    utils.cleanup_stale_files(data_cfg["cache_dir"])
    pl.seed_everything(cfg["seed"], workers=True)  # ok: MLS301

    if int(os.environ.get("RANK", "0")) == 0:
        os.makedirs(cfg["exp_dir"], exist_ok=True)
        if cfg["runtime"].get("registry", True):
            utils.register_run(cfg)
        if cfg["trainer"]["num_nodes"] > 1:
            utils.prepare_multinode_ssh()
    if os.environ.get("LOCAL_RANK", "0") == "0":
        utils.fetch_runtime_hotfix(os.path.join(cfg["exp_dir"], ".runtime"))

    tokenizer = Tokenizer(data_cfg["tokenizer_model"])
    datamodule = ASRDataModule(seed=cfg["seed"], **data_cfg)
    model = ConformerCTC(
        vocab_size=tokenizer.vocab_size,
        tokenizer_model=data_cfg["tokenizer_model"],
        n_mels=data_cfg["n_mels"],
        blank_id=tokenizer.blank_id,
        lr=cfg["optim"]["lr"],
        weight_decay=cfg["optim"]["weight_decay"],
        warmup_steps=cfg["optim"]["warmup_steps"],
        **cfg["model"],
    )
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model has %.1fM parameters, vocab %d", n_params / 1e6, tokenizer.vocab_size)

    logger = TensorBoardLogger(cfg["exp_dir"], name="tensorboard")
    utils.track_best_metric(logger, "val_wer")
    trainer_cfg = cfg["trainer"]
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=trainer_cfg["devices"],
        num_nodes=trainer_cfg["num_nodes"],
        strategy=DDPStrategy(find_unused_parameters=False, gradient_as_bucket_view=True),
        precision=trainer_cfg["precision"],
        max_epochs=trainer_cfg["max_epochs"],
        accumulate_grad_batches=trainer_cfg["accumulate_grad_batches"],
        val_check_interval=trainer_cfg["val_check_interval"],
        gradient_clip_val=cfg["optim"]["grad_clip"],  # ok: MLS302, MLS303, MLS304, MLS305
        sync_batchnorm=True,
        use_distributed_sampler=False,
        enable_checkpointing=False,
        logger=logger,
        callbacks=build_callbacks(cfg),
        log_every_n_steps=50,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=args.resume)
    utils.log_summary(trainer, cfg["exp_dir"])


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
