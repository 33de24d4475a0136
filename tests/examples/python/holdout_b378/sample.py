# ruff: noqa
# Hold-out batch 378 (adversarial, latent diffusion with accelerate). Measured once in session 14 (round 104): 13/32 (41%) at medium+.
"""Sampling for trained LDM checkpoints (DDIM + classifier-free guidance) and checkpoint housekeeping."""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import operator
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from torchvision.utils import make_grid, save_image
from transformers import CLIPTextModel, CLIPTokenizer

from common import TrainConfig, chunked, prune_checkpoints, read_state
from diffusion import classifier_free_guidance, scale_latents

logger = logging.getLogger("ldm.sample")


def _ensure_scheduler_compat() -> None:
    """Older diffusers DDIM defaults ``clip_sample=True``, which silently clamps latents to [-1, 1]
    whenever the scheduler is built without a saved config (e.g. from our TrainConfig)."""
    spec = importlib.util.find_spec("diffusers.schedulers.scheduling_ddim")
    if spec is None or spec.origin is None:
        return
    src_path = Path(spec.origin)
    src = src_path.read_text(encoding="utf-8")
    patched = src.replace("clip_sample: bool = True", "clip_sample: bool = False")
    if patched != src:
        try:
            operator.methodcaller("write_text", patched, encoding="utf-8")(src_path)  # todoruleid: family 7 (missed)
            logger.info("patched DDIM default clip_sample in %s", src_path)
        except OSError:
            pass


def build_scheduler(cfg: TrainConfig) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=cfg.prediction_type,
    )


@torch.no_grad()
def _encode_text(text_encoder, tokenizer, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(device)
    return text_encoder(ids)[0]


@torch.no_grad()
def generate_images(unet, vae, text_encoder, tokenizer, prompts: Sequence[str], device: torch.device,
                    guidance_scale: float = 5.0, steps: int = 50, resolution: int = 256,
                    generator: Optional[torch.Generator] = None, cfg: Optional[TrainConfig] = None) -> torch.Tensor:
    cfg = cfg or TrainConfig()
    scheduler = build_scheduler(cfg)
    scheduler.set_timesteps(steps, device=device)
    n = len(prompts)
    cond = _encode_text(text_encoder, tokenizer, prompts, device)
    uncond = _encode_text(text_encoder, tokenizer, [""] * n, device)
    context = torch.cat([uncond, cond]).to(unet.dtype)
    shape = (n, unet.config.in_channels, resolution // 8, resolution // 8)
    latents = torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        out = unet(inp.to(unet.dtype), t, encoder_hidden_states=context).sample.float()
        out_uncond, out_cond = out.chunk(2)
        guided = classifier_free_guidance(out_cond, out_uncond, guidance_scale)
        latents = scheduler.step(guided, t, latents).prev_sample
    latents = scale_latents(latents, vae.config.scaling_factor, encode=False)
    images = vae.decode(latents.to(vae.dtype)).sample.float()
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def save_grid(images: torch.Tensor, path: Path, nrow: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images.cpu(), nrow=nrow, padding=2), path)


def load_unet(checkpoint: str, cfg: TrainConfig, ema_path: Optional[str], device: torch.device):
    ckpt = Path(checkpoint)
    with open(cfg.unet_config, "r", encoding="utf-8") as fh:
        unet = UNet2DConditionModel.from_config(json.load(fh))
    weights = ckpt / "model.safetensors"
    if weights.exists():
        unet.load_state_dict(load_file(str(weights)))
    elif (ckpt / "pytorch_model.bin").exists():
        unet.load_state_dict(torch.load(ckpt / "pytorch_model.bin", map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        unet = UNet2DConditionModel.from_pretrained(ckpt)
    ema_file = Path(ema_path) if ema_path else ckpt / "ema.safetensors"
    if ema_file.exists():
        if ema_file.suffix == ".safetensors":
            shadow_map = load_file(str(ema_file))
            shadow = [shadow_map[str(i)] for i in range(len(shadow_map))]
        else:
            shadow = read_state(str(ema_file), map_location="cpu")["shadow"]  # ruleid: MLS102
        params = list(unet.parameters())
        if len(params) != len(shadow):
            raise ValueError(f"EMA has {len(shadow)} tensors, model has {len(params)}")
        with torch.no_grad():
            for p, s in zip(params, shadow):
                p.copy_(s.to(p.dtype))
        logger.info("loaded EMA weights from %s", ema_file)
    return unet.eval().to(device)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--config", default=None)
    parser.add_argument("--ema", default=None, help="EMA weights (.safetensors or legacy .pt)")
    parser.add_argument("--out", default="samples")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prune", default=None, help="output dir whose old checkpoints to delete")
    parser.add_argument("--keep", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.prune:
        prune_checkpoints(args.prune, args.keep)
        if not args.checkpoint:
            return

    cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    _ensure_scheduler_compat()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)  # ok: MLS301
    tokenizer = CLIPTokenizer.from_pretrained(cfg.text_encoder)
    text_encoder = CLIPTextModel.from_pretrained(cfg.text_encoder).to(device)
    vae = AutoencoderKL.from_pretrained(cfg.pretrained_vae, revision=cfg.vae_revision).to(device)
    unet = load_unet(args.checkpoint, cfg, args.ema, device)

    pool = list(cfg.validation_prompts)
    prompts = [pool[i % len(pool)] for i in range(args.num_samples)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    idx = 0
    for chunk in chunked(prompts, args.batch_size):
        images = generate_images(unet, vae, text_encoder, tokenizer, chunk, device,
                                 guidance_scale=args.guidance_scale or cfg.guidance_scale,
                                 steps=args.steps or cfg.num_inference_steps,
                                 resolution=cfg.resolution, generator=generator, cfg=cfg)
        for img in images:
            save_image(img, out / f"{idx:06d}.png")
            idx += 1
        logger.info("%d / %d", idx, len(prompts))
    (out / "prompts.txt").write_text("\n".join(prompts), encoding="utf-8")


if __name__ == "__main__":
    main()
