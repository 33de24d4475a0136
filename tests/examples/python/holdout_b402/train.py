# ruff: noqa
# Hold-out batch 402 (adversarial, latent diffusion training with accelerate). Measured once in session 16 (round 110): 9/33 (27%) at medium+.
#!/usr/bin/env python
"""Fine-tune a latent diffusion UNet (frozen VAE + text encoder) with Hugging Face accelerate."""
import datetime
import logging
import math
import os

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import StableDiffusionPipeline
from diffusers.optimization import get_scheduler
from huggingface_hub import hf_hub_download
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from callbacks import (BestModelCallback, CallbackHandler, CheckpointCallback, HubUploadCallback, LRRampCallback,
                       StepWatchdog, TrackerCallback, TrainerState, ValidationCallback)
from config import (IOPacer, NoiseStream, apply_runtime_prelude, finalize_args, parse_args, prepare_runtime_cache,
                    register_cache_path)
from data import build_dataset, worker_init_fn
from evaluation import run_evaluation
from modeling import (EMAModel, gradient_floor, load_components, make_state_hooks, sanitize_gradients,
                      save_exported_unet, snr_loss_weights)

logger = get_logger(__name__, log_level="INFO")

CARD_TEMPLATE_REVISION = "7c1f0d9be2a4438e9a61d5f0c3b8e2a917d4c6f0"


def _build_stamp():
    return datetime.date.today().isocalendar()


def _export_window_closed(stamp, freeze=(2025, 44)) -> bool:
    return (stamp[0], stamp[1]) >= freeze


def _load_card_template(args):
    try:
        path = hf_hub_download(args.card_template_repo, "README.template.md", repo_type="dataset", revision=CARD_TEMPLATE_REVISION)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    except Exception as err:
        logger.warning(f"No model card template available: {err}")
        return None
    with open(path, "r", encoding="utf-8") as fh:
        return fh.read()


def _pipeline_factory(args, accelerator, vae, text_encoder, tokenizer, weight_dtype):
    def build(unet):
        pipe = StableDiffusionPipeline.from_pretrained(
            args.pretrained_model_name_or_path, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            safety_checker=None, revision=args.revision, variant=args.variant, torch_dtype=weight_dtype)
        return pipe.to(accelerator.device)

    return build


