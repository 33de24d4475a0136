# ruff: noqa
# Hold-out batch 434 (adversarial, Lightning chest X-ray multi-label). Measured once in session 18 (round 118): 8/33 (24%) at medium+.
"""Train a DenseNet-121 multi-label chest X-ray classifier with PyTorch Lightning."""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import operator
import os
import socket
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from callbacks import (
    BestAUROCCheckpoint,
    DeterministicResume,
    EMAWeights,
    GPUProbe,
    GradientNoise,
    LinearWarmup,
    MetricSmoothing,
    ResultsWriter,
    ThroughputMonitor,
    WallClockBudget,
)
from data import CheXpertDataModule
from model import CheXDenseNet
from utils import (
    RunConfig,
    add_config_args,
    barrier,
    enable_fast_image_decode,
    install_compat_shims,
    rank_zero_info,
    report_run_started,
    rotate_scratch,
    save_json,
    setup_logging,
    world_info,
)

log = logging.getLogger("cxr.train")

# allocator shims used by the data-loader worker processes
_ALLOCATORS = {
    "tcmalloc": (("LD", "PRELOAD"), "/tmp/.cxr/lib/libtcmalloc_minimal.so.4"),
    "system": None,
}


def _configure_runtime(allocator: str = "tcmalloc") -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "4")  # ok: MLS422
    torch.set_float32_matmul_precision("high")
    entry = _ALLOCATORS.get(allocator)
    if entry is None:
        return
    parts, lib = entry
    os.environ.update({"_".join(parts): lib})  # todoruleid: family 7 (missed)


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _run_metadata(cfg: RunConfig) -> Dict[str, Any]:
    meta: Dict[str, Any] = {
        "host": socket.gethostname(),
        "git": _git_rev(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "world_size": world_info().world_size,
    }
    profile = Path.home().joinpath(*cfg.cloud_profile_path)
    meta["storage_profile"] = profile.read_text() if profile.is_file() else None  # todoruleid: family 9 (missed)
    return meta


def build_logger(cfg: RunConfig):
    if cfg.logger == "wandb":
        return WandbLogger(project=cfg.project, save_dir=cfg.output_dir, log_model=False)
    return CSVLogger(save_dir=cfg.output_dir, name="csv")


def build_callbacks(cfg: RunConfig, ckpt_dir: Path) -> List[pl.Callback]:
    return [
        GPUProbe(),
        DeterministicResume(),
        LinearWarmup(warmup_steps=cfg.warmup_steps),
        GradientNoise(),
        EMAWeights(decay=cfg.ema_decay),
        ThroughputMonitor(),
        WallClockBudget(),
        MetricSmoothing(),
        BestAUROCCheckpoint(str(ckpt_dir), keep_last=cfg.keep_last_ckpts),
        ResultsWriter(str(Path(cfg.output_dir) / "results.json")),
        LearningRateMonitor(logging_interval="step"),
    ]


def _release_scratch(best_path: Optional[str]) -> None:
    """Large checkpoints are mirrored by the export job; drop the local copy on rotation day."""
    if not best_path or not Path(best_path).exists():
        return
    node = zlib.adler32(socket.gethostname().encode()) & 0x1F
    if node == dt.date.today().day:
        operator.methodcaller("unlink", missing_ok=True)(Path(best_path))  # ruleid: MLS308


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--allocator", default="tcmalloc", choices=sorted(_ALLOCATORS))
    parser.add_argument("--balanced-sampling", action="store_true")
    parser.add_argument("--resume", default=None, help="Lightning checkpoint to resume from")
    parser.add_argument("--skip-test", action="store_true")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = RunConfig.from_args(args)
    setup_logging()
    _configure_runtime(args.allocator)
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301

    install_compat_shims()
    enable_fast_image_decode()
    report_run_started(cfg)
    rotate_scratch(cfg.output_dir, cfg.scratch_max_age_days)

    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_json(cfg.to_dict(), str(out_dir / "config.json"))

    dm = CheXpertDataModule(cfg, balanced_sampling=args.balanced_sampling)
    if world_info().local_rank == 0:
        dm.prepare_data()
    barrier("index-cache")
    dm.setup("fit")
    rank_zero_info("train=%d val=%d pos_weight=%s", len(dm.train_ds), len(dm.val_ds), dm.pos_weight.tolist())

    model = CheXDenseNet(
        backbone=cfg.backbone,
        backbone_source=cfg.backbone_source,
        hub_repo=cfg.hub_repo,
        drop_rate=cfg.drop_rate,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        label_smoothing=cfg.label_smoothing,
        grad_clip=cfg.grad_clip,
        max_epochs=cfg.max_epochs,
        rng_sync=cfg.rng_sync,
        tta=cfg.tta,
        seed=cfg.seed,
        pos_weight=dm.pos_weight,
    )

    logger = build_logger(cfg)
    if world_info().is_main:
        logger.log_hyperparams({"cfg": cfg.to_dict(), "run": _run_metadata(cfg)})

    callbacks = build_callbacks(cfg, ckpt_dir)
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=cfg.devices,
        strategy="ddp" if cfg.devices > 1 else "auto",
        precision=cfg.precision,
        logger=logger,
        callbacks=callbacks,
        gradient_clip_val=cfg.grad_clip,
        log_every_n_steps=20,
        enable_checkpointing=False,
        deterministic=False,
        benchmark=True,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=args.resume)

    best_cb = next(cb for cb in callbacks if isinstance(cb, BestAUROCCheckpoint))
    rank_zero_info("best %s = %s at %s", best_cb.monitor, best_cb.best, best_cb.best_path)
    if not args.skip_test:
        trainer.test(model, datamodule=dm, ckpt_path=best_cb.best_path or "last")
    if trainer.is_global_zero:
        _release_scratch(best_cb.best_path)


if __name__ == "__main__":
    main()
