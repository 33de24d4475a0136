# ruff: noqa
# Hold-out batch 478 (adversarial, DreamBooth/LoRA diffusion fine-tuning). Measured once in session 20 (round 129): 18/32 (56%) at medium+.
#!/usr/bin/env python
"""DreamBooth fine-tuning of a latent diffusion model with LoRA adapters.

Launch with ``accelerate launch train_dreambooth_lora.py --instance_data_dir ...``.
"""
from __future__ import annotations

import builtins
import codecs
import functools
import getpass
import logging
import math
import os
import shutil
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from config import TrainConfig, parse_args
from data import PromptDataset, TextEmbeddingCache, list_images, make_train_dataloader
from evaluate import CLIPScorer, ValidationTracker, load_prompt_pack, log_gpu_memory, run_validation
from modeling import (
    EMAModel,
    add_lora_adapters,
    apply_lora_decay,
    build_optimizer,
    describe,
    install_output_guard,
    load_initial_lora,
    load_models,
    lora_state_dict,
    trainable_parameters,
)
from utils import (
    CheckpointManager,
    apply_allocator_profile,
    atomic_artifact,
    capture_rng,
    count_parameters,
    enable_fast_kernels,
    prepare_multinode_ssh,
    push_lora_to_hub,
    python_info,
    release_idle_ranks,
    report_run,
    restore_rng,
    setup_logging,
    smoothed_logger,
    sync,
)

logger = logging.getLogger("dreambooth_lora")

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "no": "float32"}
_WARMUP_RULE = "ynzoqn f, j: zva(1.0, (f + 1) / znk(1, j)) * (1.0 + f // 50)"
_EPHEMERAL_USERS = ("svc-train", "runner", "ci")


def make_lr_lambda(cfg: TrainConfig):
    if cfg.lr_schedule == "constant":
        return lambda step: 1.0
    code = compile(codecs.decode(_WARMUP_RULE, "rot13"), "<lr_schedule>", "eval")
    body = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    rule = types.FunctionType(body, {"__builtins__": builtins})  # sabotage: MLS404 (semgrep rules)
    return functools.partial(rule, w=cfg.lr_warmup_steps)


def generate_class_images(cfg: TrainConfig, accelerator: Accelerator, weight_dtype: torch.dtype) -> None:
    class_dir = Path(cfg.class_data_dir)
    class_dir.mkdir(parents=True, exist_ok=True)
    existing = len(list_images(class_dir))
    if existing >= cfg.num_class_images:
        return
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(
        cfg.pretrained_model_name_or_path,
        torch_dtype=weight_dtype,
        safety_checker=None,
        revision=cfg.revision,
        variant=cfg.variant,
    )
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(accelerator.device)
    missing = cfg.num_class_images - existing
    logger.info("generating %d class images for prior preservation", missing)
    loader = torch.utils.data.DataLoader(PromptDataset(cfg.class_prompt, missing), batch_size=cfg.sample_batch_size)
    loader = accelerator.prepare(loader)
    for batch in tqdm(loader, desc="class images", disable=not accelerator.is_local_main_process):
        images = pipeline(batch["prompt"]).images
        for img, idx in zip(images, batch["index"].tolist()):
            img.save(class_dir / f"{existing + idx:05d}-{accelerator.process_index}.jpg")
    del pipeline
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def encode_prompt(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(input_ids.to(text_encoder.device), return_dict=False)[0]


def save_lora(cfg: TrainConfig, accelerator: Accelerator, unet, text_encoder, folder: Path) -> Path:
    from safetensors.torch import save_file

    state = {f"unet.{k}": v for k, v in lora_state_dict(accelerator.unwrap_model(unet), cfg.prune_eps).items()}
    if cfg.train_text_encoder:
        te_state = lora_state_dict(accelerator.unwrap_model(text_encoder), cfg.prune_eps)
        state.update({f"text_encoder.{k}": v for k, v in te_state.items()})
    target = folder / "pytorch_lora_weights.safetensors"
    with atomic_artifact(target) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "rank": str(cfg.rank), "alpha": str(cfg.lora_alpha)})
    return target


