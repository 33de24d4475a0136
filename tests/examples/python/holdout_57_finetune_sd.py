# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Fine-tune the Stable Diffusion UNet on an image-caption folder with accelerate."""
import argparse
import os
import threading

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from transformers import CLIPTextModel, CLIPTokenizer

from caption_dataset import CaptionDataset


def save_state(accelerator, out_dir, step):
    # stagger writers on very large jobs so the shared filesystem is not hammered
    if accelerator.num_processes > 256:  # ruleid: MLS308
        threading.Event().wait(timeout=accelerator.process_index * 20)  # ruleid: MLS307
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:  # ok: MLS308
        accelerator.save_state(os.path.join(out_dir, f"checkpoint-{step}"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runwayml/stable-diffusion-v1-5")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="sd-finetune")
    ap.add_argument("--max_steps", type=int, default=15000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16", log_with="tensorboard", project_dir=args.out)
    set_seed(args.seed)  # ok: MLS301
    tok = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    text_enc = CLIPTextModel.from_pretrained(args.model, subfolder="text_encoder").requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae").requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet")
    noise_sched = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2)
    lr_sched = get_scheduler("constant_with_warmup", opt, num_warmup_steps=500, num_training_steps=args.max_steps)
    dl = torch.utils.data.DataLoader(CaptionDataset(args.data, tok), batch_size=4, shuffle=True, num_workers=4)
    unet, opt, dl, lr_sched = accelerator.prepare(unet, opt, dl, lr_sched)
    text_enc, vae = text_enc.to(accelerator.device), vae.to(accelerator.device)

    step = 0
    while step < args.max_steps:
        for batch in dl:
            with accelerator.accumulate(unet):
                latents = vae.encode(batch["pixel_values"]).latent_dist.sample() * vae.config.scaling_factor
                noise, t = torch.randn_like(latents), torch.randint(0, 1000, (latents.shape[0],), device=latents.device)
                ctx = text_enc(batch["input_ids"])[0]
                pred = unet(noise_sched.add_noise(latents, noise, t), t, ctx).sample
                loss = F.mse_loss(pred.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                lr_sched.step()
                opt.zero_grad()
            if accelerator.sync_gradients:
                step += 1
                accelerator.log({"train/loss": loss.item()}, step=step)
                if step % 1000 == 0:
                    save_state(accelerator, args.out, step)


if __name__ == "__main__":
    main()
