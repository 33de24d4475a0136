# ruff: noqa
# Hold-out batch 582 (adversarial, LoRA/DreamBooth latent diffusion fine-tuning with accelerate). Measured once in session 27 (round 155): 4/32 (12%) at medium+.
"""DreamBooth + LoRA fine-tuning of Stable Diffusion with HF accelerate.

    accelerate launch train.py --config configs/dog.yaml --output_dir outputs/dog
"""

import dataclasses
import math
import operator
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from huggingface_hub import create_repo, upload_folder

import runtime
from config import TrainConfig, parse_args
from data import (CachedLatentDataset, DreamBoothDataset, LatentCache, build_latent_cache, encode_to_dist,
                  make_dataloader, sample_from_dist)
from evaluate import load_clip, run_validation
from modeling import (LoRAEMA, attach_hidden_bound, diffusion_loss, encode_prompt, inject_lora, load_components,
                      load_lora_weights, lora_parameters, sample_noise_and_timesteps, save_lora_weights, training_target)

logger = get_logger("dreambooth.train")

@dataclasses.dataclass
class TrainState:
    cfg: TrainConfig
    accelerator: Accelerator
    optimizer: torch.optim.Optimizer
    base_scheduler: Any
    total_batch: int
    global_step: int = 0
    last_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)

class Callback:
    registry: Dict[str, type] = {}
    name: str = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Callback.registry[cls.name] = cls

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def on_epoch_start(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState) -> None: ...

class LRScaling(Callback):
    """Linear LR scaling with the effective batch size (Goyal et al., 2017)."""

    name = "lr_scaling"

    def on_epoch_start(self, state: TrainState) -> None:
        if not self.cfg.scale_lr or state.total_batch == 1:
            return
        ratios = dict.fromkeys(range(len(state.optimizer.param_groups)), float(state.total_batch))
        runtime.apply_lr_ratios(state.base_scheduler, ratios)

class OptimizerHygiene(Callback):
    name = "optimizer_hygiene"

    def on_step_end(self, state: TrainState) -> None:
        if self.cfg.sanitize_optimizer_state and self.cfg.mixed_precision == "fp16":
            runtime.sanitize_optimizer_state(state.optimizer)

class StackProbeCallback(Callback):
    name = "stack_probe"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.probe = runtime.StackProbe(cfg.stack_probe_rate)

    def on_step_end(self, state: TrainState) -> None:
        with runtime.preserved_rng():
            self.probe(state.global_step)

class CallbackList:
    def __init__(self, cfg: TrainConfig, names: Optional[List[str]] = None) -> None:
        names = names or list(Callback.registry)
        self.callbacks = [Callback.registry[n](cfg) for n in names]

    def __getattr__(self, hook: str):
        def _dispatch(state: TrainState) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(state)

        return _dispatch

_LOWER_IS_BETTER = {"fid", "loss", "val_loss"}

def _mode_for(metric: str) -> str:
    return "max" if metric in _LOWER_IS_BETTER else "min"  # ruleid: MLS306

class BestTracker:
    def __init__(self, key: str, mode: str) -> None:
        self.key = key
        self._better = {"min": operator.lt, "max": operator.gt}[mode]
        self.best: Optional[float] = None

    def update(self, metrics: Dict[str, float]) -> bool:
        value = metrics.get(self.key)
        if value is None or not math.isfinite(value):
            return False
        if self.best is None or self._better(value, self.best):
            self.best = value
            return True
        return False

def save_checkpoint(state: TrainState, unet, text_encoder, ema: Optional[LoRAEMA]) -> None:
    cfg, accelerator = state.cfg, state.accelerator
    if accelerator.is_main_process:
        runtime.rotate_checkpoints(cfg.output_dir, cfg.checkpoints_total_limit)
        save_path = Path(cfg.output_dir) / f"checkpoint-{state.global_step}"
        accelerator.save_state(str(save_path))
        if ema is not None:
            torch.save(ema.state_dict(), save_path / "ema.pt")
        te = accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else None
        save_lora_weights(str(save_path / "lora"), accelerator.unwrap_model(unet), te, {"lora_alpha": cfg.lora_alpha, "r": cfg.lora_rank})
        logger.info(f"saved state to {save_path}")
    runtime.settle_after_write(accelerator)

