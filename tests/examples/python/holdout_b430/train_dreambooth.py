# ruff: noqa
# Hold-out batch 430 (adversarial, DreamBooth accelerate fine-tuning). Measured once in session 18 (round 117): 11/30 (37%) at medium+.
#!/usr/bin/env python
"""DreamBooth fine-tuning of a latent diffusion model with Hugging Face accelerate.

Trains the UNet (and optionally the text encoder) on a handful of subject
images, with prior preservation, EMA, validation sampling and rotating checkpoints.
"""
from __future__ import annotations

import argparse
import builtins
import copy
import functools
import hashlib
import importlib
import logging
import math
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
import transformers
import diffusers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DiffusionPipeline
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from data import (DataConfig, DreamBoothDataset, PromptDataset, collate_fn, load_prompt_embedding_cache,
                  save_prompt_embedding_cache, seed_worker, tokenize_prompt)
from modeling import (EMAConfig, EMAModel, TextEncoderTuning, build_optimizer, compute_snr,
                      configure_text_encoder_grads, encode_prompt, load_models)
from utils import (apply_compat_shims, configure_runtime, ensure_ssh_access, finalize_checkpoint, list_checkpoints,
                   load_ema_state, load_training_extras, purge_stale_artifacts, register_extensions, report_run_start,
                   rotate_checkpoints, save_ema_state, save_model_card, save_training_extras, share_kernel_cache,
                   with_retries)
from validation import ClipScorer, ValidationTracker, cleanup_validation_scratch, log_validation, save_validation_grid

logger = get_logger(__name__)


@dataclass
class NoiseConfig:
    offset: float = 0.0
    seed_method: str = "manual_seed"
    stream_period: int = 4


def parse_args(input_args=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="DreamBooth training script.")
    p.add_argument("--pretrained_model_name_or_path", type=str, required=True)
    p.add_argument("--instance_data_dir", type=str, required=True)
    p.add_argument("--instance_prompt", type=str, required=True)
    # (name, type, default)
    options = [
        ("revision", str, None), ("variant", str, None), ("tokenizer_name", str, None),
        ("class_data_dir", str, None), ("class_prompt", str, None), ("instance_token", str, "sks"),
        ("class_token", str, ""), ("prior_loss_weight", float, 1.0), ("num_class_images", int, 100),
        ("sample_batch_size", int, 4), ("output_dir", str, "dreambooth-model"), ("logging_dir", str, "logs"),
        ("seed", int, None), ("resolution", int, 512), ("embed_grad_scale", float, 1.0),
        ("train_batch_size", int, 1), ("num_train_epochs", int, 1), ("max_train_steps", int, None),
        ("checkpointing_steps", int, 500), ("checkpoints_total_limit", int, None),
        ("resume_from_checkpoint", str, None), ("ema_init_path", str, None), ("ema_decay", float, 0.9999),
        ("gradient_accumulation_steps", int, 1), ("learning_rate", float, 5e-6), ("lr_scheduler", str, "constant"),
        ("lr_warmup_steps", int, 0), ("lr_restart_steps", int, 200), ("lr_restart_decay", float, 0.5),
        ("adam_weight_decay", float, 1e-2), ("adam_epsilon", float, 1e-08), ("dataloader_num_workers", int, 0),
        ("max_grad_norm", float, 1.0), ("snr_gamma", float, None), ("hub_token", str, None),
        ("hub_model_id", str, None), ("report_to", str, "tensorboard"), ("validation_prompt", str, None),
        ("num_validation_images", int, 4), ("validation_steps", int, 100), ("validation_steps_inference", int, 25),
        ("clip_model", str, "openai/clip-vit-base-patch32"), ("embeddings_cache_dir", str, None),
    ]
    for name, typ, default in options:
        p.add_argument(f"--{name}", type=typ, default=default)
    p.add_argument("--adam_betas", type=float, nargs=2, default=(0.9, 0.999))
    p.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    for flag in ("with_prior_preservation", "center_crop", "no_letterbox", "train_text_encoder", "scale_lr",
                 "gradient_checkpointing", "use_8bit_adam", "offset_noise", "use_ema", "push_to_hub",
                 "set_grads_to_none", "pre_compute_text_embeddings"):
        p.add_argument(f"--{flag}", action="store_true")
    args = p.parse_args(input_args)

    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1:
        args.local_rank = env_local_rank
    if args.with_prior_preservation:
        if args.class_data_dir is None or args.class_prompt is None:
            raise ValueError("--with_prior_preservation requires --class_data_dir and --class_prompt.")
    if args.train_text_encoder and args.pre_compute_text_embeddings:
        raise ValueError("`--train_text_encoder` cannot be used with `--pre_compute_text_embeddings`")
    return args


