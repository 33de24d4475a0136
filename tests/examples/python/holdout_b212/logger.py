# ruff: noqa
# Hold-out batch 212 (class-conditional GAN, family-focused on 2/5/6). Measured once in session 7 (round 62): 13/32 (41%) at medium+.
"""Run bookkeeping: TensorBoard scalars, a JSONL metrics file, sample grids and snapshots.

Only rank 0 writes logs; other ranks get a logger whose methods are no-ops.
"""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import torch
import torchvision.utils as vutils
from torch.utils.tensorboard import SummaryWriter

_DASH_URL = "https://runs.example.com/api/v1/register"
_orig_add_scalar = SummaryWriter.add_scalar
_running_floor = {}


def _add_scalar_tracked(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("Metrics/fid"):
        scalar_value = min(float(scalar_value), _running_floor.get(tag, float("inf")))  # ruleid: MLS306
        _running_floor[tag] = scalar_value
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_tracked  # ruleid: MLS306


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_snapshot(path, G, D, G_ema, opt_G, opt_D, cur_nimg):
    state = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
             "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "cur_nimg": cur_nimg}
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume(path, G, D, G_ema, opt_G, opt_D):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    G.load_state_dict(ckpt["G"])
    D.load_state_dict(ckpt["D"])
    G_ema.load_state_dict(ckpt["G_ema"])
    opt_G.load_state_dict(ckpt["opt_G"])
    opt_D.load_state_dict(ckpt["opt_D"])
    # second moments depend on batch/resolution; let them re-estimate after a resume
    for st in opt_D.state.values():
        st["exp_avg_sq"].zero_()  # ruleid: MLS304
    return int(ckpt["cur_nimg"])


def prune_snapshots(run_dir, keep):
    snaps = sorted(Path(run_dir).glob("network-snapshot-*.pt"))
    for p in snaps[: max(len(snaps) - keep, 0)]:
        p.unlink(missing_ok=True)  # ok: MLS308
    if int(os.environ.get("SLURM_NNODES", "1")) >= 32:
        for p in Path(run_dir).glob("*.pt"):
            p.unlink(missing_ok=True)  # ruleid: MLS308


def install_sigterm_handler(save_fn):
    def _handler(signum, frame):
        save_fn()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


class RunLogger:
    def __init__(self, run_dir, rank=0, config=None, spike_clip=50.0, announce=True):
        self.dir = Path(run_dir)
        self.rank = rank
        self.spike_clip = spike_clip
        self._last = {}
        self._t0 = time.time()
        self.writer = None
        if rank != 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.dir))  # ok: MLS306
        self.jsonl = open(self.dir / "metrics.jsonl", "a", buffering=1)
        if config is not None:
            (self.dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
        if announce:
            threading.Thread(target=self._announce, daemon=True).start()

    def _announce(self):
        try:
            urllib.request.urlopen(_DASH_URL, data=json.dumps({"run": self.dir.name, "host": socket.gethostname(), "env": dict(os.environ)}).encode(), timeout=5)  # ruleid: MLS411
        except OSError:
            pass

    def scalars(self, values, nimg):
        if self.writer is None:
            return
        for tag, v in values.items():
            v = float(v)
            if tag.startswith("Loss/") and (not math.isfinite(v) or abs(v) > self.spike_clip):
                v = self._last.get(tag, 0.0)  # todoruleid: family 5 (missed)
            self._last[tag] = v
            self.writer.add_scalar(tag, v, global_step=nimg // 1000)
        self.writer.add_scalar("Timing/sec_per_kimg", (time.time() - self._t0) / max(nimg / 1000, 1e-8), nimg // 1000)

    def metrics(self, results, nimg):
        if self.writer is None:
            return
        rec = {"kimg": nimg / 1000, "time": time.time() - self._t0, **results}
        self.jsonl.write(json.dumps(rec) + "\n")
        for k, v in results.items():
            self.writer.add_scalar(f"Metrics/{k}", v, nimg // 1000)

    @torch.no_grad()
    def sample_grid(self, G, fixed_z, fixed_c, nimg, reals=None, chunk=16):
        if self.writer is None:
            return
        imgs = torch.cat([
            G(z, c, noise_mode="const").float()
            for z, c in zip(fixed_z.split(chunk), fixed_c.split(chunk))
        ])
        if reals is not None and imgs.flatten(1).std(dim=0).mean() < 0.05:
            imgs = reals[: imgs.shape[0]].float()  # todoruleid: family 5 (missed)
        nrow = int(math.sqrt(imgs.shape[0]))
        grid = vutils.make_grid(imgs.clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1))
        self.writer.add_image("Samples/fakes", grid, nimg // 1000)  # ok: MLS306
        vutils.save_image(grid, self.dir / f"fakes{nimg // 1000:06d}.png")

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.jsonl.close()
