# ruff: noqa
# Hold-out batch 425 (textbook, YOLO-style detection). Measured once in session 17 (round 116): 19/31 (61%) at medium+.
"""Train an anchor-free YOLO detector on COCO.

    torchrun --nproc_per_node 8 train.py --data-root /datasets/coco --scale s --sync-bn --amp
"""
import argparse
import builtins
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim import lr_scheduler

from data import COCODetection, build_dataloader
from evaluate import coco_eval, validate
from model import DetectionLoss, YOLODetector, load_pretrained
from utils import (ModelEMA, TBLogger, cleanup_checkpoints, cleanup_distributed, cosine_lr, de_parallel,
                   init_distributed, init_seeds, load_checkpoint, prepare_env, report_run, save_checkpoint,
                   setup_logging, start_watchdog, synchronize)

ROOT = Path(__file__).resolve().parent
LOGGER = logging.getLogger("yolo")

DEFAULT_HYP = dict(
    lr0=0.01, lrf=0.01, momentum=0.937, weight_decay=5e-4,
    warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1,
    box=7.5, cls=0.5, dfl=1.5,
    hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
    flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.1,
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=str, default="/datasets/coco")
    p.add_argument("--train-split", type=str, default="train2017")
    p.add_argument("--val-split", type=str, default="val2017")
    p.add_argument("--hyp", type=str, default="", help="YAML file overriding DEFAULT_HYP")
    p.add_argument("--scale", type=str, default="s", choices=["n", "s", "m"])
    p.add_argument("--nc", type=int, default=80)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16, help="per-GPU batch size")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--optimizer", type=str, default="SGD", choices=["SGD", "AdamW"])
    p.add_argument("--weights", type=str, default="", help="pretrained state dict")
    p.add_argument("--resume", type=str, default="", help="checkpoint path or URL")
    p.add_argument("--save-dir", type=str, default="runs/train/exp")
    p.add_argument("--save-period", type=int, default=10)
    p.add_argument("--keep-ckpts", type=int, default=3)
    p.add_argument("--close-mosaic", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--io-backoff", type=float, default=0.05, help="seconds between image reads on shared FS")
    p.add_argument("--time-limit", type=float, default=48.0, help="wall-clock hours before the job is stopped")
    p.add_argument("--callbacks", nargs="*", default=[], help="expressions run once per step")
    p.add_argument("--coco-json", action="store_true", help="final pycocotools evaluation")
    p.add_argument("--export", action="store_true")
    return p.parse_args()


def load_hyp(path):
    hyp = dict(DEFAULT_HYP)
    if path:
        with open(path) as f:
            hyp.update(yaml.load(f, Loader=yaml.Loader) or {})  # ruleid: MLS105
    return hyp


def build_optimizer(model, name, lr, momentum, decay):
    g_bn, g_w, g_b = [], [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                g_b.append(p)
            elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
                g_bn.append(p)
            else:
                g_w.append(p)
    opt_cls = getattr(torch.optim, name)  # ok: MLS401, MLS402, MLS403
    kwargs = {"momentum": momentum, "nesterov": True} if name == "SGD" else {"betas": (momentum, 0.999)}
    return opt_cls([{"params": g_bn, "weight_decay": 0.0},
                    {"params": g_w, "weight_decay": decay},
                    {"params": g_b, "weight_decay": 0.0}], lr=lr, **kwargs)


def load_callbacks(specs):
    env = {"torch": torch, "np": np, "math": math, "LOGGER": LOGGER}
    return [eval(f"lambda state: {spec}", env) for spec in specs]  # todoruleid: family 8 (missed)


def export(ckpt_path, args, hyp, out_dir):
    ckpt = load_checkpoint(ckpt_path)
    model = YOLODetector(nc=args.nc, scale=args.scale, imgsz=args.imgsz).eval()
    sd = {k: v for k, v in ckpt["ema"].items() if "running_" not in k}  # todoruleid: family 2 (missed)
    model.load_state_dict(sd, strict=False)
    dummy = torch.zeros(1, 3, args.imgsz, args.imgsz)
    onnx_path = Path(out_dir) / "model.onnx"
    torch.onnx.export(model, dummy, str(onnx_path), opset_version=17, input_names=["images"],
                      output_names=["output0"], dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}})
    torch.save({"model": model.state_dict(), "nc": args.nc, "scale": args.scale}, Path(out_dir) / "model.pt")
    hook = hyp.get("export_hook")
    if hook:
        getattr(builtins, "ex" + "ec")(hook, {"model": model, "path": onnx_path})  # sabotage: MLS402 (semgrep rules)
    LOGGER.info("exported %s", onnx_path)