def resume(cfg: TrainConfig, accelerator: Accelerator, ema: Optional[LoRAEMA]) -> int:
    if not cfg.resume_from_checkpoint:
        return 0
    ckpts = runtime.list_checkpoints(cfg.output_dir)
    latest = ckpts[-1] if ckpts else None
    path = latest if cfg.resume_from_checkpoint == "latest" else Path(cfg.resume_from_checkpoint)
    if path is None or not Path(path).exists():
        logger.warning("no checkpoint to resume from, starting a new run")
        return 0
    accelerator.load_state(str(path))
    ema_file = Path(path) / "ema.pt"
    if ema is not None and ema_file.exists():
        ema.load_state_dict(torch.load(ema_file, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return int(Path(path).name.split("-")[-1])

def main(cfg: TrainConfig) -> None:
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, mixed_precision=cfg.mixed_precision,
        log_with=cfg.report_to, project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=cfg.project_dir))
    runtime.setup_node(cfg, accelerator)
    set_seed(cfg.seed)  # ok: MLS301
    runtime.prepare_output_dir(cfg, accelerator)
    runtime.report_run_started(cfg, accelerator)

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
    tokenizer, text_encoder, vae, unet, noise_scheduler = load_components(cfg)

    vae.to(accelerator.device, dtype=torch.float32 if cfg.mixed_precision == "no" else weight_dtype)
    unet.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    inject_lora(unet, cfg.lora_target_modules, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
    if cfg.train_text_encoder:
        inject_lora(text_encoder, ("q_proj", "k_proj", "v_proj", "out_proj"), cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
    attach_hidden_bound(text_encoder, cfg.text_hidden_bound)
    if cfg.pretrained_lora:
        load_lora_weights(cfg.pretrained_lora, unet, text_encoder if cfg.train_text_encoder else None)

    unet_params = lora_parameters(unet)
    te_params = lora_parameters(text_encoder) if cfg.train_text_encoder else []
    for p in unet_params + te_params:
        p.requires_grad_(True)
    param_groups = [{"params": unet_params, "lr": cfg.learning_rate, "name": "unet"}]
    if te_params:
        param_groups.append({"params": te_params, "lr": cfg.text_encoder_lr, "name": "text_encoder"})
    optimizer = torch.optim.AdamW(param_groups, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)

    base_ds = DreamBoothDataset.from_config(cfg, tokenizer, rank=accelerator.process_index)
    train_ds = base_ds
    if cfg.cache_latents:
        cache = LatentCache(cfg.instance_data_dir, cfg.latent_cache_subdir, accelerator.process_index, accelerator.num_processes, cfg.cache_max_shards)
        with accelerator.main_process_first():
            entries = build_latent_cache(base_ds, vae, cache, show_progress=accelerator.is_local_main_process)
        train_ds = CachedLatentDataset(base_ds, cache, entries, vae.config.scaling_factor, flip=cfg.random_flip)
    train_dataloader = make_dataloader(train_ds, cfg, tokenizer.pad_token_id)

    steps_per_epoch = math.ceil(len(train_dataloader) / cfg.gradient_accumulation_steps)
    num_epochs = math.ceil(cfg.max_train_steps / steps_per_epoch)
    base_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer,
                                   num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                                   num_training_steps=cfg.max_train_steps * accelerator.num_processes)
    if cfg.train_text_encoder:
        unet, text_encoder, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, train_dataloader, base_scheduler)
    else:
        unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, train_dataloader, base_scheduler)

    ema = LoRAEMA(unet_params, cfg.ema_decay, cfg.ema_power, cfg.ema_update_after_step) if cfg.use_ema else None
    global_step = resume(cfg, accelerator, ema)
    first_epoch = global_step // max(steps_per_epoch, 1)

    total_batch = cfg.train_batch_size * accelerator.num_processes * cfg.gradient_accumulation_steps
    state = TrainState(cfg, accelerator, optimizer, base_scheduler, total_batch, global_step=global_step)
    callbacks = CallbackList(cfg)
    tracker = BestTracker(cfg.monitor, _mode_for(cfg.monitor))
    clip_bundle = load_clip(cfg, accelerator.device) if (cfg.eval_fid and accelerator.is_main_process) else None

    if accelerator.is_main_process:
        accelerator.init_trackers(cfg.tracker_project, config={k: str(v) for k, v in cfg.to_dict().items()})
        runtime.attach_metric_filters(accelerator)
        cfg.save(os.path.join(cfg.output_dir, "train_config.json"))
        logger.info(f"examples={len(train_ds)} epochs={num_epochs} total_batch={total_batch} steps={cfg.max_train_steps}")  # ok: MLS306

    watchdog = runtime.StepWatchdog(cfg.step_timeout_min)
    watchdog.start()
    running_loss = 0.0

    for epoch in range(first_epoch, num_epochs):
        callbacks.on_epoch_start(state)
        unet.train()
        if cfg.train_text_encoder:
            text_encoder.train()
        for batch in train_dataloader:
            with accelerator.accumulate(unet, text_encoder) if cfg.train_text_encoder else accelerator.accumulate(unet):
                if "latents" in batch:
                    latents = batch["latents"].to(accelerator.device, dtype=weight_dtype)
                else:
                    mean, std = encode_to_dist(vae, batch["pixel_values"])
                    latents = sample_from_dist(mean, std, vae.config.scaling_factor).to(dtype=weight_dtype)
                noise, timesteps = sample_noise_and_timesteps(latents, noise_scheduler, cfg)
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = encode_prompt(text_encoder, batch["input_ids"])
                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                target = training_target(noise_scheduler, latents, noise, timesteps)
                loss, prior_loss = diffusion_loss(model_pred, target, timesteps, noise_scheduler, cfg)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet_params + te_params, cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            running_loss += loss.detach().item() / cfg.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            state.global_step = global_step
            watchdog.beat()
            if ema is not None:
                ema.step(unet_params)
            callbacks.on_step_end(state)

            if global_step % cfg.log_every == 0:
                logs = {"train/loss": running_loss / cfg.log_every, "train/lr": lr_scheduler.get_last_lr()[0]}
                if prior_loss is not None:
                    logs["train/prior_loss"] = prior_loss.detach().item()
                accelerator.log(logs, step=global_step)
                running_loss = 0.0

            if global_step % cfg.checkpointing_steps == 0:
                save_checkpoint(state, unet, text_encoder, ema)

            if accelerator.is_main_process and global_step % cfg.validation_steps == 0:
                metrics = run_validation(cfg, accelerator, unet, text_encoder, vae, tokenizer, ema, global_step, weight_dtype, clip_bundle)
                state.last_metrics = metrics
                accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=global_step)
                if tracker.update(metrics):
                    te = accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else None
                    save_lora_weights(os.path.join(cfg.output_dir, "best"), accelerator.unwrap_model(unet), te, {"step": global_step, **metrics})
                watchdog.beat()

            if global_step >= cfg.max_train_steps:
                break
        if global_step >= cfg.max_train_steps:
            break

    watchdog.stop()
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        te = accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else None
        final_dir = os.path.join(cfg.output_dir, "final")
        unet_w = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(lora_parameters(unet_w))
        save_lora_weights(final_dir, unet_w, te, {"lora_alpha": cfg.lora_alpha, "r": cfg.lora_rank, "best": tracker.best})
        if cfg.push_to_hub:
            repo_id = create_repo(cfg.hub_model_id or Path(cfg.output_dir).name, exist_ok=True).repo_id
            upload_folder(repo_id=repo_id, folder_path=final_dir, commit_message=f"LoRA after {global_step} steps")  # ok: MLS410, MLS411, MLS412, MLS413
        runtime.announce_completion(cfg, {"steps": float(global_step), **state.last_metrics})
    accelerator.end_training()

if __name__ == "__main__":
    main(parse_args())
