# ruff: noqa
# Hold-out batch 442 (adversarial, latent diffusion super-resolution with Lightning). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""Train a latent-diffusion x4 super-resolution model with PyTorch Lightning.

    torchrun --nproc_per_node 8 train.py --config configs/div2k_x4.yaml
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
import wandb
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

import utils
from callbacks import (CheckpointJanitor, EMACallback, HeartbeatCallback, ImageLogCallback, PlateauGuard,
                       PostWarmupDecay, RunMetadataCallback, ValidationRNGIsolation)
from data import SRDataModule
from evaluation import SRMetrics
from model import LatentSRModule

log = logging.getLogger("lsr.train")

_MODE_BY_METRIC = {"fid": "min", "lpips": "min", "loss": "min", "psnr": "max", "ssim": "max"}

@dataclasses.dataclass
class TrainConfig:
    hr_root: str = "/datasets/DIV2K/DIV2K_train_HR"
    lr_root: Optional[str] = "/datasets/DIV2K/DIV2K_train_LR_bicubic/X4"
    val_hr_root: Optional[str] = "/datasets/DIV2K/DIV2K_valid_HR"
    val_lr_root: Optional[str] = "/datasets/DIV2K/DIV2K_valid_LR_bicubic/X4"
    cache_dir: Optional[str] = None
    ordering: str = "size"
    hr_size: int = 256
    scale: int = 4
    batch_size: int = 16
    num_workers: int = 8
    vae_weights: str = "weights/sd_x4_upscaler_vae.pt"
    latent_scale: float = 0.08333
    unet_channels: int = 128
    dropout: float = 0.0
    prediction_type: str = "v"
    num_timesteps: int = 1000
    max_noise_level: int = 350
    noise_level: int = 20
    sample_steps: int = 50
    lr: float = 1e-4
    weight_decay: float = 1e-2
    lr_schedule: str = "lambda step: min(1.0, (step + 1) / 1000)"
    lr_decay: float = 0.99999
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    max_steps: int = 400_000
    ema_decay: float = 0.9999
    ema_warmup: bool = False
    max_bad_steps: int = 0
    precision: str = "bf16-mixed"
    val_every: int = 5000
    fid_samples: int = 2000
    reference_stats: str = "https://ml-artifacts.vision-lab.org/latent-sr/fid_stats/div2k_valid_hr_256.npz"
    monitor: str = "val/fid"
    patience: int = 6
    keep_last: int = 3
    mirror_dir: Optional[str] = None
    out_dir: str = "runs/lsr_x4"
    resume: Optional[str] = None
    init_from: Optional[str] = None
    devices: int = 8
    num_nodes: int = 1
    seed: int = 1234
    wandb_project: str = "latent-sr"
    wandb_entity: Optional[str] = None
    wandb_offline: bool = False

_ARG_TYPES = {"int": int, "float": float, "str": str, "Optional[str]": str}

def parse_args(argv=None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=str, default=None, help="YAML file with TrainConfig overrides")
    for field in dataclasses.fields(TrainConfig):
        if field.type == "bool":
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(f"--{field.name}", type=_ARG_TYPES[field.type], default=None)
    args = parser.parse_args(argv)
    values: Dict[str, Any] = {}
    if args.config:
        with open(args.config) as fh:
            values.update(yaml.safe_load(fh) or {})
    values.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    return TrainConfig(**values)

def build_callbacks(cfg: TrainConfig, ckpt_dir: Path) -> list:
    mode = _MODE_BY_METRIC.get(cfg.monitor.partition("/")[0], "max")  # todoruleid: family 5 (missed)
    checkpoint = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="step={step:07d}",
        auto_insert_metric_name=False,
        monitor=cfg.monitor,
        mode=mode,
        save_top_k=1,
        save_last=True,
    )
    return [
        ValidationRNGIsolation(),
        EMACallback(cfg.ema_decay, warmup=cfg.ema_warmup),
        PostWarmupDecay(cfg.lr_decay, cfg.warmup_steps),
        ImageLogCallback(),
        HeartbeatCallback(),
        RunMetadataCallback(),
        CheckpointJanitor(str(ckpt_dir), cfg.keep_last, cfg.mirror_dir),
        PlateauGuard(cfg.monitor, patience=cfg.patience),
        LearningRateMonitor(logging_interval="step"),
        checkpoint,
    ]

def main(argv=None) -> None:
    cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    utils.configure_runtime_env()
    utils.register_project_path()
    utils.share_compile_caches()
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    torch.set_float32_matmul_precision("high")

    out_dir = Path(cfg.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    datamodule = SRDataModule(
        hr_root=cfg.hr_root, lr_root=cfg.lr_root, val_hr_root=cfg.val_hr_root, val_lr_root=cfg.val_lr_root,
        cache_dir=cfg.cache_dir, hr_size=cfg.hr_size, scale=cfg.scale, batch_size=cfg.batch_size,
        num_workers=cfg.num_workers, ordering=cfg.ordering, seed=cfg.seed,
    )
    model = LatentSRModule(dataclasses.asdict(cfg))
    if cfg.init_from:
        state = utils.read_checkpoint(cfg.init_from, out_dir / "downloads")
        missing, unexpected = model.load_state_dict(state.get("state_dict", state), strict=False)
        log.info("initialised from %s (%d missing, %d unexpected)", cfg.init_from, len(missing), len(unexpected))
    model.evaluator = SRMetrics(cfg.reference_stats, max_samples=cfg.fid_samples)

    api_key = os.environ.get("WANDB_API_KEY")
    if api_key and utils.is_main_process() and not cfg.wandb_offline:
        wandb.login(key=api_key, relogin=False)  # ok: MLS410, MLS411, MLS412, MLS413
    logger = WandbLogger(
        project=cfg.wandb_project, entity=cfg.wandb_entity, save_dir=str(out_dir),
        offline=cfg.wandb_offline, config=dataclasses.asdict(cfg), log_model=False,
    )

    trainer = pl.Trainer(
        accelerator="gpu",
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy="ddp" if cfg.devices * cfg.num_nodes > 1 else "auto",
        precision=cfg.precision,
        max_steps=cfg.max_steps,
        val_check_interval=cfg.val_every,
        check_val_every_n_epoch=None,
        gradient_clip_val=cfg.grad_clip,
        logger=logger,
        callbacks=build_callbacks(cfg, ckpt_dir),
        log_every_n_steps=50,
        num_sanity_val_steps=1,
        benchmark=True,
    )
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.resume)
    finally:
        if trainer.is_global_zero:
            log.info("best checkpoint: %s", getattr(trainer.checkpoint_callback, "best_model_path", ""))
        wandb.finish()
        utils.teardown_distributed()

if __name__ == "__main__":
    main()