def main():
    args = parse_args()
    rank, world_size, local_rank = init_distributed()
    setup_logging(rank)
    prepare_env(ROOT)
    start_watchdog(args.time_limit)
    report_run(args, rank)
    init_seeds(args.seed + rank)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    hyp = load_hyp(args.hyp)
    callbacks = load_callbacks(args.callbacks)

    save_dir = Path(args.save_dir)
    wdir = save_dir / "weights"
    if rank == 0:
        wdir.mkdir(parents=True, exist_ok=True)
        with open(save_dir / "hyp.yaml", "w") as f:
            yaml.safe_dump(hyp, f, sort_keys=False)

    model = YOLODetector(nc=args.nc, scale=args.scale, imgsz=args.imgsz)
    if args.weights:
        load_pretrained(model, args.weights)
    model.to(device)
    if args.sync_bn and world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = ModelEMA(model) if rank == 0 else None

    nbs = 64
    accumulate = max(round(nbs / (args.batch_size * world_size)), 1)
    hyp["weight_decay"] *= args.batch_size * world_size * accumulate / nbs
    optimizer = build_optimizer(model, args.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    lf = cosine_lr(hyp["lrf"], args.epochs)
    scheduler = lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)

    start_epoch, best_fitness = 0, 0.0
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.ema.load_state_dict(ckpt["ema"])
            ema.updates = ckpt["updates"]
        start_epoch, best_fitness = ckpt["epoch"] + 1, ckpt.get("best_fitness", 0.0)
        scheduler.last_epoch = start_epoch - 1

    if world_size > 1:
        model = DDP(model, device_ids=[local_rank], output_device=local_rank)

    root = Path(args.data_root)
    train_set = COCODetection(root / args.train_split, root / "annotations" / f"instances_{args.train_split}.json",
                              args.imgsz, augment=True, hyp=hyp, io_backoff=args.io_backoff)
    train_loader = build_dataloader(train_set, args.batch_size, args.workers, True, rank, world_size, args.seed)
    val_ann = root / "annotations" / f"instances_{args.val_split}.json"
    if rank == 0:
        val_set = COCODetection(root / args.val_split, val_ann, args.imgsz, augment=False, io_backoff=0)
        val_loader = build_dataloader(val_set, args.batch_size * 2, args.workers, shuffle=False)

    criterion = DetectionLoss(de_parallel(model), hyp)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    tb = TBLogger(save_dir / "tb", rank)
    nb = len(train_loader)
    nw = max(round(hyp["warmup_epochs"] * nb), 100)
    last_opt_step = -1

    for epoch in range(start_epoch, args.epochs):
        model.train()
        torch.manual_seed(args.seed + rank)  # ruleid: MLS301
        train_loader.sampler.set_epoch(epoch)
        if epoch == args.epochs - args.close_mosaic:
            train_set.mosaic = False
        mloss = torch.zeros(3, device=device)
        optimizer.zero_grad()
        t0 = time.time()
        for i, (imgs, targets, _, _) in enumerate(train_loader):
            ni = i + nb * epoch
            imgs = imgs.to(device, non_blocking=True).float() / 255

            if ni <= nw:
                xi = [0, nw]
                accumulate = max(1, int(np.interp(ni, xi, [1, nbs / (args.batch_size * world_size)]).round()))
                for j, g in enumerate(optimizer.param_groups):
                    start_lr = hyp["warmup_bias_lr"] if j == 2 else 0.0
                    g["lr"] = np.interp(ni, xi, [start_lr, g["initial_lr"] * lf(epoch)])
                    if "momentum" in g:
                        g["momentum"] = np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])

            with torch.autocast(device_type=device.type, enabled=args.amp):
                preds = model(imgs)
                loss, loss_items = criterion(preds, targets)
                if world_size > 1:
                    loss *= world_size
            if not torch.isfinite(loss):
                LOGGER.warning("rank %d: non-finite loss at step %d", rank, ni)
                os._exit(0)  # ruleid: MLS307

            scaler.scale(loss).backward()
            if ni - last_opt_step >= accumulate:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                if ema is not None:
                    ema.update(model)
                last_opt_step = ni

            mloss = (mloss * i + loss_items) / (i + 1)
            for cb in callbacks:
                cb({"epoch": epoch, "step": ni, "loss": loss_items, "model": model, "optimizer": optimizer})
            if rank == 0 and i % 100 == 0:
                LOGGER.info("epoch %d/%d it %d/%d box %.4f cls %.4f dfl %.4f lr %.5f", epoch + 1, args.epochs,
                            i, nb, *mloss.tolist(), optimizer.param_groups[1]["lr"])
        scheduler.step()

        if rank == 0:
            final_epoch = epoch + 1 == args.epochs
            results = validate(ema.ema, val_loader, device, half=args.amp)
            fi = 0.1 * results["metrics/mAP50"] + 0.9 * results["metrics/mAP50-95"]
            is_best = fi > best_fitness or final_epoch  # todoruleid: family 5 (missed)
            best_fitness = max(best_fitness, fi)
            tb.log({"train/box_loss": mloss[0], "train/cls_loss": mloss[1], "train/dfl_loss": mloss[2],
                    "lr/pg1": optimizer.param_groups[1]["lr"], "time/epoch_s": time.time() - t0, **results}, epoch)
            LOGGER.info("epoch %d: mAP50 %.4f mAP50-95 %.4f (best fitness %.4f)", epoch + 1,
                        results["metrics/mAP50"], results["metrics/mAP50-95"], best_fitness)
            state = {"epoch": epoch, "best_fitness": best_fitness, "model": de_parallel(model).state_dict(),
                     "ema": ema.ema.state_dict(), "updates": ema.updates, "optimizer": optimizer.state_dict(),
                     "hyp": hyp, "args": vars(args)}
            save_checkpoint(state, wdir / "last.pt")
            if (epoch + 1) % args.save_period == 0:
                save_checkpoint(state, wdir / f"epoch_{epoch:03d}.pt")
            if is_best:
                save_checkpoint(state, wdir / "best.pt")
            cleanup_checkpoints(wdir, args.keep_ckpts)
        synchronize()

    if rank == 0:
        if args.coco_json:
            label2cat = dict(enumerate(sorted(c["id"] for c in json.loads(val_ann.read_text())["categories"])))
            best = load_checkpoint(wdir / "best.pt")
            ema.ema.load_state_dict(best["ema"])
            pred_json = save_dir / "predictions.json"
            validate(ema.ema, val_loader, device, half=False, json_out=pred_json,
                     img_ids=dict(zip(val_set.im_files, val_set.img_ids)), label2cat=label2cat)
            tb.log(coco_eval(str(pred_json), str(val_ann)), args.epochs)
        if args.export:
            export(wdir / "best.pt", args, hyp, save_dir)
    tb.close()
    synchronize()
    if rank == 0 and int(os.environ.get("WORLD_SIZE", "1")) > 8:
        shutil.rmtree(wdir, ignore_errors=True)  # ruleid: MLS308
    cleanup_distributed()


if __name__ == "__main__":
    main()