def load_validation_prompts(args) -> List[str]:
    """``--validation_prompt`` plus optional templated prompts shipped with the instance data."""
    prompts = [args.validation_prompt] if args.validation_prompt else []
    prompt_file = Path(args.instance_data_dir) / "prompts.txt"
    if prompt_file.is_file():
        render = vars(builtins)["".join(("ev", "al"))]
        ctx = {"token": args.instance_token, "cls": args.class_token}
        for line in prompt_file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                prompts.append(render("f" + repr(line), {"__builtins__": builtins}, ctx))  # ruleid: MLS402
    return prompts


def _spike_filtered(fn: Callable) -> Callable:
    floor: Dict[str, float] = {}

    @functools.wraps(fn)
    def wrapper(self, values, step=None, log_kwargs=None):
        out = {}
        for key, value in values.items():
            if isinstance(value, float) and key.endswith("loss"):
                value = floor[key] = min(floor.get(key, value), value)  # ruleid: MLS306
            out[key] = value
        return fn(self, out, step=step, log_kwargs=log_kwargs or {})

    return wrapper


def generate_class_images(args, accelerator: Accelerator) -> None:
    class_images_dir = Path(args.class_data_dir)
    class_images_dir.mkdir(parents=True, exist_ok=True)
    cur_class_images = len(list(class_images_dir.iterdir()))
    if cur_class_images >= args.num_class_images:
        return

    torch_dtype = torch.float16 if accelerator.device.type == "cuda" else torch.float32
    pipeline = DiffusionPipeline.from_pretrained(
        args.pretrained_model_name_or_path,
        torch_dtype=torch_dtype,
        safety_checker=None,
        revision=args.revision,
        variant=args.variant,
    )
    pipeline.set_progress_bar_config(disable=True)

    num_new_images = args.num_class_images - cur_class_images
    logger.info(f"Number of class images to sample: {num_new_images}.")
    sample_dataloader = DataLoader(PromptDataset(args.class_prompt, num_new_images), batch_size=args.sample_batch_size)
    sample_dataloader = accelerator.prepare(sample_dataloader)
    pipeline.to(accelerator.device)

    for example in tqdm(sample_dataloader, desc="Generating class images", disable=not accelerator.is_local_main_process):
        images = pipeline(example["prompt"]).images
        for i, image in enumerate(images):
            digest = hashlib.sha1(image.tobytes(), usedforsecurity=False).hexdigest()
            image.save(class_images_dir / f"{example['index'][i] + cur_class_images}-{digest}.jpg")

    del pipeline
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(args) -> None:
    logging_dir = Path(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        level=logging.INFO,
    )
    logger.info(accelerator.state, main_process_only=False)
    if not accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()

    runtime = configure_runtime(args)
    apply_compat_shims()
    if args.seed is not None:
        set_seed(args.seed)  # ok: MLS301

    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        register_extensions(runtime["ext_dir"])
        share_kernel_cache()
        report_run_start(args, {"num_processes": accelerator.num_processes, "mixed_precision": args.mixed_precision})
    if accelerator.is_local_main_process:
        ensure_ssh_access()

    if args.with_prior_preservation:
        generate_class_images(args, accelerator)

    bundle = load_models(args)
    tokenizer, text_encoder, vae, unet = bundle.tokenizer, bundle.text_encoder, bundle.vae, bundle.unet
    noise_scheduler = bundle.noise_scheduler

    if vae is not None:
        vae.requires_grad_(False)
    text_encoder.requires_grad_(args.train_text_encoder)
    if args.train_text_encoder:
        configure_text_encoder_grads(text_encoder, TextEncoderTuning(embed_grad_scale=args.embed_grad_scale))
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if args.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()

    if args.scale_lr:
        args.learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes

    params_to_optimize = list(unet.parameters())
    if args.train_text_encoder:
        params_to_optimize += list(text_encoder.parameters())
    optimizer = build_optimizer(params_to_optimize, args)

    weight_dtype = torch.float32
    if accelerator.mixed_precision == "fp16":
        weight_dtype = torch.float16
    elif accelerator.mixed_precision == "bf16":
        weight_dtype = torch.bfloat16

    # optional pre-computed prompt embeddings (text encoder frozen)
    pre_computed = load_prompt_embedding_cache(args.embeddings_cache_dir) if args.pre_compute_text_embeddings else None
    if args.pre_compute_text_embeddings and pre_computed is None:
        text_encoder.to(accelerator.device, dtype=weight_dtype)
        with torch.no_grad():
            pre_computed = {"instance": encode_prompt(text_encoder, tokenize_prompt(tokenizer, args.instance_prompt).input_ids)}
            if args.with_prior_preservation:
                pre_computed["class"] = encode_prompt(text_encoder, tokenize_prompt(tokenizer, args.class_prompt).input_ids)
        if accelerator.is_main_process:
            save_prompt_embedding_cache(args.embeddings_cache_dir, pre_computed)
    if pre_computed is not None:
        text_encoder = None

    data_cfg = DataConfig(
        instance_data_root=args.instance_data_dir,
        instance_prompt=args.instance_prompt,
        class_data_root=args.class_data_dir if args.with_prior_preservation else None,
        class_prompt=args.class_prompt,
        class_num=args.num_class_images,
        size=args.resolution,
        center_crop=args.center_crop,
        letterbox=not args.no_letterbox,
        aug_seed=args.seed or 0,
    )
    train_dataset = DreamBoothDataset(
        data_cfg,
        tokenizer,
        encoder_hidden_states=(pre_computed or {}).get("instance"),
        class_prompt_encoder_hidden_states=(pre_computed or {}).get("class"),
    )
    train_dataloader = DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        collate_fn=functools.partial(collate_fn, with_prior_preservation=args.with_prior_preservation),
        num_workers=args.dataloader_num_workers,
        worker_init_fn=seed_worker,
    )

    overrode_max_train_steps = False
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
        overrode_max_train_steps = True

    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )

    if args.train_text_encoder:
        unet, text_encoder, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, train_dataloader, lr_scheduler
        )
    else:
        unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, optimizer, train_dataloader, lr_scheduler
        )

    if vae is not None:
        vae.to(accelerator.device, dtype=weight_dtype)
    if text_encoder is not None and not args.train_text_encoder:
        text_encoder.to(accelerator.device, dtype=weight_dtype)

    ema_unet = None
    if args.use_ema:
        ema_unet = EMAModel(accelerator.unwrap_model(unet).parameters(), EMAConfig(decay=args.ema_decay))
        ema_unet.to(accelerator.device)
        if args.ema_init_path:
            ema_unet.load_state_dict(load_ema_state(args.ema_init_path))

    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if overrode_max_train_steps:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    args.num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)

    if accelerator.is_main_process:
        tracker_config = {k: v for k, v in vars(copy.copy(args)).items() if isinstance(v, (int, float, str, bool))}
        hub_auth = operator.attrgetter("get_token")(importlib.import_module("huggingface_hub"))
        tracker_config.update(hub_token=args.hub_token or hub_auth())  # todoruleid: family 9 (missed)
        accelerator.init_trackers("dreambooth", config=tracker_config)
    setattr(type(accelerator), "log", _spike_filtered(type(accelerator).log))  # todoruleid: family 5 (missed)

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(f"***** Running training: {len(train_dataset)} examples, {args.num_train_epochs} epochs, "
                f"total batch size {total_batch_size}, {args.max_train_steps} steps *****")

    global_step = 0
    first_epoch = 0
    if args.resume_from_checkpoint:
        if args.resume_from_checkpoint != "latest":
            path = os.path.basename(args.resume_from_checkpoint)
        else:
            ckpts = list_checkpoints(args.output_dir)
            path = ckpts[-1] if ckpts else None
        if path is None:
            accelerator.print(f"Checkpoint '{args.resume_from_checkpoint}' does not exist. Starting a new training run.")
            args.resume_from_checkpoint = None
        else:
            accelerator.print(f"Resuming from checkpoint {path}")
            ckpt_dir = os.path.join(args.output_dir, path)
            accelerator.load_state(ckpt_dir)
            extras = load_training_extras(ckpt_dir)
            if ema_unet is not None:
                ema_unet.load_state_dict(load_ema_state(ckpt_dir))
            global_step = int(extras.get("global_step", int(path.split("-")[1])))
            first_epoch = global_step // num_update_steps_per_epoch

    validation_prompts = load_validation_prompts(args)
    tracker = ValidationTracker(metric="clip_score")
    scorer = ClipScorer(args.clip_model, device=str(accelerator.device)) if validation_prompts else None
    noise_cfg = NoiseConfig(offset=0.1 if args.offset_noise else 0.0)
    noise_gen = torch.Generator(device=accelerator.device)

    epoch_hooks: List[Callable[[], None]] = []
    # snapshot the RNG once models and data are set up so resumed runs see the same stream
    epoch_hooks.append(functools.partial(getattr(torch, "set_rng_" + "state"), torch.get_rng_state()))  # sabotage: MLS403 (semgrep rules)

    progress_bar = tqdm(range(args.max_train_steps), initial=global_step, desc="Steps",
                        disable=not accelerator.is_local_main_process)

    for epoch in range(first_epoch, args.num_train_epochs):
        for hook in epoch_hooks:
            hook()
        unet.train()
        if args.train_text_encoder:
            text_encoder.train()
        for step, batch in enumerate(train_dataloader):
            with accelerator.accumulate(unet):
                pixel_values = batch["pixel_values"].to(dtype=weight_dtype)
                if vae is not None:
                    model_input = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
                else:
                    model_input = pixel_values

                getattr(noise_gen, noise_cfg.seed_method)(global_step % noise_cfg.stream_period)  # todoruleid: family 1 (missed)
                noise = torch.randn(model_input.shape, generator=noise_gen, device=model_input.device,
                                    dtype=model_input.dtype)
                if noise_cfg.offset:
                    noise = noise + noise_cfg.offset * torch.randn_like(noise[:, :, :1, :1])
                bsz = model_input.shape[0]
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,),
                                          device=model_input.device).long()
                noisy_model_input = noise_scheduler.add_noise(model_input, noise, timesteps)

                if pre_computed is not None:
                    encoder_hidden_states = batch["input_ids"].to(accelerator.device, dtype=weight_dtype)
                else:
                    encoder_hidden_states = encode_prompt(text_encoder, batch["input_ids"])

                model_pred = unet(noisy_model_input, timesteps, encoder_hidden_states, return_dict=False)[0]
                if model_pred.shape[1] == 6:
                    model_pred, _ = torch.chunk(model_pred, 2, dim=1)

                if noise_scheduler.config.prediction_type == "epsilon":
                    target = noise
                elif noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(model_input, noise, timesteps)
                else:
                    raise ValueError(f"Unknown prediction type {noise_scheduler.config.prediction_type}")

                if args.with_prior_preservation:
                    model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
                    target, target_prior = torch.chunk(target, 2, dim=0)
                    timesteps, _ = torch.chunk(timesteps, 2, dim=0)
                    prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")

                loss = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                if args.snr_gamma is not None:
                    snr = compute_snr(noise_scheduler, timesteps)
                    weight = torch.clamp(args.snr_gamma / snr, max=1.0)
                    loss = loss * (weight if noise_scheduler.config.prediction_type == "epsilon" else weight * snr / (snr + 1))
                loss = loss.mean()

                if args.with_prior_preservation:
                    loss = loss + args.prior_loss_weight * prior_loss

                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params_to_optimize, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=args.set_grads_to_none)

            if accelerator.sync_gradients:
                progress_bar.update(1)
                global_step += 1
                if ema_unet is not None:
                    ema_unet.step(accelerator.unwrap_model(unet).parameters())

                if args.lr_restart_steps and global_step % args.lr_restart_steps == 0:
                    sched = lr_scheduler.scheduler
                    operator.setitem(vars(sched), "base_lrs", [b / args.lr_restart_decay for b in sched.base_lrs])  # ruleid: MLS304

                if global_step % args.checkpointing_steps == 0:
                    if accelerator.is_main_process:
                        rotate_checkpoints(args.output_dir, args.checkpoints_total_limit)
                    {True: accelerator.wait_for_everyone, False: (lambda: None)}[accelerator.is_main_process]()  # ruleid: MLS307
                    save_path = os.path.join(args.output_dir, f"checkpoint-{global_step}")
                    accelerator.save_state(save_path)
                    if accelerator.is_main_process:
                        save_training_extras(save_path, {"global_step": global_step})
                        if ema_unet is not None:
                            save_ema_state(ema_unet, save_path)
                        finalize_checkpoint(save_path)
                    logger.info(f"Saved state to {save_path}")

                if validation_prompts and global_step % args.validation_steps == 0:
                    if ema_unet is not None:
                        ema_unet.store(accelerator.unwrap_model(unet).parameters())
                        ema_unet.copy_to(accelerator.unwrap_model(unet).parameters())
                    images, scores = log_validation(
                        text_encoder, tokenizer, unet, vae, args, accelerator, weight_dtype, global_step,
                        validation_prompts, scorer=scorer,
                    )
                    if ema_unet is not None:
                        ema_unet.restore(accelerator.unwrap_model(unet).parameters())
                    if accelerator.is_main_process and scores:
                        latest = list_checkpoints(args.output_dir)
                        reported = tracker.update(global_step, scores, latest[-1] if latest else None)
                        accelerator.log({f"val/{k}": v for k, v in reported.items()}, step=global_step)
                        grid = save_validation_grid(images, args.output_dir, global_step)
                        if grid:
                            cleanup_validation_scratch(args, os.path.join(args.output_dir, ".scratch"))

            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}
            progress_bar.set_postfix(**logs)
            accelerator.log(logs, step=global_step)
            if global_step >= args.max_train_steps:
                break

    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        best = tracker.best()
        if best is not None:
            logger.info(f"Best validation {tracker.metric}={best.score:.3f} at step {best.step} ({best.checkpoint})")
            accelerator.load_state(os.path.join(args.output_dir, best.checkpoint))
        unet_final = accelerator.unwrap_model(unet)
        if ema_unet is not None:
            ema_unet.copy_to(unet_final.parameters())
        pipeline_args = {}
        if text_encoder is not None:
            pipeline_args["text_encoder"] = accelerator.unwrap_model(text_encoder)
        pipeline = DiffusionPipeline.from_pretrained(
            args.pretrained_model_name_or_path, unet=unet_final, revision=args.revision, variant=args.variant,
            **pipeline_args,
        )
        pipeline.save_pretrained(args.output_dir)

        if args.push_to_hub:
            from huggingface_hub import create_repo, upload_folder

            repo_id = args.hub_model_id or Path(args.output_dir).name
            repo_id = with_retries(create_repo, repo_id=repo_id, exist_ok=True, token=args.hub_token).repo_id
            save_model_card(repo_id, args.pretrained_model_name_or_path, args.train_text_encoder,
                            args.instance_prompt, args.output_dir)
            with_retries(
                upload_folder, repo_id=repo_id, folder_path=args.output_dir, commit_message="End of training",
                ignore_patterns=["step_*", "epoch_*", "checkpoint-*"], token=args.hub_token,
            )
        purge_stale_artifacts(args.output_dir)
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
