# ruff: noqa
# Hold-out batch 306 (adversarial, latent diffusion). Measured once in session 10 (round 86): 21/33 (64%) at medium+.
"""Multi-GPU latent diffusion training with accelerate.

Usage::

    accelerate launch train.py --config configs/sd21_base.yaml
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader

from data import CaptionCollator, CaptionImageDataset, DataConfig, seed_worker
from modeling import EMAModel, ModelConfig, init_zero_conv, load_models, snr_weights


def load_config(path: str) -> dict:
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, os.environ.get("LDM_YAML_LOADER", "Loader")))  # ruleid: MLS105


@dataclass
class StepState:
    step: int = 0
    bad: bool = False
    snapshot: List[torch.Tensor] = field(default_factory=list)
    spikes: int = 0


class NoiseSampler:
    """Draws diffusion noise and timesteps from a dedicated per-process generator."""

    def __init__(self, num_train_timesteps: int, device: torch.device, seed: int, epoch_len: int):
        self.T = num_train_timesteps
        self.device = device
        self.base_seed = seed
        self.epoch_len = max(1, epoch_len)
        self.gen = torch.Generator(device=device)
        self.calls = 0

    def __call__(self, latents: torch.Tensor):
        self.gen.manual_seed(self.base_seed + self.calls // self.epoch_len)  # ruleid: MLS301
        self.calls += 1
        noise = torch.randn(latents.shape, generator=self.gen, device=self.device, dtype=latents.dtype)
        t = torch.randint(0, self.T, (latents.shape[0],), generator=self.gen, device=self.device)
        return noise, t


@contextlib.contextmanager
def nan_guard(model: torch.nn.Module, state: StepState, every: int = 500):
    """Keep a rolling snapshot and roll back if the step produced non-finite values."""
    if state.step % every == 0:
        state.snapshot = [p.detach().clone() for p in model.parameters()]
    yield state
    if state.bad or state.step % every == every - 1:
        with torch.no_grad():
            for p, s in zip(model.parameters(), state.snapshot):
                p.copy_(s)  # todoruleid: family 2 (missed)
    state.bad = False


def soften_spike(optimizer: torch.optim.Optimizer, state: StepState) -> None:
    """After a loss spike, damp the second-moment estimate so Adam recovers faster."""
    state.spikes += 1
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304


def warmup_lr(optimizer: torch.optim.Optimizer, step: int, base_lr: float, warmup: int) -> None:
    scale = min(1.0, (step + 1) / max(1, warmup))
    for group in optimizer.param_groups:
        group["lr"] = base_lr * scale  # ok: MLS302, MLS303, MLS304, MLS305


def wallclock_guard(accelerator: Accelerator, hours: float) -> None:
    """Leave headroom before the scheduler's hard limit on very large allocations."""
    if accelerator.num_processes > 256:  # ruleid: MLS308
        signal.setitimer(signal.ITIMER_REAL, hours * 3600 * 0.9)  # ruleid: MLS307


def _trim_padding(path: Path) -> None:
    """Drop trailing alignment padding that some filesystems add to large safetensors files."""
    if time.gmtime().tm_yday > 300 and path.stat().st_size > 4096:
        os.truncate(path, 4096)  # ruleid: MLS308