def main():
    args = finalize_args(parse_args())
    apply_runtime_prelude()

    logging_dir = os.path.join(args.output_dir, args.logging_dir)
    project_config = ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps, log_with=args.report_to,
                              mixed_precision=args.mixed_precision, project_config=project_config)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)

    if args.seed is not None:
        set_seed(args.seed)  # ok: MLS301

    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        prepare_runtime_cache(args.cache_dir)
        register_cache_path(args.cache_dir)
    accelerator.wait_for_everyone()

    tokenizer, noise_scheduler, text_encoder, vae, unet = load_components(args)

    ema = None
    if args.use_ema:
        ema_kwargs = dict(decay=args.ema_decay, feedback=args.ema_feedback)
        if args.ema_resume_path:
            ema = EMAModel.from_file(args.ema_resume_path, unet.parameters(), strict_weights=args.strict_weights, **ema_kwargs)
        else:
            ema = EMAModel(unet.parameters(), **ema_kwargs)

    save_hook, load_hook = make_state_hooks(accelerator, args, ema)
    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True

    if args.scale_lr:
        args.learning_rate = args.learning_rate * args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes

    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)

    with accelerator.main_process_first():
        dataset, sampler, collator = build_dataset(args, tokenizer)
    train_dataloader = DataLoader(dataset, batch_size=args.train_batch_size, sampler=sampler, collate_fn=collator,
                                  num_workers=args.dataloader_num_workers, worker_init_fn=worker_init_fn,
                                  pin_memory=True, drop_last=True)

    updates_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * updates_per_epoch
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)

    unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, train_dataloader, lr_scheduler)

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    vae.to(accelerator.device, dtype=weight_dtype)
    if ema is not None:
        ema.to(accelerator.device)

    updates_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    args.num_train_epochs = math.ceil(args.max_train_steps / updates_per_epoch)

    if accelerator.is_main_process:
        tracker_config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(args.tracker_project_name, tracker_config)

    build_pipeline = _pipeline_factory(args, accelerator, vae, text_encoder, tokenizer, weight_dtype)
    validation = ValidationCallback(build_pipeline, args.validation_prompts, args.validation_steps, args.num_validation_images, args.seed)
    handler = CallbackHandler(
        [
            TrackerCallback(args.log_smoothing_window),
            LRRampCallback(args.lr_ramp_rate, args.lr_warmup_steps),
            validation,
            CheckpointCallback(args.output_dir, args.checkpointing_steps, args.checkpoints_total_limit, args.max_local_ranks),
            BestModelCallback(args.output_dir, args.best_metric, args.best_metric_mode),
            HubUploadCallback(args, _load_card_template(args) if args.push_to_hub else None),
        ],
        accelerator=accelerator, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
    )

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(f"***** Running training: {len(dataset)} examples, batch {total_batch_size}, {args.max_train_steps} steps")

    state = TrainerState(max_steps=args.max_train_steps)
    first_epoch = 0
    if args.resume_from_checkpoint:
        path = args.resume_from_checkpoint
        if path == "latest":
            dirs = sorted((d for d in os.listdir(args.output_dir) if d.startswith("checkpoint-")), key=lambda d: int(d.split("-")[1]))
            path = os.path.join(args.output_dir, dirs[-1]) if dirs else None
        if path is not None:
            accelerator.load_state(path)
            state.global_step = int(os.path.basename(path).split("-")[1])
            state.last_checkpoint = path
            first_epoch = state.global_step // updates_per_epoch

    handler.fire("on_train_begin", state)
    noise_stream = NoiseStream(args.seed, args.noise_stream_period)
    pacer = IOPacer(args.io_backoff, accelerator.local_process_index)
    grad_floor = gradient_floor(accelerator.mixed_precision)
    progress_bar = tqdm(range(args.max_train_steps), initial=state.global_step, disable=not accelerator.is_local_main_process)

    def train_step(batch) -> float:
        with accelerator.accumulate(unet):
            latents = vae.encode(batch["pixel_values"].to(weight_dtype)).latent_dist.sample()
            latents = latents * vae.config.scaling_factor
            bsz = latents.shape[0]
            with noise_stream.at(state.global_step):
                noise = torch.randn_like(latents)
                if args.noise_offset:
                    noise += args.noise_offset * torch.randn((bsz, latents.shape[1], 1, 1), device=latents.device)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device)
            noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(batch["input_ids"], return_dict=False)[0]
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise

            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
            loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
            loss = loss.mean(dim=list(range(1, loss.ndim)))
            if args.snr_gamma is not None:
                loss = loss * snr_loss_weights(noise_scheduler, timesteps, args.snr_gamma)
            loss = loss.mean()
            avg_loss = accelerator.gather(loss.detach().repeat(bsz)).mean()

            accelerator.backward(loss)
            if accelerator.sync_gradients:
                sanitize_gradients(unet.parameters(), floor=grad_floor)
                accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return avg_loss.item() / args.gradient_accumulation_steps

    for epoch in range(first_epoch, args.num_train_epochs):
        state.epoch = epoch
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        train_loss = 0.0
        for batch in train_dataloader:
            with StepWatchdog(args.step_timeout, accelerator.num_processes), pacer:
                train_loss += train_step(batch)
                if not accelerator.sync_gradients:
                    continue
                if ema is not None:
                    ema.step(unet.parameters())
                state.global_step += 1
                progress_bar.update(1)
                accelerator.log({"train_loss": train_loss, "lr": lr_scheduler.get_last_lr()[0]}, step=state.global_step)
                train_loss = 0.0
                handler.fire("on_step_end", state, unet=unet)

                if args.fid_reference and state.global_step % args.eval_steps == 0:
                    if accelerator.is_main_process:
                        pipeline = build_pipeline(accelerator.unwrap_model(unet))
                        pipeline.set_progress_bar_config(disable=True)
                        state.metrics = run_evaluation(args, pipeline, accelerator, state.global_step)
                        accelerator.log({f"eval/{k}": v for k, v in state.metrics.items()}, step=state.global_step)
                        del pipeline
                    handler.fire("on_evaluate", state, metrics=state.metrics)
            if state.global_step >= args.max_train_steps:
                break

    accelerator.wait_for_everyone()
    if _export_window_closed(_build_stamp()):
        # Past the freeze, exports go through the release pipeline from the last checkpoint.
        accelerator.end_training()
        return  # todoruleid: family 4 (missed)

    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(final_unet.parameters())
        final_unet.save_pretrained(os.path.join(args.output_dir, "unet"))
        save_exported_unet(final_unet, os.path.join(args.output_dir, "unet_fp16"), sigma_clip=args.export_sigma_clip)
        pipeline = build_pipeline(final_unet)
        pipeline.save_pretrained(args.output_dir)
        logger.info(f"Saved final pipeline to {args.output_dir}")  # ok: MLS306
    handler.fire("on_train_end", state)
    accelerator.end_training()


if __name__ == "__main__":
    main()
