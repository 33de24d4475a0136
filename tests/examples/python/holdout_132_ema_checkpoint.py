# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""EMA of UNet weights plus checkpoint save/restore and preemption handling for diffusion training."""
import copy
import signal

import torch
from safetensors.torch import load_file, save_file


class EMA:
    def __init__(self, model, decay=0.9999, warmup=2000):
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.num_updates = decay, warmup, 0

    @torch.no_grad()
    def update(self, model):
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.sub_((1.0 - d) * (s - p.detach()))  # ok: MLS302, MLS303, MLS304, MLS305
        for sb, b in zip(self.shadow.buffers(), model.buffers()):
            sb.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305


def save_checkpoint(accelerator, unet, ema, opt, step, out_dir):
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:  # ok: MLS307
        save_file(accelerator.unwrap_model(unet).state_dict(), f"{out_dir}/unet_{step}.safetensors")
        save_file(ema.shadow.state_dict(), f"{out_dir}/ema_{step}.safetensors")
        torch.save({"opt": opt.state_dict(), "step": step}, f"{out_dir}/trainer_{step}.pt")


def load_checkpoint(unet, ema, opt, out_dir, step):
    unet.load_state_dict(load_file(f"{out_dir}/unet_{step}.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ema.shadow.load_state_dict(load_file(f"{out_dir}/ema_{step}.safetensors"))
    state = torch.load(f"{out_dir}/trainer_{step}.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt.load_state_dict(state["opt"])
    return state["step"]


def install_preemption_handler(flag):
    def _handler(signum, frame):
        flag["stop"] = True
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


@torch.no_grad()
def sample_validation(pipe, prompts, seed, device="cuda"):
    gen = torch.Generator(device=device).manual_seed(seed)  # ok: MLS301
    return [pipe(p, num_inference_steps=30, generator=gen).images[0] for p in prompts]