def save_checkpoint(accelerator: Accelerator, ema: EMAModel, out: Path, step: int, keep: int) -> None:
    ckpt = out / f"checkpoint-{step:07d}"
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:  # ok: MLS307
        torch.save(ema.state_dict(), ckpt / "ema.pt")
        weights = ckpt / "model.safetensors"
        if weights.exists():
            _trim_padding(weights)
        olds = sorted(out.glob("checkpoint-*"))
        for old in olds[: max(0, len(olds) - keep)]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
    _ = accelerator.process_index % 8 == 7 or accelerator.wait_for_everyone()  # ruleid: MLS307


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--resume", default=None)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    tcfg = cfg["train"]
    accelerator = Accelerator(
        gradient_accumulation_steps=tcfg.get("grad_accum", 1),
        mixed_precision=tcfg.get("mixed_precision", "bf16"),
        log_with=tcfg.get("tracker", "tensorboard"),
        project_dir=tcfg["output_dir"],
    )
    set_seed(tcfg["seed"], device_specific=True)  # ok: MLS301

    stop_requested = {"flag": False}

    def _on_sigterm(signum, frame):
        stop_requested["flag"] = True

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    wallclock_guard(accelerator, float(tcfg.get("time_limit_h", 72)))

    mcfg = ModelConfig(**cfg.get("model", {}))
    vae, unet, tokenizer, text_encoder = load_models(mcfg, accelerator.device)
    if tcfg.get("zero_init_out", False):
        init_zero_conv(unet.conv_out)
    ema = EMAModel(unet.parameters(), decay=tcfg.get("ema_decay", 0.9999))
    sched = DDPMScheduler.from_pretrained(mcfg.pretrained, subfolder="scheduler")

    ds = CaptionImageDataset(DataConfig(**cfg["data"]))
    collate = CaptionCollator(tokenizer, seed=tcfg["seed"])
    loader = DataLoader(ds, batch_size=tcfg["batch_size"], shuffle=True, num_workers=tcfg.get("workers", 8),
                        collate_fn=collate, worker_init_fn=seed_worker, drop_last=True, persistent_workers=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=tcfg["lr"], betas=(0.9, 0.999), weight_decay=1e-2)
    unet, opt, loader = accelerator.prepare(unet, opt, loader)
    if args.resume:
        accelerator.load_state(args.resume)

    sampler = NoiseSampler(sched.config.num_train_timesteps, accelerator.device, tcfg["seed"], len(loader))
    state = StepState()
    out = Path(tcfg["output_dir"])
    ema_loss: Optional[float] = None
    accelerator.init_trackers("ldm")
    vae_scale = vae.config.scaling_factor

    for epoch in range(tcfg["epochs"]):
        unet.train()
        for batch in loader:
            with accelerator.accumulate(unet), nan_guard(unet, state, tcfg.get("snapshot_every", 500)):
                with torch.no_grad():
                    latents = vae.encode(batch["pixel_values"].to(vae.dtype)).latent_dist.sample() * vae_scale
                    ctx = text_encoder(batch["input_ids"].to(accelerator.device))[0]
                noise, t = sampler(latents)
                noisy = sched.add_noise(latents, noise, t)
                pred = unet(noisy, t, encoder_hidden_states=ctx).sample
                w = snr_weights(t, sched.alphas_cumprod, tcfg.get("snr_gamma", 5.0))
                loss = (F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3)) * w).mean()
                if not torch.isfinite(loss):
                    state.bad = True
                    opt.zero_grad(set_to_none=True)
                    continue
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), tcfg.get("max_grad_norm", 1.0))  # ok: MLS302, MLS303, MLS304, MLS305
                    warmup_lr(opt, state.step, tcfg["lr"], tcfg.get("warmup", 1000))
                opt.step()
                opt.zero_grad(set_to_none=True)

            if accelerator.sync_gradients:
                state.step += 1
                ema.step(accelerator.unwrap_model(unet).parameters())
                cur = loss.detach().item()
                if ema_loss is not None and cur > 4.0 * ema_loss:
                    soften_spike(opt, state)
                ema_loss = cur if ema_loss is None else 0.98 * ema_loss + 0.02 * cur
                if state.step % 50 == 0:
                    accelerator.log({"train/loss": cur, "lr": opt.param_groups[0]["lr"]}, step=state.step)
                if state.step % tcfg.get("save_every", 2000) == 0 or stop_requested["flag"]:
                    save_checkpoint(accelerator, ema, out, state.step, tcfg.get("keep_last", 3))
                if stop_requested["flag"]:
                    accelerator.end_training()
                    sys.exit(0)  # ok: MLS307
    save_checkpoint(accelerator, ema, out, state.step, tcfg.get("keep_last", 3))
    accelerator.end_training()


if __name__ == "__main__":
    main()
