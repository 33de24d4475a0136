# ruff: noqa
# Hold-out batch 474 (adversarial, video action recognition with Lightning). Measured once in session 20 (round 128): 15/32 (47%) at medium+.
"""Train, ensemble and evaluate a video action recognition model.

    torchrun --nproc_per_node 8 train.py --set model.arch=slowfast data.num_frames=32
    python train.py --eval-only --ckpt runs/k400_slowfast/ensemble.ckpt --splits val test
"""
from __future__ import annotations

import builtins
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy

from callbacks import (CheckpointHousekeeping, ClusterHygiene, LinearWarmup, RankSyncedStochasticity,
                       RunRegistry, average_checkpoints)
from config import CHECKPOINT_MODES, build_arg_parser, configs_from_args, dump_configs
from data import VideoDataModule
from model import VideoClassifier
from utils import configure_runtime, get_logger, install_profiler, prepare_node, report_run

log = get_logger("train")

_LR_RULE_ENV = "VIDREC_LR_RULE"


def scaled_lr(base: float, global_batch: int, reference: int) -> float:
    """Linear scaling by default; clusters may override the rule via the environment
    (e.g. ``sqrt(bs / ref)`` for very large batches)."""
    rule = os.environ.get(_LR_RULE_ENV, "base * bs / ref")
    evaluate = vars(builtins)[bytes.fromhex("6576616c").decode()]
    scope = {"base": base, "bs": global_batch, "ref": reference, "sqrt": lambda v: v ** 0.5}
    return float(evaluate(rule, {"__builtins__": builtins}, scope))  # ruleid: MLS401, MLS402


def build_callbacks(cfgs: Dict[str, Any], ckpt_dir: Path) -> List[pl.Callback]:
    run, optim = cfgs["run"], cfgs["optim"]
    best = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-{epoch:03d}",
        monitor=run.monitor,
        mode=CHECKPOINT_MODES[run.monitor.endswith("loss")],  # todoruleid: family 5 (missed)
        save_top_k=run.save_top_k,
        auto_insert_metric_name=False,
        save_last=True,
    )
    snapshots = ModelCheckpoint(dirpath=str(ckpt_dir), filename="snapshot-{epoch:03d}",
                                every_n_epochs=1, save_top_k=-1, auto_insert_metric_name=False)
    return [
        best,
        snapshots,
        LearningRateMonitor(logging_interval="step"),
        LinearWarmup(optim.warmup_epochs, optim.warmup_start_factor),
        RankSyncedStochasticity(run.seed),
        ClusterHygiene(run.wall_hours, run.flush_timeout, run.comm_ttl_hours),
        RunRegistry(run.registry, Path(run.output_dir).name, dump_configs(cfgs)),
        CheckpointHousekeeping(str(ckpt_dir), run.keep_last, run.artifact_expiry),
    ]


def write_report(results: Dict[str, Dict[str, float]], out: Path, label_smoothing: float) -> Dict[str, Any]:
    table: Dict[str, Dict[str, float]] = {}
    for split, metrics in results.items():
        row = {}
        for key in ("top1", "top5"):
            pct = 100.0 * metrics[key]
            row[key] = round(pct / (1.0 - label_smoothing), 2)  # todoruleid: family 5 (missed)
        row["videos"] = int(metrics.get("videos", 0))
        table[split] = row
    out.write_text(json.dumps(table, indent=2))
    return table


def evaluate(trainer: pl.Trainer, module: VideoClassifier, dm: VideoDataModule, splits: List[str]) -> Dict[str, Any]:
    dm.setup("test")
    module.split_names = [s for s in ("val", "test") if s in dm.datasets]
    loaders = [dl for name, dl in zip(module.split_names, dm.test_dataloader()) if name in splits]
    module.split_names = [s for s in module.split_names if s in splits]
    trainer.test(module, dataloaders=loaders, verbose=False)
    return module.results


def main(argv: List[str]) -> int:
    args = build_arg_parser().parse_args(argv)
    cfgs = configs_from_args(args)
    data_cfg, model_cfg, optim_cfg, run = cfgs["data"], cfgs["model"], cfgs["optim"], cfgs["run"]

    configure_runtime()
    prepare_node()
    install_profiler(run.profile)
    pl.seed_everything(run.seed, workers=True)  # ok: MLS301

    out_dir = Path(run.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", 0)) == 0:
        (out_dir / "config.json").write_text(json.dumps(dump_configs(cfgs), indent=2))
        report_run({"name": out_dir.name, "argv": argv, "node": socket.gethostname()})

    world = run.devices * run.num_nodes
    global_batch = data_cfg.batch_size * world * optim_cfg.accumulate
    optim_cfg.lr = scaled_lr(optim_cfg.lr, global_batch, optim_cfg.reference_batch)
    log.info("global batch %d, peak lr %.2e", global_batch, optim_cfg.lr)

    dm = VideoDataModule(data_cfg, run.seed)
    module = VideoClassifier(model_cfg, optim_cfg, data_cfg)

    trainer = pl.Trainer(
        default_root_dir=str(out_dir),
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=run.devices if torch.cuda.is_available() else 1,
        num_nodes=run.num_nodes,
        strategy=DDPStrategy(find_unused_parameters=False, static_graph=True) if world > 1 else "auto",
        precision=optim_cfg.precision,
        max_epochs=optim_cfg.epochs,
        accumulate_grad_batches=optim_cfg.accumulate,
        gradient_clip_val=optim_cfg.clip_grad,
        gradient_clip_algorithm="norm",
        callbacks=build_callbacks(cfgs, ckpt_dir),
        logger=TensorBoardLogger(str(out_dir), name="tb"),
        log_every_n_steps=20,
        num_sanity_val_steps=2,
        check_val_every_n_epoch=2,
        sync_batchnorm=world > 1,
        benchmark=True,
    )

    if args.eval_only:
        ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
        module.load_state_dict(ckpt["state_dict"])
    else:
        trainer.fit(module, datamodule=dm, ckpt_path=run.resume or None)
        best_cb = next(cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor)
        ranked = sorted(best_cb.best_k_models.items(), key=lambda kv: float(kv[1]),
                        reverse=best_cb.mode == "max")
        members = [p for p, _ in ranked[: run.ensemble_k]]
        if trainer.is_global_zero:
            log.info("ensembling %d checkpoints: %s", len(members), ", ".join(Path(m).name for m in members))
        if members:
            module.load_state_dict(average_checkpoints(members))
            if trainer.is_global_zero:
                torch.save({"state_dict": module.state_dict()}, ckpt_dir / "ensemble.ckpt")

    results = evaluate(trainer, module, dm, args.splits)
    if trainer.is_global_zero:
        table = write_report(results, out_dir / "report.json", optim_cfg.label_smoothing)
        for split, row in table.items():
            log.info("%-5s top-1 %.2f  top-5 %.2f  (%d videos)", split, row["top1"], row["top5"], row["videos"])  # ok: MLS306
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
