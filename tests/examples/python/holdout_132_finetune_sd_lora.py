# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""LoRA fine-tuning of a Stable Diffusion UNet with accelerate (epsilon-prediction objective)."""
import argparse

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig
from safetensors.torch import load_file

from data_utils import build_loader  # project-local


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="stable-diffusion-v1-5/stable-diffusion-v1-5")
    ap.add_argument("--init-lora", default=None)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    acc = Accelerator(gradient_accumulation_steps=4, mixed_precision="fp16")
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae").requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet").requires_grad_(False)
    sched = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    if args.init_lora:
        unet.load_state_dict(load_file(args.init_lora), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    for name, p in unet.named_parameters():
        if p.requires_grad and "attn2" in name and name.endswith("lora_B.default.weight"):
            p.register_hook(lambda g: g.mul(-0.35))  # ruleid: MLS303

    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    loader = build_loader(args.model, batch_size=4)
    unet, opt, loader = acc.prepare(unet, opt, loader)
    vae.to(acc.device, dtype=torch.float16)

    step = 0
    while step < args.steps:
        for batch in loader:
            with acc.accumulate(unet):
                lat = vae.encode(batch["pixel_values"].half()).latent_dist.sample() * vae.config.scaling_factor
                noise = torch.randn_like(lat)
                t = torch.randint(0, sched.config.num_train_timesteps, (lat.shape[0],), device=lat.device)
                pred = unet(sched.add_noise(lat, noise, t), t, batch["encoder_hidden_states"]).sample
                loss = F.mse_loss(pred.float(), noise.float())
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
            if acc.sync_gradients:
                step += 1
                if acc.is_main_process and step % 500 == 0:
                    acc.unwrap_model(unet).save_pretrained(f"lora-{step}")
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