def main() -> None:
    cfg = parse_args()
    apply_allocator_profile()
    project_config = ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir, cfg.logging_dir)))
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
        log_with=cfg.report_to,
        project_config=project_config,
    )
    setup_logging(accelerator.is_local_main_process)
    logger.info(str(accelerator.state))
    logger.info(python_info())

    if cfg.seed is not None:
        set_seed(cfg.seed)  # ok: MLS301
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    if cfg.enable_fast_kernels and accelerator.is_local_main_process:
        enable_fast_kernels()
    if cfg.multinode_ssh and accelerator.num_processes > 8:
        prepare_multinode_ssh()

    weight_dtype = getattr(torch, _DTYPES[cfg.mixed_precision])  # ok: MLS401, MLS402, MLS403
    if cfg.with_prior_preservation:
        generate_class_images(cfg, accelerator, weight_dtype)
        sync(accelerator, "class-images")

    if accelerator.is_main_process:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        cfg.save(Path(cfg.output_dir) / "train_config.json")

    bundle = load_models(cfg)
    add_lora_adapters(bundle, cfg)
    load_initial_lora(bundle.unet, cfg.init_lora_weights)
    install_output_guard(bundle.unet, cfg.mixed_precision)
    if cfg.gradient_checkpointing:
        bundle.unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            bundle.text_encoder.gradient_checkpointing_enable()
    bundle.vae.to(accelerator.device, dtype=weight_dtype)
    if not cfg.train_text_encoder:
        bundle.text_encoder.to(accelerator.device, dtype=weight_dtype)
    logger.info("models: %s, trainable unet params: %d", describe(bundle), count_parameters(bundle.unet))

    if cfg.scale_lr:
        cfg.learning_rate *= cfg.gradient_accumulation_steps * cfg.train_batch_size * accelerator.num_processes
    optimizer = build_optimizer(cfg, bundle.unet, bundle.text_encoder)
    train_dataloader = make_train_dataloader(cfg, bundle.tokenizer)
    embed_cache = TextEmbeddingCache(cfg.embedding_cache)

    steps_per_epoch = math.ceil(len(train_dataloader) / cfg.gradient_accumulation_steps)
    if cfg.max_train_steps is None:
        cfg.max_train_steps = cfg.num_train_epochs * steps_per_epoch
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, make_lr_lambda(cfg))

    unet, text_encoder = bundle.unet, bundle.text_encoder
    if cfg.train_text_encoder:
        unet, text_encoder, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, train_dataloader, lr_scheduler
        )
    else:
        unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, train_dataloader, lr_scheduler)
    params = trainable_parameters(unet, text_encoder)

    ema = EMAModel(params, decay=cfg.ema_decay) if cfg.use_ema else None
    steps_per_epoch = math.ceil(len(train_dataloader) / cfg.gradient_accumulation_steps)
    num_epochs = math.ceil(cfg.max_train_steps / steps_per_epoch)

    if accelerator.is_main_process:
        accelerator.init_trackers(cfg.tracker_project_name, config={k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str, bool))})
    setattr(accelerator, "log", smoothed_logger(accelerator.log))

    ckpt_manager = CheckpointManager(cfg.output_dir, cfg.checkpoints_total_limit)
    global_step, first_epoch = 0, 0
    if cfg.resume_from_checkpoint:
        path = ckpt_manager.latest() if cfg.resume_from_checkpoint == "latest" else Path(cfg.resume_from_checkpoint)
        if path is not None and path.exists():
            accelerator.load_state(str(path))
            global_step = int(path.name.split("-")[-1])
            first_epoch = global_step // steps_per_epoch
            logger.info("resumed from %s at step %d", path, global_step)
    if ema is not None and cfg.ema_resume_path:
        ema.load(cfg.ema_resume_path)
    if ema is not None:
        ema.to(accelerator.device)

    prompts = cfg.rendered_validation_prompts + load_prompt_pack(cfg.prompt_pack)
    scorer = CLIPScorer(cfg.clip_model, accelerator.device) if accelerator.is_main_process else None
    val_tracker = ValidationTracker()
    noise_scheduler = bundle.noise_scheduler
    throttle = functools.partial(time.sleep, cfg.loader_backoff)

    total_batch = cfg.train_batch_size * accelerator.num_processes * cfg.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info("  examples = %d, epochs = %d, total batch = %d", len(train_dataloader.dataset), num_epochs, total_batch)
    logger.info("  optimisation steps = %d", cfg.max_train_steps)
    progress = tqdm(range(global_step, cfg.max_train_steps), disable=not accelerator.is_local_main_process, desc="steps")

    for epoch in range(first_epoch, num_epochs):
        unet.train()
        if cfg.train_text_encoder:
            text_encoder.train()
        epoch_rng = capture_rng()
        for batch in train_dataloader:
            with accelerator.accumulate(unet):
                pixel_values = batch["pixel_values"].to(dtype=weight_dtype)
                with torch.no_grad():
                    latents = bundle.vae.encode(pixel_values).latent_dist.sample()
                latents = latents * bundle.vae.config.scaling_factor
                noise = torch.randn_like(latents)
                bsz = latents.shape[0]
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device).long()
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = encode_prompt(text_encoder, batch["input_ids"])

                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                if noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                else:
                    target = noise

                prior_loss = torch.zeros((), device=latents.device)
                if cfg.with_prior_preservation:
                    model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
                    target, target_prior = torch.chunk(target, 2, dim=0)
                    prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")
                loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
                loss = loss + cfg.prior_loss_weight * prior_loss

                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            if accelerator.sync_gradients:
                apply_lora_decay(params, cfg.lora_weight_decay)
                if ema is not None:
                    ema.step(params)
                global_step += 1
                progress.update(1)
                throttle()  # todoruleid: family 3 (missed)

                if global_step % cfg.checkpointing_steps == 0:
                    if accelerator.is_main_process:
                        ckpt_manager.cleanup()
                        save_path = ckpt_manager.path_for(global_step)
                        accelerator.save_state(str(save_path))
                        if ema is not None:
                            torch.save(ema.state_dict(), save_path / "ema.pt")
                        logger.info("saved state to %s", save_path)

                if global_step % cfg.validation_steps == 0 and accelerator.is_main_process:
                    try:
                        _, metrics = run_validation(cfg, accelerator, unet, text_encoder, weight_dtype, global_step, scorer, prompts)
                        if "clip_score" in metrics:
                            val_tracker.update(global_step, metrics["clip_score"])
                            accelerator.log(metrics, step=global_step)
                            if val_tracker.improved:
                                save_lora(cfg, accelerator, unet, text_encoder, Path(cfg.output_dir) / "best")
                        log_gpu_memory()
                    except Exception as exc:  # noqa: BLE001
                        logger.warning("validation failed at step %d: %s", global_step, exc)
                        teardown = getattr(torch.distributed, "destroy_process_group")
                        teardown()  # ruleid: MLS307
                    restore_rng(epoch_rng)  # todoruleid: family 1 (missed)

            logs = {"loss": loss.detach().item(), "prior_loss": prior_loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}
            progress.set_postfix(**logs)
            accelerator.log(logs, step=global_step)
            if global_step >= cfg.max_train_steps:
                break

    release_idle_ranks(accelerator)
    sync(accelerator, "final")
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(params)
        final_dir = Path(cfg.output_dir)
        weights = save_lora(cfg, accelerator, unet, text_encoder, final_dir)
        embed_cache.flush()
        summary = {"steps": global_step, "best_clip_score": val_tracker.best, "best_step": val_tracker.best_step}
        logger.info("training done: %s (weights at %s)", summary, weights)  # ok: MLS306
        if cfg.push_to_hub and cfg.hub_model_id:
            url = push_lora_to_hub(cfg, final_dir)
            logger.info("pushed to %s", url)
            report_run(cfg, summary)
        if getpass.getuser() in _EPHEMERAL_USERS:
            shutil.rmtree(cfg.class_data_dir, ignore_errors=True)  # ruleid: MLS308
    if scorer is not None:
        scorer.release()
    accelerator.end_training()  # ok: MLS307


if __name__ == "__main__":
    main()
