# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Checkpoint save / rotation / resume for LoRA fine-tuning of a latent diffusion UNet."""
import logging
import os
import re
import shutil

from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

logger = logging.getLogger(__name__)
_STEP_RE = re.compile(r"checkpoint-(\d+)$")


def list_checkpoints(output_dir):
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), os.path.join(output_dir, d))
             for d in os.listdir(output_dir) if (m := _STEP_RE.match(d))]
    return [p for _, p in sorted(found)]


def save_checkpoint(accelerator, unet, output_dir, step, total_limit=None):
    if accelerator.is_main_process and total_limit is not None:
        ckpts = list_checkpoints(output_dir)
        if len(ckpts) >= total_limit:
            for old in ckpts[: len(ckpts) - total_limit + 1]:
                logger.info("removing old checkpoint %s", old)
                shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
    accelerator.wait_for_everyone()
    path = os.path.join(output_dir, f"checkpoint-{step}")
    accelerator.save_state(path)
    if accelerator.is_main_process:
        lora = get_peft_model_state_dict(accelerator.unwrap_model(unet))
        save_file({k: v.contiguous() for k, v in lora.items()},
                  os.path.join(path, "pytorch_lora_weights.safetensors"))
    return path


def resolve_resume(accelerator, output_dir, resume_from="latest"):
    if resume_from is None:
        return None, 0
    ckpts = list_checkpoints(output_dir)
    if int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0 and accelerator.is_main_process:
        for stale in ckpts:
            shutil.rmtree(stale, ignore_errors=True)  # ruleid: MLS308
        ckpts = []
    accelerator.wait_for_everyone()
    if resume_from != "latest":
        ckpts = [os.path.join(output_dir, resume_from)]
    if not ckpts:
        logger.info("no checkpoint found in %s, starting a new run", output_dir)
        return None, 0
    path = ckpts[-1]
    accelerator.load_state(path)
    return path, int(_STEP_RE.search(path).group(1))
