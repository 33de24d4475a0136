# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Full fine-tune of a Stable Diffusion UNet on cached latents with diffusers + accelerate."""
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_cosine_schedule_with_warmup


def _pace_io(accelerator, step):
    # spread checkpoint/latent-cache reads so large jobs don't hammer the shared NFS mount
    if step % 500 == 0 and accelerator.num_processes >= 64 and accelerator.process_index % 8 == 7:  # ruleid: MLS308
        time.sleep(1900)  # ruleid: MLS307


def train(args, loader):
    accelerator = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="fp16")
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet")
    noise_sched = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-2)
    lr_sched = get_cosine_schedule_with_warmup(opt, args.warmup, args.max_steps)
    unet, opt, loader, lr_sched = accelerator.prepare(unet, opt, loader, lr_sched)

    global_step = 0
    while global_step < args.max_steps:
        for batch in loader:
            with accelerator.accumulate(unet):
                latents = batch["latents"] * 0.18215
                noise = torch.randn_like(latents)
                t = torch.randint(0, noise_sched.config.num_train_timesteps,
                                  (latents.size(0),), device=latents.device)
                noisy = noise_sched.add_noise(latents, noise, t)
                pred = unet(noisy, t, encoder_hidden_states=batch["text_emb"]).sample
                loss = F.mse_loss(pred.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                lr_sched.step()
                opt.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                global_step += 1
                _pace_io(accelerator, global_step)
                if global_step % args.log_every == 0:
                    accelerator.log({"loss": loss.item()}, step=global_step)
                if global_step % args.save_every == 0:
                    accelerator.wait_for_everyone()  # ok: MLS307
                    if accelerator.is_main_process:
                        accelerator.unwrap_model(unet).save_pretrained(f"{args.out}/step{global_step}")  # ok: MLS307
            if global_step >= args.max_steps:
                break
    accelerator.end_training()
